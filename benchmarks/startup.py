"""Start-up cost of the commands (issue 10, item 6): how long before clustersim does any work.

Each probe runs in a fresh interpreter, `--repeat` times, interleaved (the machine is noisy), and
the best is kept. Printed as seconds and as machine-independent figures: each probe minus bare
interpreter start-up, and a replay's import overhead against the floor of its third-party
imports (numpy, pydantic, xxhash, tqdm), which no reorganisation of ours can go under.

    python benchmarks/startup.py [--repeat 10]

`PYTHONDONTWRITEBYTECODE=1` (set in some sandboxes) keeps Python from caching bytecode, so our
modules compile from source on every import unless `python -m compileall cluster actors router`
wrote `__pycache__` once; that roughly doubles our share, and the script says when it is set.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_REPLAY = ["replay", "--input-tokens", "100", "--output-tokens", "5", "--request-count", "2", "--num-workers", "1"]

_LOADED = """
import contextlib, io, sys
from cluster.cli import main
sys.argv = ["clustersim", *sys.argv[1:]]
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    main(sys.argv[1:])
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("cluster", "actors", "router", "planner"))))
"""


def _modules_a_replay_loads() -> str:
    out = subprocess.run([sys.executable, "-c", _LOADED, *TINY_REPLAY], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"})
    return out.stdout.strip().splitlines()[-1]


def _probes() -> dict[str, list[str]]:
    py = sys.executable
    return {
        "python -c pass": [py, "-c", "pass"],
        "third-party floor (numpy, pydantic, xxhash, tqdm)": [py, "-c", "import numpy, pydantic, xxhash, tqdm"],
        "import cluster.cli": [py, "-c", "import cluster.cli"],
        "clustersim --help": [py, "-m", "cluster", "--help"],
        "import what a replay loads": [py, "-c", f"import {_modules_a_replay_loads()}"],
        "tiny replay, end to end": [py, "-m", "cluster", *TINY_REPLAY],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    probes = _probes()
    env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"}  # as `clustersim` sets it for itself
    best = {name: float("inf") for name in probes}
    for _ in range(args.repeat):
        for name, cmd in probes.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            best[name] = min(best[name], time.perf_counter() - t0)
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note: PYTHONDONTWRITEBYTECODE is set: without __pycache__ our modules compile on every import")
    bare = best["python -c pass"]
    for name, t in best.items():
        print(f"{name:52s} {t:6.3f} s   (+{t - bare:.3f} s over bare start-up)")
    floor = best["third-party floor (numpy, pydantic, xxhash, tqdm)"] - bare
    ours = best["import what a replay loads"] - bare
    print(f"replay import overhead: {ours:.3f} s = third-party floor {floor:.3f} s + ours {ours - floor:.3f} s "
          f"({ours / floor:.2f}x the floor)")


if __name__ == "__main__":
    main()
