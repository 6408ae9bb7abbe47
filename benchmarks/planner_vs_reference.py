"""clustersim's planner in the loop against the reference replay's scaling hook (Dynamo 1.6.1).

Each case is a synthetic replay with a scripted planner (`{"type": "scripted", ...}`). The reference
side runs `dynamo._core.run_mocker_synthetic_trace_replay(..., scaling_policy=obj)` with a hook
object written here (independently of `planner.policy.ScriptedPlanner`): `initial_tick_ms()` is
the first tick, each `on_tick(snapshot)` returns the latest step due as `target_decode`. clustersim
runs `clustersim replay ... --planner-config` in this interpreter. Both in fresh processes (`--driver`).
Printed: per summary metric the relative error (pass: <= 1%), `gpu_hours` included, and the wall ratio.

    python benchmarks/planner_vs_reference.py [--cases a,b] [--verbose] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.01
KEYS = ("duration_ms", "gpu_hours", "decode_worker_seconds", "request_throughput_rps", "output_throughput_tok_s",
        "mean_ttft_ms", "p90_ttft_ms", "p99_ttft_ms", "mean_itl_ms", "p99_itl_ms", "mean_e2e_latency_ms",
        "p99_e2e_latency_ms", "completed_requests")

CASES: dict[str, dict[str, Any]] = {
    # the Must show: 1 -> 3 workers at the 10 s tick (3 s startup), back to 1 at the 40 s tick
    "scripted-1-3-1": {"synthetic": [1024, 128, 1200], "request_rate": 20.0, "num_workers": 1,
                       "engine": {"startup_time": 3},
                       "planner": {"type": "scripted", "tick_s": 5,
                                   "steps": [{"at_s": 10, "workers": 3}, {"at_s": 40, "workers": 1}]}},
    # overload, then relief with a long startup; scale down twice
    "scripted-overload": {"synthetic": [2048, 256, 1500], "request_rate": 30.0, "num_workers": 1,
                          "engine": {"startup_time": 10},
                          "planner": {"type": "scripted", "tick_s": 2,
                                      "steps": [{"at_s": 4, "workers": 4}, {"at_s": 30, "workers": 2},
                                                {"at_s": 40, "workers": 1}]}},
    # scale down first (drain with work in flight), then up
    "scripted-down-up": {"synthetic": [512, 64, 1000], "request_rate": 25.0, "num_workers": 3,
                         "engine": {"startup_time": 1},
                         "planner": {"type": "scripted", "tick_s": 3,
                                     "steps": [{"at_s": 6, "workers": 1}, {"at_s": 21, "workers": 2}]}},
}


class ReferenceScript:
    """The reference hook: at tick k (k * tick_s), the last step with at_s <= now is the target."""

    def __init__(self, tick_s: float, steps: list[dict[str, Any]]) -> None:
        self.tick_ms = tick_s * 1000.0
        self.steps = sorted(steps, key=lambda s: s["at_s"])
        self.done = 0

    def initial_tick_ms(self) -> float:
        return self.tick_ms

    def on_tick(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        now = float(snapshot["now_ms"])
        target = None
        while self.done < len(self.steps) and self.steps[self.done]["at_s"] * 1000.0 <= now + 1e-9:
            target = self.steps[self.done]["workers"]
            self.done += 1
        nxt = now + self.tick_ms if self.done < len(self.steps) else None
        return {"target_prefill": None, "target_decode": target, "next_tick_ms": nxt}


def drive(side: str, case: dict[str, Any], out: str) -> None:
    isl, osl, n = case["synthetic"]
    start = time.perf_counter()
    if side == "reference":
        import dynamo._core as core

        p = case["planner"]
        result = core.run_mocker_synthetic_trace_replay(
            isl, osl, n, extra_engine_args=json.dumps(case["engine"]), num_workers=case["num_workers"],
            request_rate=case["request_rate"], scaling_policy=ReferenceScript(p["tick_s"], p["steps"]))
        summary = dict(result.summary)
    else:
        from cluster.commands.replay import main

        with tempfile.TemporaryDirectory() as tmp:
            report = os.path.join(tmp, "r.json")
            rc = main([
                "--input-tokens", str(isl), "--output-tokens", str(osl), "--request-count", str(n),
                "--request-rate", str(case["request_rate"]), "--num-workers", str(case["num_workers"]),
                "--extra-engine-args", json.dumps(case["engine"]), "--planner-config", json.dumps(case["planner"]),
                "--report-json", report, "--no-progress"])
            if rc != 0:
                raise SystemExit(rc)
            summary = json.loads(Path(report).read_text())["summary"]
    summary["_process_s"] = time.perf_counter() - start
    Path(out).write_text(json.dumps(summary))


def _run(python: str, side: str, name: str) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "s.json")
        t0 = time.perf_counter()
        proc = subprocess.run([python, __file__, "--driver", side, name, out], cwd=ROOT, capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"{name} {side}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            return None
        s: dict[str, Any] = json.loads(Path(out).read_text())
        s["_wall_s"] = wall
        return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--reference-python", default=os.environ.get("CLUSTERSIM_REFERENCE_PYTHON",
                                                                 "/work/refvenv/bin/python"))
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--driver", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.driver:
        side, name, out = args.driver
        drive(side, CASES[name], out)
        return 0
    results: dict[str, Any] = {}
    worst_all = 0.0
    for name in args.cases.split(","):
        ref = _run(args.reference_python, "reference", name)
        ours = _run(sys.executable, "clustersim", name)
        if ref is None or ours is None:
            results[name] = {"error": "a side failed"}
            continue
        errs = {k: abs(ours[k] - ref[k]) / abs(ref[k]) if ref[k] else abs(ours[k]) for k in KEYS}
        worst = max(errs.values())
        worst_all = max(worst_all, worst)
        results[name] = {"errors": errs, "reference": {k: ref[k] for k in KEYS}, "clustersim": {k: ours[k] for k in KEYS},
                         "wall_ratio": ours["_wall_s"] / ref["_wall_s"]}
        status = "PASS" if worst <= TOLERANCE else "FAIL"
        print(f"{name:18s} {status} worst {100 * worst:.4f}% ({max(errs, key=lambda k: errs[k])}); "
              f"gpu_hours {ours['gpu_hours']:.5f} vs {ref['gpu_hours']:.5f}; duration_ms {ours['duration_ms']:.4f} "
              f"vs {ref['duration_ms']:.4f}; wall {ours['_wall_s']:.2f} s vs {ref['_wall_s']:.2f} s "
              f"(ratio {ours['_wall_s'] / ref['_wall_s']:.2f})")
        if args.verbose:
            for k in KEYS:
                print(f"    {k:26s} {ours[k]:16.6f} {ref[k]:16.6f} {100 * errs[k]:.5f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if worst_all <= TOLERANCE and all("errors" in r for r in results.values()) and not math.isnan(worst_all) else 1


if __name__ == "__main__":
    sys.exit(main())
