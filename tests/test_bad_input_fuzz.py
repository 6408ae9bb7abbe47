"""Fuzzing the front doors (issue 14): mutated scenario files, engine JSON and trace lines.

Whatever the input, `clustersim` must answer with exit status 0 (ran), 2 (refused) or 3 (ran,
nothing completed), at most one line on stderr, no traceback, within a few seconds. Each example
calls the CLI entry function in-process (no subprocess) under a wall-clock alarm. CI runs a small
sample per target; the `soak` variants run many more.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_LIMIT_S = 30  # generous: the CI machine is shared; a good example takes well under a second
GOOD_ROWS = [{"timestamp": 0, "input_length": 300, "output_length": 6, "hash_ids": [1, 2, 3]},
             {"timestamp": 5, "input_length": 200, "output_length": 4, "hash_ids": [1, 4], "session_id": "s"},
             {"delay": 2.5, "input_length": 250, "output_length": 3, "hash_ids": [1, 4, 5], "session_id": "s"}]
BASE: dict[str, Any] = {
    "name": "fuzz", "seed": 1, "model": "qwen3-0.6b",
    "cluster": {"nodes": [{"name": "n", "count": 2, "accelerator": str(ROOT / "configs/accelerator/h100x8.toml"),
                           "virtualization": {"mode": "mig", "profiles": ["3g.40gb", "3g.40gb"]}}]},
    "deployments": [{"name": "agg", "replicas": 2, "vgpu": {"profile": "3g.40gb"},
                     "engine": {"block_size": 16, "num_gpu_blocks": 400, "max_num_seqs": 8},
                     "timing": {"model": "roofline"}}],
    "router": {"mode": "kv", "router_temperature": 0.0},
    "event_plane": {"latency_ms": 0.5, "links": {"kv_events": {"loss": 0.1}}},
    "workload": {"synthetic": {"input_tokens": 200, "output_tokens": 5, "request_count": 6, "request_rate": 50,
                               "block_size": 16}},
    "faults": [{"at_s": 0.05, "kill_worker": "agg-1"}, {"at_s": 0.01, "partition": {"nodes": ["n-0"],
                                                                                   "duration_s": 0.02}}],
    "events": [{"at_s": 0.02, "add_workers": {"deployment": "agg", "count": 1}}],
}
ENGINE_KEYS = ["num_gpu_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len",
               "enable_prefix_caching", "enable_chunked_prefill", "preemption_mode", "speedup_ratio",
               "decode_speedup_ratio", "dp_size", "timing_model", "startup_time", "planner_profile_data", "bogus"]

NASTY = st.one_of(
    # no "big but valid" sizes (10**6 requests run for minutes): those are workloads, not bad input
    st.none(), st.booleans(), st.sampled_from([0, -1, 1, 2, 7, 10**12, 2**63]),
    st.sampled_from([0.0, -0.5, 0.5, 1e-300, 1e12, 1e18, math.inf, -math.inf, math.nan]),
    st.sampled_from(["", "x", "1", "kv", "mig", "roofline", "../nope", "agg-0", "n-0"]),
    st.just([]), st.just({}), st.just({"type": "fixed", "prefill_ms": 1, "decode_ms": 1}),
    st.just({"type": "interpolated", "path": "missing.npz"}), st.just([1, "a", None]),
)


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise _Timeout(f"no answer within {seconds} s")
    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _check(argv: list[str]) -> None:
    """Run the CLI in-process; the outcome must be one of the three statuses, <= 1 stderr line."""
    out, err = io.StringIO(), io.StringIO()
    with _alarm(EXAMPLE_LIMIT_S), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refusals
            code = int(exc.code or 0)
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert code in (0, 2, 3), (code, argv, err.getvalue()[-2000:])
    assert len(lines) <= 1 and "Traceback" not in err.getvalue(), (argv, err.getvalue()[-2000:])
    assert code != 2 or len(lines) == 1, (argv, "a refusal says why")


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a nested dict/list (the places a mutation can hit)."""
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_edits: int = 3) -> Any:
    """`base` with 1..max_edits edits: a value replaced by a nasty one, a key deleted, or an unknown key."""
    tree = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_edits))):
        paths = _paths(tree)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = tree
        for part in path[:-1]:
            parent = parent[part]
        kind = draw(st.sampled_from(["replace", "replace", "delete", "unknown"]))
        if kind == "replace":
            parent[path[-1]] = copy.deepcopy(draw(NASTY))  # st.just values are shared objects
        elif kind == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent["zz_" + str(path[-1])] = copy.deepcopy(draw(NASTY))
    return tree


def _scenario_case(tree: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sc.yaml"
        path.write_text(yaml.safe_dump(tree))
        _check(["run", "--no-progress", str(path), "--output-dir", str(Path(d) / "out")])


def _engine_case(engine: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "t.jsonl"
        trace.write_text("".join(json.dumps(r) + "\n" for r in GOOD_ROWS))
        _check(["replay", "--no-progress", str(trace), "--num-workers", "2", "--router-mode", "kv_router",
                "--extra-engine-args", json.dumps(engine), "--report-json", str(Path(d) / "r.json")])


def _trace_case(rows: Any, raw_line: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "t.jsonl"
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        trace.write_bytes(data + (raw_line + b"\n" if raw_line is not None else b""))
        _check(["replay", "--no-progress", str(trace), "--per-request-jsonl", str(Path(d) / "r.jsonl")])


ENGINE = st.dictionaries(st.sampled_from(ENGINE_KEYS), NASTY, max_size=4)
RAW_LINE = st.one_of(st.none(), st.binary(max_size=40), st.sampled_from([b"\xef\xbb\xbf{}", b"[]", b"{", b"null"]))
def _fuzz(max_examples: int) -> settings:
    return settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None,
                    max_examples=max_examples)


def test_the_unmutated_inputs_run() -> None:
    # the fuzz starts from inputs that run (exit 0, nothing on stderr), so its refusals mean something
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sc.yaml"
        path.write_text(yaml.safe_dump(BASE))
        trace = Path(d) / "t.jsonl"
        trace.write_text("".join(json.dumps(r) + "\n" for r in GOOD_ROWS))
        for argv in (["run", "--no-progress", str(path), "--output-dir", str(Path(d) / "out")],
                     ["replay", "--no-progress", str(trace), "--extra-engine-args", "{}"]):
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                assert main(argv) == 0 and err.getvalue() == "", err.getvalue()


@_fuzz(60)
@given(mutated(BASE))
def test_mutated_scenarios(tree: Any) -> None:
    _scenario_case(tree)


@_fuzz(50)
@given(ENGINE)
def test_mutated_engine_json(engine: Any) -> None:
    _engine_case(engine)


@_fuzz(50)
@given(mutated(GOOD_ROWS), RAW_LINE)
def test_mutated_trace_lines(rows: Any, raw_line: bytes | None) -> None:
    _trace_case(rows, raw_line)


@pytest.mark.soak
@settings(deadline=None, max_examples=2000, suppress_health_check=list(HealthCheck), database=None)
@given(mutated(BASE, max_edits=6), ENGINE, mutated(GOOD_ROWS), RAW_LINE)
def test_fuzz_soak(tree: Any, engine: Any, rows: Any, raw_line: bytes | None) -> None:
    _scenario_case(tree)
    _engine_case(engine)
    _trace_case(rows, raw_line)
