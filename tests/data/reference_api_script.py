"""A script written for the reference's Python API (`dynamo.replay`, 1.6.1); only the import differs.

    python tests/data/reference_api_script.py dynamo.replay TRACE OUT_DIR     # the reference
    python tests/data/reference_api_script.py cluster.replay TRACE OUT_DIR    # clustersim

It prints one JSON object: per case, the summary (wall-clock keys dropped) and a digest of the
per-request records. `tests/test_replay_api.py` runs it against `cluster.replay` and compares with
the reference's output recorded in `reference_api_script.expected.json`.
"""

import importlib
import json
import os
import sys

replay = importlib.import_module(sys.argv[1])
run_trace_replay = replay.run_trace_replay
run_synthetic_trace_replay = replay.run_synthetic_trace_replay
trace, out_dir = sys.argv[2], sys.argv[3]

WALL = ("wall_time_ms", "processed_tokens_per_s", "processed_output_tokens_per_s")
engine = {"engine": {"block_size": 64, "max_num_seqs": 64}}
results = {}


def keep(report, per_request=False):
    summary = {k: v for k, v in report.summary.items() if k not in WALL}
    row = {"summary": summary, "summary_keys": sorted(report.summary)}
    if per_request:
        rows = sorted(report.per_request, key=lambda r: (r["arrival_time_ms"], r["input_length"]))
        row["per_request"] = [[r["arrival_time_ms"], r["input_length"], r["output_length"], r["ttft_ms"],
                               r["e2e_latency_ms"], r["reused_input_tokens"], r["terminal_status"]] for r in rows]
    return row


results["trace_rr"] = keep(run_trace_replay(trace, extra_engine_args=engine, num_workers=2, capture_per_request=True,
                                            report_jsonl_path=os.path.join(out_dir, "trace_rr.jsonl")), True)
results["trace_rr_cut"] = keep(run_trace_replay([trace], extra_engine_args=engine, num_workers=2,
                                                max_sim_time_ms=20_000.0, sla_ttft_ms=3000.0, sla_itl_ms=40.0))
results["trace_concurrency"] = keep(run_trace_replay(trace, extra_engine_args=engine, num_workers=2,
                                                     replay_concurrency=8, arrival_speedup_ratio=2.0,
                                                     trace_block_size=1024))
results["synthetic_interval"] = keep(run_synthetic_trace_replay(
    1024, 64, 100, extra_engine_args={"engine": {"block_size": 64, "enable_prefix_caching": False},
                                      "startup_time": 2.0},
    num_workers=2, arrival_interval_ms=25.0, sla_e2e_ms=800.0, capture_per_request=True), True)
results["synthetic_burst"] = keep(run_synthetic_trace_replay(
    512, 32, 40, extra_engine_args={"engine": {"block_size": 64, "enable_chunked_prefill": False}}, num_workers=1, arrival_interval_ms=0.0))
results["synthetic_kv"] = keep(run_synthetic_trace_replay(
    1024, 32, 100, extra_engine_args={"engine": {"block_size": 64}}, num_workers=2, router_mode="kv_router",
    arrival_interval_ms=20.0, shared_prefix_ratio=0.5, num_prefix_groups=1))
with open(os.path.join(out_dir, "trace_rr.jsonl")) as f:
    results["trace_rr_jsonl_lines"] = sum(1 for _ in f)
print(json.dumps(results, sort_keys=True))
