"""Load predictors on real arrival series: constant / ARIMA / Kalman / Prophet (when installed) on the
Azure (conversation) and Mooncake traces' requests per interval, one-step-ahead as the planner
uses them (forecast error), and the SLA attainment / GPU-hours of the planner run with each
predictor on the Azure trace (and Mooncake with --sla-traces azure,mooncake).
Writes predictor_compare.{csv,md,png} and predictor_sla.{csv,md} into --out.

    python planner/experiments/predictor_compare.py --out out/predictors [--interval-s 60]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from common import ROOT, abstract_scenario, attainment, run, write_csv, write_markdown  # noqa: I001

TRACES = ROOT.parent / "shared" / "traces"
if not TRACES.exists():
    TRACES = Path("/work/shared/traces")


def azure(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival s from the first, context tokens, generated tokens) of an Azure LLM inference trace."""
    import pandas as pd

    df = pd.read_csv(path)
    t = pd.to_datetime(df["TIMESTAMP"])
    s = (t - t.iloc[0]).dt.total_seconds().to_numpy()
    return s, df["ContextTokens"].to_numpy(), df["GeneratedTokens"].to_numpy()


def mooncake(path: Path) -> np.ndarray:
    with path.open() as f:
        return np.array([json.loads(line)["timestamp"] / 1000.0 for line in f])


