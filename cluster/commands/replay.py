"""`clustersim replay` (also `python -m cluster.replay`): offline replay with the reference CLI's flags.

Host module: parses flags, loads the workload, runs `ReplaySimulation`, shows a
progress bar on stderr for runs longer than a second, prints the AIPerf-style
table and writes the report JSON / per-request JSONL. The report JSON is
byte-identical for the same inputs; wall-clock figures are printed, and written
into the report only with --record-wall-time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from actors.engine.config import ConfigError, EngineConfig, describe_validation_error, parse_engine_args
from actors.engine.records import RequestRecord, TerminalStatus
from cluster.report.outputs import write_per_request_jsonl, write_report_json
from cluster.report.summary import build_summary
from cluster.report.table import format_table, simulated_tokens_per_wall_s
from cluster.runtime.replay_sim import ReplaySimulation, SimulationResult
from cluster.workload.model import Workload, WorkloadError
from cluster.workload.mooncake import load_mooncake
from cluster.workload.synthetic import SyntheticSpec, synthesize
from router.config import KvRouterConfig
from router.router import KvRouter

SAMPLE_TRACE = "mooncake_sample.jsonl"


class ReplayError(Exception):
    """A problem with the user's input; printed as one line, exit status 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace_file", nargs="?", help="Mooncake-format JSONL trace (default: the embedded sample)")
    w = parser.add_argument_group("synthetic workload (instead of a trace)")
    w.add_argument("--input-tokens", type=int)
    w.add_argument("--output-tokens", type=int)
    w.add_argument("--request-count", type=int, help="sessions; requests when --turns-per-session is 1")
    w.add_argument("--request-rate", type=float, help="Poisson arrivals per second")
    w.add_argument("--arrival-interval-ms", type=float, help="constant gap between sessions (default 1.0; 0 = burst)")
    w.add_argument("--turns-per-session", type=int, default=1)
    w.add_argument("--shared-prefix-ratio", type=float, default=0.0)
    w.add_argument("--num-prefix-groups", type=int, default=1)
    w.add_argument("--inter-turn-delay-ms", type=float, default=0.0)
    w.add_argument("--seed", type=int, default=42, help="synthetic workload seed (the reference's arrival_seed)")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--replay-mode", choices=("offline", "online"), default="offline")
    parser.add_argument("--router-mode", choices=("round_robin", "kv_router"), default="round_robin")
    parser.add_argument("--router-config", help="KV router settings, JSON object (kv_router mode)")
    parser.add_argument("--replay-concurrency", type=int, help="closed loop: at most N requests in flight")
    parser.add_argument("--arrival-speedup-ratio", type=float, default=1.0)
    parser.add_argument("--trace-block-size", type=int, default=512, help="tokens per hash_id in the trace")
    parser.add_argument("--extra-engine-args", help="engine settings: a JSON object or a path to a JSON file")
    parser.add_argument("--report-json", type=Path, help="write the full report JSON here")
    parser.add_argument("--per-request-jsonl", type=Path, help="write one JSON line per request here")
    parser.add_argument("--sla-ttft-ms", type=float)
    parser.add_argument("--sla-tpot-ms", type=float)
    parser.add_argument("--sla-e2e-ms", type=float)
    parser.add_argument("--record-wall-time", action="store_true",
                        help="put wall_time_ms and simulator-speed figures in the report JSON (not byte-reproducible)")
    parser.add_argument("--no-macro-step", action="store_true", help="execute every decode pass one by one (slow)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _synthetic_given(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.input_tokens, args.output_tokens, args.request_count,
                                        args.request_rate, args.arrival_interval_ms)) or any(
        (args.turns_per_session != 1, args.shared_prefix_ratio != 0.0, args.inter_turn_delay_ms != 0.0))


def load_workload(args: argparse.Namespace, engine: EngineConfig) -> tuple[Workload, str]:
    """The workload the flags ask for, and a one-line description of it."""
    if args.arrival_speedup_ratio <= 0:
        raise ReplayError("--arrival-speedup-ratio must be positive")
    if args.trace_block_size <= 0:
        raise ReplayError("--trace-block-size must be positive")
    if args.trace_file is not None and _synthetic_given(args):
        raise ReplayError("give either a trace file or synthetic flags (--input-tokens ...), not both")
    if _synthetic_given(args):
        missing = [f for f, v in (("--input-tokens", args.input_tokens), ("--output-tokens", args.output_tokens),
                                  ("--request-count", args.request_count)) if v is None]
        if missing:
            raise ReplayError(f"synthetic replay requires {', '.join(missing)}")
        fields: dict[str, Any] = {
            "input_tokens": args.input_tokens, "output_tokens": args.output_tokens,
            "request_count": args.request_count, "turns_per_session": args.turns_per_session,
            "shared_prefix_ratio": args.shared_prefix_ratio, "num_prefix_groups": args.num_prefix_groups,
            "inter_turn_delay_ms": args.inter_turn_delay_ms, "seed": args.seed,
            "block_size": engine.block_size_tokens,
        }
        if args.request_rate is not None:
            fields["request_rate"] = args.request_rate
        if args.arrival_interval_ms is not None:
            fields["arrival_interval_ms"] = args.arrival_interval_ms
        try:
            spec = SyntheticSpec.model_validate(fields)
        except ValidationError as exc:
            raise ReplayError(describe_validation_error(exc, "synthetic workload")) from None
        wl = synthesize(spec)
        if args.arrival_speedup_ratio != 1.0:
            wl = wl.scaled(args.arrival_speedup_ratio)
        return wl, f"synthetic: {wl.num_requests} requests"
    path = args.trace_file
    if path is None:
        path = str(resources.files("cluster").joinpath("data", SAMPLE_TRACE))
        print(f"no trace or synthetic flags given: replaying the embedded Mooncake sample ({SAMPLE_TRACE})",
              file=sys.stderr)
    wl = load_mooncake(path, trace_block_size=args.trace_block_size, arrival_speedup_ratio=args.arrival_speedup_ratio)
    return wl, f"trace: {Path(path).name}, {wl.num_requests} requests"


