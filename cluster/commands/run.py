"""`clustersim run SCENARIO.yaml [--runtime local|ray] [--shards N]`: run a scenario file.

Host module: loads and builds the scenario (errors are one line, exit status 2), runs it
on the chosen runtime with a progress bar on stderr, prints the AIPerf-style table and
writes the report JSON and per-request JSONL into the scenario's output directory
(`--output-dir` overrides it; under `ray job submit` give an absolute path, since the
job's working directory is a temporary copy).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.commands.replay import Progress

if TYPE_CHECKING:
    from collections.abc import Callable

    from cluster.runtime.shard import RunResult
    from cluster.scenario.spec import Scenario
    from cluster.sim.clock import EventLoop
    from cluster.scenario.world import World


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run a scenario file (local or Ray runtime)",
                       description="Run a scenario file and write its report.")
    p.add_argument("scenario", type=Path, help="scenario YAML file")
    p.add_argument("--runtime", choices=("local", "ray"), help="default: the scenario's runtime.kind (local)")
    p.add_argument("--shards", type=int, help="Ray runtime: node shards (Ray actors); default runtime.shards")
    p.add_argument("--channel", choices=("zmq", "ray"), default="zmq",
                   help="Ray runtime: coordinator-to-shard channel (zmq sockets, or plain Ray calls)")
    p.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--output-dir", type=Path, help="write outputs here instead of the scenario's outputs.dir")
    p.add_argument("--no-macro-step", action="store_true", help="execute every decode pass one by one (slow)")
    p.add_argument("--record-wall-time", action="store_true", help="put wall-clock figures in the report JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    z = p.add_argument_group("mirror KV events onto real ZMQ sockets (vLLM wire format; Local runtime)")
    z.add_argument("--zmq-kv-events", metavar="ENDPOINT",
                   help="PUB endpoint of the first rank, e.g. tcp://127.0.0.1:5557; rank k publishes on port+k")
    z.add_argument("--zmq-replay-endpoint", metavar="ENDPOINT", help="ROUTER replay endpoint of the first rank")
    z.add_argument("--zmq-linger-s", type=float, default=0.0,
                   help="keep publishing sockets (and replay) open this long after the run")
    p.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace, prog: str = "clustersim run") -> int:
    from cluster.commands.guard import EXIT_INTERRUPTED, Interrupt, check_memory, check_outputs, outcome_warning
    from cluster.report.build import build_report
    from cluster.report.outputs import write_per_request_jsonl, write_report_json
    from cluster.report.table import format_table, simulated_tokens_per_wall_s
    from cluster.runner import run_world
    from cluster.runtime.ray import RuntimeSetupError
    from cluster.scenario.load import load_scenario
    from cluster.scenario.spec import ScenarioError
    from cluster.scenario.world import build_world

    try:
        loaded = load_scenario(args.scenario)
        sc = loaded.scenario
        runtime = args.runtime or sc.runtime.kind
        shards = args.shards if args.shards is not None else sc.runtime.shards
        if shards < 1:
            raise ScenarioError("--shards must be at least 1")
        if args.shards is not None and args.shards > 1 and runtime == "local":
            raise ScenarioError("--shards runs node shards on the Ray runtime; add --runtime ray "
                                "(the Local runtime runs one shard)")
        mirror_kv = args.zmq_kv_events is not None
        if mirror_kv and runtime != "local":
            raise ScenarioError("--zmq-kv-events works with the Local runtime only")
        out_dir = args.output_dir if args.output_dir is not None else Path(sc.outputs.dir)
        where = "--output-dir" if args.output_dir is not None else f"{args.scenario}: outputs.dir"
        outputs = [sc.outputs.report_json] + ([sc.outputs.per_request_jsonl] if sc.outputs.per_request_jsonl else [])
        try:
            check_outputs((where, out_dir / name) for name in outputs)
        except ValueError as exc:
            raise ScenarioError(str(exc)) from None
        try:
            check_memory(_memory_needs(sc))
        except ValueError as exc:
            raise ScenarioError(f"{args.scenario}: {exc}") from None
        world = build_world(loaded, macro_step=not args.no_macro_step, mirror_kv=mirror_kv)
        progress = None if args.no_progress else Progress(world.setup.workload.num_requests)
        on_done = progress.update_one if progress else None
        started = time.perf_counter()
        try:
            with Interrupt() as interrupt:
                if mirror_kv:
                    result, control = _run_mirrored(world, args, on_done, interrupt.attach)
                else:
                    result, control = run_world(world, runtime, shards, on_done=on_done, address=args.ray_address,
                                                channel=args.channel, on_loop=interrupt.attach)
        finally:
            if progress is not None:
                progress.close()
        wall_ms = (time.perf_counter() - started) * 1000.0
    except (ScenarioError, RuntimeSetupError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    report = build_report(world, result, control)
    if interrupt.partial:
        report["partial"] = True
    if args.record_wall_time:
        report["runtime"] = {"kind": runtime, "shards": shards if runtime == "ray" else 1, "wall_time_ms": wall_ms}
    summary = dict(report["summary"])
    summary["wall_time_ms"] = wall_ms
    print(format_table(summary))
    where = f"ray, {shards} shard{'s' if shards != 1 else ''}" if runtime == "ray" else "local"
    print(f"Runtime: {where}; {result.num_events:,} events in {wall_ms / 1000:.2f} s wall; "
          f"{simulated_tokens_per_wall_s(summary, wall_ms):,.0f} simulated tokens per wall second")
    _print_plane(report)
    write_report_json(report, out_dir / sc.outputs.report_json)
    print(f"Report written to {out_dir / sc.outputs.report_json}")
    if sc.outputs.per_request_jsonl:
        write_per_request_jsonl(result.records, out_dir / sc.outputs.per_request_jsonl)
        print(f"Per-request records written to {out_dir / sc.outputs.per_request_jsonl}")
    if interrupt.partial:
        print(f"{prog}: interrupted at {result.end_ms:,.2f} ms simulated; the partial report is in "
              f"{out_dir / sc.outputs.report_json}", file=sys.stderr)
        return EXIT_INTERRUPTED
    warning, code = outcome_warning(result.records, result.end_ms)
    if warning is not None:
        print(f"{prog}: {warning}", file=sys.stderr)
    return code


def _memory_needs(sc: Scenario) -> list[tuple[str, int, str]]:
    """What the run needs before it starts: each deployment's ranks (its replicas and the workers
    events add), and a synthetic workload (a trace is already in memory)."""
    from cluster.commands.guard import ranks_need, synthetic_need
    from cluster.scenario.spec import AddWorkersEvent

    added = {d.name: 0 for d in sc.deployments}
    for e in sc.events:
        if isinstance(e, AddWorkersEvent) and e.add_workers.deployment in added:
            added[e.add_workers.deployment] += e.add_workers.count
    needs = [ranks_need(f"deployments.{k}.replicas", (d.replicas + added[d.name]) * d.dp_size)
             for k, d in enumerate(sc.deployments)]
    if sc.workload.synthetic is not None:
        needs.append(synthetic_need("workload.synthetic.request_count", "workload.synthetic.input_tokens",
                                    sc.workload.synthetic))
    return needs


def _run_mirrored(world: World, args: argparse.Namespace, on_done: Any,
                  on_loop: Callable[[EventLoop], None]) -> tuple[RunResult, Any]:
    """The Local runtime with every KV batch also published on real sockets (one PUB per rank)."""
    from cluster.plane.messages import KvBatchMsg
    from cluster.runtime.local import run_local
    from cluster.scenario.spec import ScenarioError
    from cluster.wire.mirror import KvZmqMirror

    slots = [(r.worker_id, r.dp_rank) for r in world.setup.ranks]
    try:
        mirror = KvZmqMirror(args.zmq_kv_events, slots, world.setup.block_size,
                             replay_endpoint=args.zmq_replay_endpoint, bind=True)
    except Exception as exc:  # zmq errors (address in use, bad endpoint) reach the user as one line
        raise ScenarioError(f"--zmq-kv-events: {exc}") from None
    with mirror:
        first = next(iter(mirror.endpoints().values()))
        print(f"Mirroring KV events of {len(slots)} ranks from {first} (one endpoint per rank)", file=sys.stderr)

        def tap(batch: KvBatchMsg) -> None:
            mirror.publish(batch.events)

        outcome = run_local(world.setup, on_done, kv_tap=tap, on_loop=on_loop)
        if args.zmq_linger_s > 0:
            time.sleep(args.zmq_linger_s)
    return outcome


def _print_plane(report: dict[str, Any]) -> None:
    plane = report["event_plane"]
    sync = plane["kv_sync"]
    idx = plane["index"]
    if idx is None:
        return
    print(f"KV stream: {sync['batches_received']:,} batches, {sync['gaps_detected']} gaps, "
          f"{sync['replay_requests']} replays, {sync['resyncs']} resyncs; router index vs caches: "
          f"{idx['ranks_diverged']} of {idx['ranks_checked']} ranks differ "
          f"({idx['blocks_missing']} missing, {idx['blocks_extra']} extra blocks)")
