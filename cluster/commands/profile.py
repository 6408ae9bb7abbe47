"""`clustersim profile`: sweep a simulated engine over ISL and concurrency and write the reference
profiler's raw-data layout, so the planner, the interpolated timing model and the reference's
tools can read it:

- `<out>/selected_prefill_interpolation/raw_data.npz`: `prefill_isl`, `prefill_ttft` (ms),
  `prefill_thpt_per_gpu` (tokens/s/GPU): one lone request per ISL (its TTFT);
- `<out>/selected_decode_interpolation/raw_data.npz`: `x_kv_usage` (fraction of the KV cache),
  `y_context_length`, `z_itl` (ms), `z_thpt_per_gpu` (tokens/s/GPU), `max_kv_tokens` ([n]): per
  (context, concurrency) point, `concurrency` requests decoding together, their mean ITL.
Points whose KV would not fit are skipped. Each point is one offline run on one abstract GPU
with the given engine keys (timing model included); the runs are deterministic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_ISL = "128,256,512,1024,2048,4096,8192,16384"
DEFAULT_CONTEXT = "256,1024,2048,4096,8192"
DEFAULT_CONCURRENCY = "1,2,4,8,16,32,64,128,256"


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser("profile", help="profile the simulated engine (the reference profiler's raw_data.npz)",
                              description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--extra-engine-args", help="engine keys, JSON text or a file (as clustersim replay)")
    p.add_argument("--output-dir", type=Path, default=Path("out/profile"))
    p.add_argument("--isl", default=DEFAULT_ISL, help="prefill ISLs, comma-separated")
    p.add_argument("--context", default=DEFAULT_CONTEXT, help="decode context lengths, comma-separated")
    p.add_argument("--concurrency", default=DEFAULT_CONCURRENCY, help="decode batch sizes, comma-separated")
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens each decode request generates")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_profile)


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag}: comma-separated positive integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise ValueError(f"{flag}: comma-separated positive integers, got {text!r}")
    return values


def _run(engine: Any, sessions: list[tuple[int, int]]) -> list[Any]:
    """Run requests (isl, osl) all arriving at 0 on one worker; the completed records."""
    from cluster.runtime.local import run_local
    from cluster.scenario.load import LoadedScenario
    from cluster.scenario.spec import replay_scenario
    from cluster.scenario.world import build_world
    from cluster.workload.model import Session, Turn, Workload

    block = engine.block_size_tokens
    wl = Workload(tuple(Session(f"p{k}", 0.0, (Turn(i, o, tuple(range(k * 4096, k * 4096 + -(-i // block))), 0.0),))
                        for k, (i, o) in enumerate(sessions)), block)
    world = build_world(LoadedScenario(replay_scenario(engine, 1)), workload=wl, refuse_unfit=False)
    result, _ = run_local(world.setup)
    return [r for r in result.records if r.terminal_status.value == "completed"]


def run_profile(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from actors.engine.config import ConfigError, parse_engine_args

    try:
        engine = parse_engine_args(args.extra_engine_args)
        isls = _ints(args.isl, "--isl")
        contexts = _ints(args.context, "--context")
        batches = _ints(args.concurrency, "--concurrency")
        if args.decode_tokens < 2:
            raise ValueError("--decode-tokens must be at least 2")
    except (ConfigError, ValueError) as exc:
        print(f"clustersim profile: {exc}", file=sys.stderr)
        return 2
    gpus = engine.tensor_parallel_size
    max_kv = engine.num_gpu_blocks * engine.block_size_tokens
    points = [(c, b) for c in contexts for b in batches if b * (c + args.decode_tokens) <= max_kv]
    isl_ok = [i for i in isls if i + 2 <= max_kv]
    ttft, x, y, z, zt = [], [], [], [], []
    with tqdm(total=len(isl_ok) + len(points), desc="profile", disable=args.no_progress) as bar:
        for isl in isl_ok:
            rec = _run(engine, [(isl, 2)])[0]
            ttft.append(rec.first_token_ms - rec.arrival_ms)
            bar.update(1)
        for ctx, b in points:
            recs = _run(engine, [(ctx, args.decode_tokens)] * b)
            itl = float(np.mean([(r.last_token_ms - r.first_token_ms) / (args.decode_tokens - 1) for r in recs]))
            x.append(b * (ctx + args.decode_tokens / 2) / max_kv)
            y.append(float(ctx))
            z.append(itl)
            zt.append(b / itl * 1000.0 / gpus)
            bar.update(1)
    out: Path = args.output_dir
    (out / "selected_prefill_interpolation").mkdir(parents=True, exist_ok=True)
    (out / "selected_decode_interpolation").mkdir(parents=True, exist_ok=True)
    isl_a = np.array(isl_ok, dtype=np.float64)
    ttft_a = np.array(ttft, dtype=np.float64)
    np.savez(out / "selected_prefill_interpolation" / "raw_data.npz", prefill_isl=isl_a, prefill_ttft=ttft_a,
             prefill_thpt_per_gpu=isl_a / ttft_a * 1000.0 / gpus)
    np.savez(out / "selected_decode_interpolation" / "raw_data.npz", x_kv_usage=np.array(x),
             y_context_length=np.array(y), z_itl=np.array(z), z_thpt_per_gpu=np.array(zt),
             max_kv_tokens=np.array([max_kv]))
    print(f"profile: {len(isl_ok)} prefill and {len(points)} decode points written to {out}")
    return 0
