"""Golden reports: a fixed set of runs whose report JSON (and per-request records) must not move.

Each case is a `clustersim` command line, run in-process through the CLI, so the goldens pin
what users see whatever the internals look like. A case's files:
- `<name>.report.json`: the report, byte for byte;
- `<name>.requests.sha256`: sha256 and line count of the per-request JSONL (the Mooncake
  runs write several MB of it, too much to keep in the repository).

Re-record after an intended change, and say in the commit which keys moved and why:

    python -m tests.golden.cases [NAME ...]
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent
ROOT = GOLDEN_DIR.parent.parent
TRACE = ROOT.parent / "shared" / "traces" / "mooncake_conversation_trace.jsonl"
"""The repository's sibling `shared/` (CI always has it)."""

REPORT = "@report"
REQUESTS = "@requests"
OUT_DIR = "@out"

CASES: dict[str, list[str]] = {
    # README replay example 1; also benchmarks/replay_speed.py (b)
    "replay-mooncake-rr8": ["replay", str(TRACE), "--num-workers", "8"],
    # README replay example 2; also benchmarks/replay_speed.py (a)
    "replay-synthetic-c100": ["replay", "--input-tokens", "5000", "--output-tokens", "500", "--request-count",
                              "1000", "--replay-concurrency", "100", "--extra-engine-args", '{"block_size": 512}'],
    # README replay example 3
    "replay-mooncake-kv8": ["replay", str(TRACE), "--num-workers", "8", "--router-mode", "kv_router",
                            "--router-config", '{"router_temperature": 0.0, "kv_event_lag_ms": 5}'],
    # README replay example 4
    "replay-sessions": ["replay", "--input-tokens", "2048", "--output-tokens", "128", "--request-count", "500",
                        "--request-rate", "20", "--turns-per-session", "3", "--inter-turn-delay-ms", "500",
                        "--shared-prefix-ratio", "0.5", "--num-prefix-groups", "4"],
    "run-smoke": ["run", str(ROOT / "configs" / "scenarios" / "smoke.yaml")],
    "run-mooncake-kv16": ["run", str(ROOT / "configs" / "scenarios" / "mooncake-kv16.yaml")],
    # loss + partition + kill_node + router queueing
    "run-faults": ["run", str(GOLDEN_DIR / "faults.yaml")],
}


def argv_for(name: str, out: Path) -> list[str]:
    """The case's command line, writing its outputs under `out`."""
    argv = list(CASES[name])
    if argv[0] == "replay":
        return argv + ["--no-progress", "--report-json", str(out / "report.json"),
                       "--per-request-jsonl", str(out / "requests.jsonl")]
    return argv + ["--no-progress", "--output-dir", str(out)]


def digest(data: bytes) -> str:
    """`<sha256> <lines>`: what `<name>.requests.sha256` holds."""
    lines = data.count(b"\n")
    return f"{hashlib.sha256(data).hexdigest()} {lines}\n"


def run_case(name: str, out: Path) -> tuple[bytes, bytes]:
    """Run a case through the CLI; (report bytes, per-request JSONL bytes)."""
    from cluster.cli import main

    if not TRACE.is_file():
        raise FileNotFoundError(f"golden cases need the shared traces: {TRACE} is missing")
    out.mkdir(parents=True, exist_ok=True)
    code = main(argv_for(name, out))
    if code != 0:
        raise RuntimeError(f"golden case {name} exited with {code}")
    return (out / "report.json").read_bytes(), (out / "requests.jsonl").read_bytes()


def record(names: list[str]) -> None:
    import tempfile

    for name in names or list(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            report, requests = run_case(name, Path(tmp))
        (GOLDEN_DIR / f"{name}.report.json").write_bytes(report)
        (GOLDEN_DIR / f"{name}.requests.sha256").write_text(digest(requests))
        print(f"recorded {name}", file=sys.stderr)


if __name__ == "__main__":
    record(sys.argv[1:])