def check_fits(workload: Workload, engine: EngineConfig) -> None:
    """Refuse, before running, a prompt that can never fit one rank's KV cache."""
    bs = engine.block_size_tokens
    for session in workload.sessions:
        for k, turn in enumerate(session.turns):
            blocks = -(-turn.input_length // bs)
            if blocks > engine.num_gpu_blocks:
                raise ReplayError(
                    f"prompt larger than the KV cache: session {session.session_id} turn {k} has "
                    f"{turn.input_length} input tokens = {blocks} blocks of {bs}, but num_gpu_blocks is "
                    f"{engine.num_gpu_blocks}")


def run_replay(args: argparse.Namespace) -> tuple[dict[str, Any], list[RequestRecord], float]:
    """Run the replay the parsed flags describe: (report dict, per-request records, wall ms)."""
    if args.replay_mode != "offline":
        raise ReplayError("--replay-mode online is not supported; clustersim replays offline on a virtual clock")
    if args.num_workers < 1:
        raise ReplayError("--num-workers must be at least 1")
    if args.replay_concurrency is not None and args.replay_concurrency < 1:
        raise ReplayError("--replay-concurrency must be at least 1")
    engine = parse_engine_args(args.extra_engine_args)
    if engine.worker_type != "aggregated":
        raise ReplayError("aggregated replay needs worker_type 'aggregated' (disaggregated replay is not built yet)")
    kv_router = None
    if args.router_config is not None and args.router_mode != "kv_router":
        raise ReplayError("--router-config applies to --router-mode kv_router only")
    if args.router_mode == "kv_router":
        try:
            router_config = KvRouterConfig.from_json(args.router_config or "{}")
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        if "max_num_batched_tokens" not in router_config.model_fields_set and engine.max_num_batched_tokens:
            # The queue threshold is in units of the workers' token budget.
            router_config = router_config.model_copy(update={"max_num_batched_tokens": engine.max_num_batched_tokens})
        kv_router = KvRouter(router_config, block_size=engine.block_size_tokens, seed=args.seed)
    workload, description = load_workload(args, engine)
    check_fits(workload, engine)

    progress = None if args.no_progress else Progress(workload.num_requests)
    started = time.perf_counter()
    sim = ReplaySimulation(
        workload, engine, args.num_workers, concurrency=args.replay_concurrency, kv_router=kv_router,
        macro_step=not args.no_macro_step, on_request_done=progress.update_one if progress else None,
    )
    result = sim.run()
    wall_ms = (time.perf_counter() - started) * 1000.0
    if progress is not None:
        progress.close()
    return assemble_report(args, engine, result, description, wall_ms), result.records, wall_ms


def assemble_report(args: argparse.Namespace, engine: EngineConfig, result: SimulationResult,
                    description: str, wall_ms: float) -> dict[str, Any]:
    summary = build_summary(
        result.records, result.gaps, num_workers=args.num_workers, gpus_per_worker=engine.tensor_parallel_size,
        committed_prefill_tokens=result.committed_prefill_tokens,
        wall_time_ms=wall_ms if args.record_wall_time else None,
        sla_ttft_ms=args.sla_ttft_ms, sla_tpot_ms=args.sla_tpot_ms, sla_e2e_ms=args.sla_e2e_ms,
    )
    completed = Counter(r.worker_id for r in result.records if r.terminal_status is TerminalStatus.COMPLETED)
    workers = [
        {"worker_id": w.worker_id, "num_passes": w.num_passes, "preemptions_total": w.preemptions_total,
         "committed_prefill_tokens": w.committed_prefill_tokens, "completed_requests": completed[w.worker_id]}
        for w in result.workers
    ]
    return {
        "summary": summary,
        "config": {
            "workload": description, "num_workers": args.num_workers, "router_mode": args.router_mode,
            "replay_concurrency": args.replay_concurrency, "arrival_speedup_ratio": args.arrival_speedup_ratio,
            "trace_block_size": args.trace_block_size, "engine": engine.model_dump(mode="json"),
        },
        "workers": workers,
    }


class Progress:
    """tqdm on stderr, shown only once a run has taken a second."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="req", delay=1.0, file=sys.stderr, dynamic_ncols=True, leave=False)

    def update_one(self, _: RequestRecord) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def main(argv: Sequence[str] | None = None, prog: str = "clustersim replay") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Replay a trace or a synthetic workload offline.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args, prog)


def run_from_args(args: argparse.Namespace, prog: str = "clustersim replay") -> int:
    try:
        report, records, wall_ms = run_replay(args)
    except (ReplayError, ConfigError, WorkloadError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    summary = dict(report["summary"])
    summary["wall_time_ms"] = wall_ms
    print(format_table(summary))
    print(f"Simulated tokens per wall second: {simulated_tokens_per_wall_s(summary, wall_ms):,.0f}")
    if args.report_json is not None:
        args.report_json.parent.mkdir(parents=True, exist_ok=True)
        write_report_json(report, args.report_json)
        print(f"Report written to {args.report_json}")
    if args.per_request_jsonl is not None:
        args.per_request_jsonl.parent.mkdir(parents=True, exist_ok=True)
        write_per_request_jsonl(records, args.per_request_jsonl)
        print(f"Per-request records written to {args.per_request_jsonl}")
    return 0