def counts(arrivals_s: np.ndarray, interval_s: float) -> np.ndarray:
    n = int(math.ceil((arrivals_s.max() + 1e-9) / interval_s))
    return np.bincount((arrivals_s // interval_s).astype(int), minlength=n).astype(float)


def forecast(name: str, series: np.ndarray, interval_s: int) -> np.ndarray:
    """One-step-ahead predictions: pred[k] is made after seeing series[:k] (pred[0] = 0)."""
    from planner.config import SlaPlannerConfig
    from planner.predictors import PREDICTORS

    p = PREDICTORS[name](SlaPlannerConfig(load_predictor=name,
                                          throughput_adjustment_interval_seconds=interval_s))
    out = [0.0]
    for v in series[:-1]:
        p.add_data_point(float(v))
        out.append(p.predict_next())
    return np.array(out)


def available(names: list[str]) -> list[str]:
    ok = []
    for n in names:
        if n == "prophet":
            try:
                import prophet  # noqa: F401
            except ImportError:
                print("prophet not installed (pip install 'clustersim[prophet]'): skipped")
                continue
        ok.append(n)
    return ok


def write_azure_trace(path: Path, t: np.ndarray, isl: np.ndarray, osl: np.ndarray, limit_s: float) -> Path:
    keep = t < limit_s
    with path.open("w") as f:
        for k, (ts, i, o) in enumerate(zip(t[keep], isl[keep], osl[keep])):
            blocks = max(1, math.ceil(int(i) / 512))
            f.write(json.dumps({"timestamp": int(round(ts * 1000)), "input_length": int(i),
                                "output_length": max(1, int(o)), "hash_ids": [k * 64 + j for j in range(blocks)]})
                    + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/predictors"))
    ap.add_argument("--interval-s", type=int, default=60)
    ap.add_argument("--predictors", default="constant,arima,kalman,prophet")
    ap.add_argument("--sla-traces", default="azure")
    ap.add_argument("--sla-minutes", type=float, default=30.0, help="replay this much of each trace")
    ap.add_argument("--ttft-ms", type=float, default=1000.0)
    ap.add_argument("--itl-ms", type=float, default=50.0)
    ap.add_argument("--startup-s", type=float, default=10.0)
    ap.add_argument("--speedup", type=float, default=6.0,
                    help="planner runs replay the traces this much faster (one engine serves Azure at 1x), with "
                         "the planner interval shortened to match")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    names = available(args.predictors.split(","))
    az_t, az_isl, az_osl = azure(TRACES / "AzureLLMInferenceTrace_conv.csv")
    series = {"azure": counts(az_t, args.interval_s),
              "mooncake": counts(mooncake(TRACES / "mooncake_conversation_trace.jsonl"), args.interval_s)}
    rows: list[dict[str, Any]] = []
    preds: dict[tuple[str, str], np.ndarray] = {}
    for trace, y in series.items():
        for name in tqdm(names, desc=f"forecast {trace}"):
            p = forecast(name, y, args.interval_s)
            preds[(trace, name)] = p
            err = (p - y)[1:]
            nz = y[1:] > 0
            rows.append({"trace": trace, "predictor": name, "points": len(y), "mae": float(np.mean(np.abs(err))),
                         "rmse": float(np.sqrt(np.mean(err ** 2))),
                         "mape": float(np.mean(np.abs(err[nz]) / y[1:][nz])), "mean_per_interval": float(y.mean())})
    write_csv(args.out / "predictor_compare.csv", rows)
    print(write_markdown(args.out / "predictor_compare.md", f"One-step forecast error ({args.interval_s} s intervals)",
                         rows, "requests per interval; MAPE over non-empty intervals"))
    _plot(series, preds, names, args.out / "predictor_compare.png", args.interval_s)
    sla_rows: list[dict[str, Any]] = []
    limit = args.sla_minutes * 60.0
    traces: dict[str, Path] = {}
    for trace in args.sla_traces.split(","):
        if trace == "azure":
            traces[trace] = write_azure_trace(args.out / "azure_trace.jsonl", az_t, az_isl, az_osl, limit)
        elif trace == "mooncake":
            src = TRACES / "mooncake_conversation_trace.jsonl"
            dst = args.out / "mooncake_trace.jsonl"
            with src.open() as f, dst.open("w") as g:
                g.writelines(line for line in f if json.loads(line)["timestamp"] < limit * 1000)
            traces[trace] = dst
    total = sum(sum(1 for _ in p.open()) for p in traces.values()) * len(names)
    with tqdm(total=total, desc="planner runs", unit="req", mininterval=0.5) as bar:
        for trace, path in traces.items():
            for name in names:
                tick = max(1, round(args.interval_s / args.speedup))
                cfg = {"mode": "agg", "throughput_adjustment_interval_seconds": tick,
                       "load_predictor": name, "ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms, "max_gpu_budget": 64}
                engine = {"startup_time": args.startup_s, "max_model_len": 131072}
                sc = abstract_scenario(f"pred-{name}", path, 1, engine, cfg)
                sc["workload"]["arrival_speedup_ratio"] = args.speedup
                rep = run(sc, bar)
                sla_rows.append({"trace": trace, "predictor": name,
                                 "sla_attainment": attainment(rep["_records"], args.ttft_ms, args.itl_ms),
                                 "gpu_hours": rep["summary"]["gpu_hours"], "p99_ttft_ms": rep["summary"]["p99_ttft_ms"],
                                 "scaling_events": sum(1 for d in rep["planner"]["decisions"] if d["applied"])})
    if sla_rows:
        write_csv(args.out / "predictor_sla.csv", sla_rows)
        print(write_markdown(args.out / "predictor_sla.md", "Planner with each predictor", sla_rows,
                             f"first {args.sla_minutes} min of each trace at {args.speedup}x; SLA TTFT {args.ttft_ms} ms, ITL "
                             f"{args.itl_ms} ms; throughput interval {max(1, round(args.interval_s / args.speedup))} s; startup {args.startup_s} s"))
    return 0


def _plot(series: dict[str, np.ndarray], preds: dict[tuple[str, str], np.ndarray], names: list[str], path: Path,
          interval_s: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(9, 3.2 * len(series)))
    for ax, (trace, y) in zip(np.atleast_1d(axes), series.items()):
        x = np.arange(len(y)) * interval_s / 60
        ax.plot(x, y, color="black", lw=2, label="observed")
        for name in names:
            ax.plot(x, preds[(trace, name)], lw=1, label=name)
        ax.set_title(f"{trace}: requests per {interval_s} s")
        ax.set_xlabel("minutes")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
