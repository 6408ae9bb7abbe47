"""`clustersim replay` (also `python -m cluster.replay`): offline replay with the reference CLI's flags.

The flags build a scenario (one deployment of `--num-workers` workers on abstract GPUs, a
zero-latency event plane, the router mode, the workload) and the replay runs it through the same
world builder, runtime and report builder as `clustersim run`; `--dump-scenario FILE` writes
that scenario, so `clustersim run FILE` runs the same thing. This module only parses flags and
prints: a progress bar on stderr for runs longer than a second, the AIPerf-style table, the
report JSON (the reference's layout; byte-identical for the same inputs, wall-clock figures only
with --record-wall-time) and the per-request JSONL. The reference CLI's further flags (trace format,
max sim time, ITL SLA, and those refused as not built yet) are `cluster.commands.replay_compat`'s.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from actors.engine.config import EngineConfig
    from cluster.commands.guard import Interrupt
    from actors.engine.records import RequestRecord
    from cluster.scenario.spec import Scenario


from cluster.commands.replay_compat import ReplayError, add_reference_arguments

__all__ = ["ReplayError", "add_arguments", "main", "run_from_args", "run_replay", "scenario_from_flags"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace_files", nargs="*", metavar="trace_file",
                        help="Mooncake-format JSONL trace (default: the embedded sample)")
    w = parser.add_argument_group("synthetic workload (instead of a trace)")
    w.add_argument("--input-tokens", type=int)
    w.add_argument("--output-tokens", type=int)
    w.add_argument("--request-count", type=int,
                   help="sessions (each has --turns-per-session requests); requests when that is 1")
    w.add_argument("--request-rate", type=float, help="Poisson session arrivals per second")
    w.add_argument("--arrival-interval-ms", type=float, help="constant gap between sessions (default 1.0; 0 = burst)")
    w.add_argument("--turns-per-session", type=int, default=1)
    w.add_argument("--shared-prefix-ratio", type=float, default=0.0)
    w.add_argument("--num-prefix-groups", type=int, default=0,
                   help="prefix groups of --shared-prefix-ratio (0, the reference's default, shares nothing)")
    w.add_argument("--inter-turn-delay-ms", type=float, default=0.0)
    w.add_argument("--seed", type=int, default=42,
                   help="seed of the run (the router's tie-breaks)")
    w.add_argument("--arrival-seed", type=int, default=42,
                   help="seed of the synthetic arrival stream (the reference's arrival_seed)")
    parser.add_argument("--num-workers", type=int, help="workers (default 1; aggregated replay)")
    parser.add_argument("--replay-mode", choices=("offline", "online"), default="offline")
    parser.add_argument("--router-mode", choices=("round_robin", "kv_router"), default="round_robin")
    parser.add_argument("--router-config", help="KV router settings, JSON object (kv_router mode)")
    parser.add_argument("--replay-concurrency", type=int,
                        help="closed loop: N session slots, each playing one session at a time")
    parser.add_argument("--arrival-speedup-ratio", type=float, default=1.0)
    parser.add_argument("--migration-limit", type=int, default=0,
                        help="times a request may move to another worker when its worker goes away (default 0: never)")
    parser.add_argument("--trace-block-size", type=int, default=512, help="tokens per hash_id in the trace")
    parser.add_argument("--extra-engine-args", help="engine settings: a JSON object or a path to a JSON file")
    parser.add_argument("--report-json", type=Path, help="write the full report JSON here")
    parser.add_argument("--per-request-jsonl", "--report-jsonl", type=Path, dest="per_request_jsonl",
                        help="write one JSON line per request here")
    parser.add_argument("--dump-scenario", type=Path, metavar="FILE",
                        help="also write the scenario these flags describe (run it with `clustersim run FILE`)")
    parser.add_argument("--sla-ttft-ms", type=float)
    parser.add_argument("--sla-tpot-ms", type=float, help="the same bound as --sla-itl-ms")
    parser.add_argument("--sla-e2e-ms", type=float)
    parser.add_argument("--record-wall-time", action="store_true",
                        help="put wall_time_ms and simulator-speed figures in the report JSON (not byte-reproducible)")
    parser.add_argument("--no-macro-step", action="store_true", help="execute every decode pass one by one (slow)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_reference_arguments(parser)


def _synthetic_given(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.input_tokens, args.output_tokens, args.request_count,
                                        args.request_rate, args.arrival_interval_ms)) or any(
        (args.turns_per_session != 1, args.shared_prefix_ratio != 0.0, args.inter_turn_delay_ms != 0.0))


def _workload_fields(args: argparse.Namespace, engine: EngineConfig) -> dict[str, Any]:
    """The scenario's `workload:` for the flags (the synthetic spec is checked here, flag by flag)."""
    from pydantic import ValidationError

    from actors.engine.config import describe_validation_error
    from cluster.workload.synthetic import SyntheticSpec

    if not (math.isfinite(args.arrival_speedup_ratio) and args.arrival_speedup_ratio > 0):
        raise ReplayError(f"--arrival-speedup-ratio must be a positive number, got {args.arrival_speedup_ratio}")
    if args.trace_block_size <= 0:
        raise ReplayError("--trace-block-size must be positive")
    if args.trace_files and _synthetic_given(args):
        raise ReplayError("give either a trace file or synthetic flags (--input-tokens ...), not both")
    wl: dict[str, Any] = {"trace_block_size": args.trace_block_size, "arrival_speedup_ratio": args.arrival_speedup_ratio,
                          "concurrency": args.replay_concurrency}
    if not _synthetic_given(args):
        if args.trace_files:
            wl["trace"] = str(Path(args.trace_files[0]).resolve())
        return wl
    missing = [f for f, v in (("--input-tokens", args.input_tokens), ("--output-tokens", args.output_tokens),
                              ("--request-count", args.request_count)) if v is None]
    if missing:
        raise ReplayError(f"synthetic replay requires {', '.join(missing)}")
    fields: dict[str, Any] = {
        "input_tokens": args.input_tokens, "output_tokens": args.output_tokens,
        "request_count": args.request_count, "turns_per_session": args.turns_per_session,
        "shared_prefix_ratio": args.shared_prefix_ratio, "num_prefix_groups": args.num_prefix_groups,
        "inter_turn_delay_ms": args.inter_turn_delay_ms, "arrival_seed": args.arrival_seed,
        "block_size": engine.block_size_tokens,
    }
    if args.request_rate is not None:
        fields["request_rate"] = args.request_rate
    if args.arrival_interval_ms is not None:
        fields["arrival_interval_ms"] = args.arrival_interval_ms
    if args.shared_prefix_ratio > 0.0 and args.num_prefix_groups == 0:
        print(f"clustersim replay: warning: --shared-prefix-ratio {args.shared_prefix_ratio:g} shares nothing with "
              "--num-prefix-groups 0 (the reference's default); give --num-prefix-groups N", file=sys.stderr)
    try:
        SyntheticSpec.model_validate(fields)
    except ValidationError as exc:
        raise ReplayError(describe_validation_error(exc, "synthetic workload")) from None
    wl["synthetic"] = fields
    return wl


