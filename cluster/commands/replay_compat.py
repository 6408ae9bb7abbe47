"""The reference CLI's flags beyond the core replay set (`python -m dynamo.replay`, last shipped in 1.4.0).

`add_reference_arguments` adds them to `clustersim replay`; `check_reference_flags` checks them
before anything runs (one `ReplayError` line, exit 2). The flags whose feature is built act as
in the reference:

- positional trace files: the reference takes several only in its sharded `dynamo` request-trace
  format; every other format takes exactly one file (so does clustersim);
- `--trace-format`: `mooncake` is built; the reference's other formats are refused as not built;
- `--trace-shared-prefix-ratio` / `--trace-num-prefix-groups`: the reference applies them to
  `applied_compute_agentic` traces only (it ignores them for Mooncake traces; clustersim refuses a
  value that would be ignored);
- `--max-sim-time-seconds`: trace replay stops once the simulated clock would pass it; requests that
  have not arrived have no record, requests in flight stay incomplete (the summary counts only the
  completed ones, as the reference does);
- `--sla-itl-ms`: the goodput bound on a request's mean inter-token latency (e2e - ttft)/(osl - 1),
  which clustersim's `--sla-tpot-ms` is;
- `--model-name`: selects a profile of `--router-policy-config`; without one it has no effect (as in
  the reference);
- `--report-jsonl`: the reference's name of `--per-request-jsonl`;
- `--prefill-engine-args`, `--decode-engine-args`, `--num-prefill-workers`, `--num-decode-workers`: a
  disaggregated replay (`disaggregated`); `--num-workers` and `--extra-engine-args` are then refused.
- `--planner-config`: the planner in the loop (`planner.config`: sla, scripted or python), JSON
  text or a file; it scales the replay's deployments through the fleet's control API.

Flags whose feature is not built (`NOT_BUILT_FLAGS`) are parsed and refused with `not built yet`.
"""

from __future__ import annotations

import argparse

TRACE_FORMATS = ("mooncake", "mooncake-delta", "agentic_mooncake", "agentic-mooncake", "weka",
                 "applied_compute_agentic", "dynamo")
BUILT_TRACE_FORMATS = ("mooncake",)
AIC = "AIC (AI Configurator) timing"

NOT_BUILT_FLAGS: dict[str, str] = {
    "benchmark_granularity": "planner benchmark sampling",
    "router_policy_config": "router policy families and cache-bucket queues",
}
"""Destination of a reference flag -> the feature it needs, not built yet."""

AIC_FLAGS = ("backend", "system", "backend-version", "tp-size", "model-path", "moe-tp-size", "moe-ep-size",
             "attention-dp-size", "gemm-dtype", "moe-dtype", "fmha-dtype", "kv-cache-dtype", "comm-dtype",
             "nextn", "nextn-accept-rates")
"""The reference's 15 `--aic-*` flags (AIC perf model), all refused as not built."""


class ReplayError(Exception):
    """A problem with the user's input; printed as one line, exit status 2."""