def scenario_from_flags(args: argparse.Namespace) -> Scenario:
    """The scenario the replay flags describe: one deployment on abstract GPUs (see the module docstring)."""
    from pydantic import ValidationError

    from actors.engine.config import describe_validation_error, parse_engine_args
    from cluster.commands.replay_compat import check_reference_flags
    from cluster.scenario.spec import replay_scenario
    from router.config import KvRouterConfig

    if args.replay_mode != "offline":
        raise ReplayError("--replay-mode online is not supported; clustersim replays offline on a virtual clock")
    if args.num_workers is not None and args.num_workers < 1:
        raise ReplayError("--num-workers must be at least 1")
    if args.migration_limit < 0:
        raise ReplayError("--migration-limit must be at least 0")
    if args.replay_concurrency is not None and args.replay_concurrency < 1:
        raise ReplayError("--replay-concurrency must be at least 1")
    check_reference_flags(args, synthetic=_synthetic_given(args))
    for flag, value in (("--sla-ttft-ms", args.sla_ttft_ms), ("--sla-tpot-ms", args.sla_tpot_ms),
                        ("--sla-e2e-ms", args.sla_e2e_ms),
                        ("--sla-itl-ms", getattr(args, "sla_itl_ms", None))):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ReplayError(f"{flag} must be a positive number of milliseconds, got {value}")
    disagg = _disagg_engines(args)
    engine = parse_engine_args(args.extra_engine_args) if disagg is None else disagg[0]
    if disagg is None and engine.worker_type != "aggregated":
        raise ReplayError("aggregated replay needs worker_type 'aggregated' (for prefill/decode workers give "
                          "--prefill-engine-args and --decode-engine-args)")
    if args.router_config is not None and args.router_mode != "kv_router":
        raise ReplayError("--router-config applies to --router-mode kv_router only")
    router: dict[str, Any] = {"mode": "round_robin"}
    if args.router_mode == "kv_router":
        try:
            KvRouterConfig.from_json(args.router_config or "{}")
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        import json

        router = {**json.loads(args.router_config or "{}"), "mode": "kv"}
    try:
        return replay_scenario(engine, args.num_workers or 1, router=router, workload=_workload_fields(args, engine),
                               seed=args.seed, outputs={"dir": "out/replay"}, migration_limit=args.migration_limit,
                               disagg=disagg, planner=_planner_config(getattr(args, "planner_config", None)))
    except ValidationError as exc:
        raise ReplayError(describe_validation_error(exc, "replay")) from None


def _disagg_engines(args: argparse.Namespace) -> tuple[EngineConfig, int, EngineConfig, int] | None:
    """(prefill engine, prefill workers, decode engine, decode workers) for a disaggregated replay, or None.
    An engine JSON without `worker_type` takes its pool's; a contradicting one is refused."""
    from actors.engine.config import parse_engine_args
    from cluster.commands.replay_compat import disaggregated

    if not disaggregated(args):
        return None
    engines = []
    for role in ("prefill", "decode"):
        flag = f"--{role}-engine-args"
        cfg = parse_engine_args(getattr(args, f"{role}_engine_args"), flag)
        if "worker_type" not in cfg.model_fields_set:
            cfg = type(cfg).model_validate({**cfg.model_dump(exclude_unset=True), "worker_type": role})
        elif cfg.worker_type != role:
            raise ReplayError(f"{flag}: worker_type {cfg.worker_type!r}, expected {role!r}")
        engines.append(cfg)
    return (engines[0], args.num_prefill_workers or 1, engines[1], args.num_decode_workers or 1)


def _planner_config(text: str | None) -> dict[str, Any] | None:
    """`--planner-config`: JSON text, or the path of a JSON file (one line when neither)."""
    import json
    from pathlib import Path

    if text is None:
        return None
    source = text
    if not text.lstrip().startswith("{"):
        try:
            source = Path(text).read_text()
        except OSError as exc:
            raise ReplayError(f"--planner-config: cannot read {text}: {exc.strerror}") from None
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise ReplayError(f"--planner-config: not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(value, dict):
        raise ReplayError("--planner-config: a JSON object is needed")
    return value


def run_replay(args: argparse.Namespace, interrupt: Interrupt | None = None
               ) -> tuple[dict[str, Any], list[RequestRecord], float]:
    """Run the replay the parsed flags describe: (report dict, per-request records, wall ms).
    With `interrupt`, Ctrl-C stops the run early and the report is marked `"partial": true`."""
    from cluster.commands.guard import check_memory, check_outputs, ranks_need, synthetic_need
    from cluster.commands.replay_compat import sla_itl_ms
    from cluster.report.build import ReportOptions, build_report
    from cluster.runtime.gc_policy import fewer_collections
    from cluster.runtime.local import run_local
    from cluster.scenario.load import LoadedScenario, dump_scenario
    from cluster.scenario.world import build_world

    with fewer_collections():  # loading, the run and the report: the collector traverses less
        scenario = scenario_from_flags(args)
        try:
            needs = [ranks_need("--num-workers", sum(d.replicas * d.dp_size for d in scenario.deployments))]
            if scenario.workload.synthetic is not None:
                needs.append(synthetic_need("--request-count", "--input-tokens", scenario.workload.synthetic))
            check_memory(needs)
            check_outputs([("--report-json", args.report_json), ("--per-request-jsonl", args.per_request_jsonl),
                           ("--dump-scenario", args.dump_scenario)])
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        if args.dump_scenario is not None:
            args.dump_scenario.parent.mkdir(parents=True, exist_ok=True)
            dump_scenario(scenario, args.dump_scenario)
        world = build_world(LoadedScenario(scenario), macro_step=not args.no_macro_step)
        if world.workload.embedded:
            print("no trace or synthetic flags given: replaying the embedded Mooncake sample "
                  f"({world.workload_description})", file=sys.stderr)
        progress = None if args.no_progress else Progress(world.setup.workload.num_requests)
        started = time.perf_counter()
        until_ms = math.inf if args.max_sim_time_seconds is None else args.max_sim_time_seconds * 1000.0
        try:
            result, control = run_local(world.setup, progress.update_one if progress else None, until_ms=until_ms,
                                        on_loop=interrupt.attach if interrupt is not None else None)
        finally:
            if progress is not None:
                progress.close()
        wall_ms = (time.perf_counter() - started) * 1000.0
        options = ReportOptions(wall_time_ms=wall_ms if args.record_wall_time else None, sla_ttft_ms=args.sla_ttft_ms,
                                sla_tpot_ms=sla_itl_ms(args), sla_e2e_ms=args.sla_e2e_ms)
        report = build_report(world, result, control, "replay", options)
    if interrupt is not None and interrupt.partial:
        report["partial"] = True
    return report, result.records, wall_ms


class Progress:
    """tqdm on stderr, shown only once a run has taken a second."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="req", delay=1.0, file=sys.stderr, dynamic_ncols=True, leave=False)

    def update_one(self, _: object) -> None:
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def main(argv: Sequence[str] | None = None, prog: str = "clustersim replay") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Replay a trace or a synthetic workload offline.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args, prog)


def run_from_args(args: argparse.Namespace, prog: str = "clustersim replay") -> int:
    from actors.engine.config import ConfigError
    from cluster.commands.guard import EXIT_INTERRUPTED, Interrupt, outcome_warning
    from cluster.report.outputs import write_per_request_jsonl, write_report_json
    from cluster.report.table import format_table, simulated_tokens_per_wall_s
    from cluster.scenario.spec import ScenarioError
    from cluster.workload.model import WorkloadError

    try:
        with Interrupt() as interrupt:
            report, records, wall_ms = run_replay(args, interrupt)
    except (ReplayError, ConfigError, WorkloadError, ScenarioError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    summary = dict(report["summary"])
    summary["wall_time_ms"] = wall_ms
    print(format_table(summary))
    print(f"Simulated tokens per wall second: {simulated_tokens_per_wall_s(summary, wall_ms):,.0f}")
    if args.report_json is not None:
        write_report_json(report, args.report_json)
        print(f"Report written to {args.report_json}")
    if args.per_request_jsonl is not None:
        write_per_request_jsonl(records, args.per_request_jsonl)
        print(f"Per-request records written to {args.per_request_jsonl}")
    if args.dump_scenario is not None:
        print(f"Scenario written to {args.dump_scenario}")
    if report.get("partial"):
        end_ms = max((r.terminal_ms or r.arrival_ms for r in records), default=0.0)
        print(f"{prog}: interrupted at {end_ms:,.2f} ms simulated; partial results"
              + (f" in {args.report_json}" if args.report_json is not None else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    warning, code = outcome_warning(records, float(summary.get("duration_ms") or 0.0))
    if warning is not None:
        print(f"{prog}: {warning}", file=sys.stderr)
    return code