def add_reference_arguments(parser: argparse.ArgumentParser) -> None:
    t = parser.add_argument_group("trace files")
    t.add_argument("--trace-format", choices=TRACE_FORMATS, default="mooncake",
                   help="format of the trace files (built: mooncake)")
    t.add_argument("--trace-shared-prefix-ratio", type=float, default=0.0,
                   help="applied_compute_agentic traces only (not built yet)")
    t.add_argument("--trace-num-prefix-groups", type=int, default=0,
                   help="applied_compute_agentic traces only (not built yet)")
    t.add_argument("--max-sim-time-seconds", type=float,
                   help="trace replay: stop once the simulated clock would pass this; in-flight requests stay "
                        "incomplete")
    parser.add_argument("--sla-itl-ms", type=float,
                        help="goodput bound on a request's mean inter-token latency (e2e - ttft)/(osl - 1)")
    parser.add_argument("--model-name", help="profile to select from --router-policy-config")
    d = parser.add_argument_group("disaggregated replay (a prefill pool and a decode pool)")
    d.add_argument("--prefill-engine-args", help="prefill workers' engine settings: a JSON object or a JSON file")
    d.add_argument("--decode-engine-args", help="decode workers' engine settings: a JSON object or a JSON file")
    d.add_argument("--num-prefill-workers", type=int, help="prefill workers (default 1)")
    d.add_argument("--num-decode-workers", type=int, help="decode workers (default 1)")
    parser.add_argument("--planner-config",
                        help="the planner, JSON text or a file: the reference PlannerConfig (type sla), "
                             '{"type": "scripted", "tick_s": 5, "steps": [{"at_s": 10, "workers": 3}]} or '
                             '{"type": "python", "class": "module:Class"}')
    n = parser.add_argument_group("accepted but not built yet (refused with a message)")
    n.add_argument("--router-policy-config")
    n.add_argument("--benchmark-granularity", type=int)
    for name in AIC_FLAGS:
        n.add_argument(f"--aic-{name}", dest=f"aic_{name.replace('-', '_')}", help=argparse.SUPPRESS)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_reference_flags(args: argparse.Namespace, synthetic: bool) -> None:
    """Refuse what is not built, and combinations the reference refuses (raises `ReplayError`)."""
    for dest, feature in NOT_BUILT_FLAGS.items():
        if getattr(args, dest, None) is not None:
            raise ReplayError(f"{_flag(dest)}: not built yet: {feature}")
    for name in AIC_FLAGS:
        if getattr(args, f"aic_{name.replace('-', '_')}", None) is not None:
            raise ReplayError(f"--aic-{name}: not built yet: {AIC}")
    if args.trace_format not in BUILT_TRACE_FORMATS:
        raise ReplayError(f"--trace-format {args.trace_format}: not built yet: that trace format "
                          f"(built: {', '.join(BUILT_TRACE_FORMATS)})")
    if len(args.trace_files) > 1:
        raise ReplayError(f"--trace-format {args.trace_format} takes exactly one trace file, got "
                          f"{len(args.trace_files)} (several files are the sharded 'dynamo' request-trace format's, "
                          "not built yet)")
    for dest in ("trace_shared_prefix_ratio", "trace_num_prefix_groups"):
        if getattr(args, dest):
            raise ReplayError(f"{_flag(dest)}: applies to --trace-format applied_compute_agentic only "
                              "(not built yet); a Mooncake trace's prefixes come from its hash_ids")
    if args.max_sim_time_seconds is not None:
        if synthetic:
            raise ReplayError("--max-sim-time-seconds applies to trace replay only (as in the reference)")
        if not args.max_sim_time_seconds > 0:
            raise ReplayError("--max-sim-time-seconds must be positive")
        if args.dump_scenario is not None:
            raise ReplayError("--max-sim-time-seconds cannot be written into a scenario (--dump-scenario) yet")
    if args.sla_itl_ms is not None and args.sla_tpot_ms is not None and args.sla_itl_ms != args.sla_tpot_ms:
        raise ReplayError("--sla-itl-ms and --sla-tpot-ms are one bound; give one of them")


DISAGG_FLAGS = ("prefill_engine_args", "decode_engine_args", "num_prefill_workers", "num_decode_workers")


def disaggregated(args: argparse.Namespace) -> bool:
    """Whether the flags ask for a disaggregated replay; aggregated flags mixed in are refused."""
    given = [d for d in DISAGG_FLAGS if getattr(args, d, None) is not None]
    if not given:
        return False
    for dest in ("num_workers", "extra_engine_args"):
        if getattr(args, dest, None) is not None:
            raise ReplayError(f"{_flag(dest)} is for aggregated replay; with {_flag(given[0])} give "
                              "--num-prefill-workers/--num-decode-workers and "
                              "--prefill-engine-args/--decode-engine-args")
    for dest in ("num_prefill_workers", "num_decode_workers"):
        if getattr(args, dest) is not None and getattr(args, dest) < 1:
            raise ReplayError(f"{_flag(dest)} must be at least 1")
    return True


def sla_itl_ms(args: argparse.Namespace) -> float | None:
    """The goodput bound on mean inter-token latency, spelled either way."""
    value: float | None = args.sla_itl_ms if args.sla_itl_ms is not None else args.sla_tpot_ms
    return value
