"""Run summary (the reference replay's keys, facts §h), an AIPerf-style table, per-request JSONL.

Definitions (facts §h, verified against the reference's per-request data):
- Latency statistics (TTFT, TTST, TPOT, e2e) use COMPLETED requests only; token totals,
  throughputs and `first_admission_prefix_cache_reused_ratio` too.
- `duration_ms` is the last completion time (arrivals start at 0); throughputs divide by it.
- ITL is every inter-token gap of the run (the `GapLog`, weighted); the per-user output
  throughput distribution is 1000/gap for every gap > 0 (so its min is 1000/max gap).
- median = sorted[n//2]; pXX = sorted[ceil(XX*n/100) - 1] (nearest rank, integer arithmetic);
  std is the population std; an empty distribution gives None (JSON null) for every stat.
Weighted order statistics never expand weights: values are sorted once and ranks are
found with `searchsorted` on the cumulative weights. All outputs are plain Python
int/float/str/None, and the JSON writers are byte-deterministic (sorted keys).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from actors.engine.records import GapLog, RequestRecord, TerminalStatus

SummaryValue = float | int | str | None
Summary = dict[str, SummaryValue]

PERCENTILES = (75, 90, 95, 99)
LATENCY_METRICS = ("ttft", "ttst", "tpot", "itl", "e2e_latency")
PER_USER_METRIC = "output_token_throughput_per_user"
STAT_NAMES = ("mean", "min", "max", "median", "p75", "p90", "p95", "p99", "std")


def _nearest_rank_index(n: int, percent: int) -> int:
    """0-based index of the `percent`-th nearest-rank percentile of n values: ceil(p*n/100)-1."""
    return max(0, -(-percent * n // 100) - 1)


def weighted_stats(
    values: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> dict[str, float | None]:
    """mean/min/max/median/p75/p90/p95/p99/std of `values`, each repeated `weights` times.

    Equal to the unweighted statistics of the expanded array (order statistics exactly,
    mean and std up to float rounding), without building it. Zero weights are allowed.
    Returns None for every statistic when the total weight is 0. The same (values,
    weights) arrays always give the same floats; `GapLog.arrays()` is canonical, so ITL
    statistics do not depend on how gaps were grouped when they were recorded.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    w = np.ones(len(v), dtype=np.int64) if weights is None else np.asarray(weights, dtype=np.int64).ravel()
    if len(v) != len(w):
        raise ValueError(f"values ({len(v)}) and weights ({len(w)}) differ in length")
    if len(w) and int(w.min()) < 0:
        raise ValueError("weights must be non-negative")
    n = int(w.sum())
    if n == 0:
        return {name: None for name in STAT_NAMES}
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cumulative = np.cumsum(w)

    def at(rank: int) -> float:
        return float(v[int(np.searchsorted(cumulative, rank, side="right"))])

    wf = w.astype(np.float64)
    mean = float(np.dot(v, wf) / n)
    std = float(math.sqrt(max(0.0, float(np.dot(wf, (v - mean) ** 2)) / n)))
    out: dict[str, float | None] = {"mean": mean, "min": at(0), "max": at(n - 1), "median": at(n // 2)}
    for p in PERCENTILES:
        out[f"p{p}"] = at(_nearest_rank_index(n, p))
    out["std"] = std
    return out


def _put_distribution(summary: Summary, name: str, suffix: str, stats: Mapping[str, float | None]) -> None:
    for stat in STAT_NAMES:
        summary[f"{stat}_{name}{suffix}"] = stats[stat]


def _completed(records: Sequence[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.terminal_status is TerminalStatus.COMPLETED]


def _ratio(numerator: float, denominator: float) -> float:
    return 0.0 if denominator <= 0 else float(numerator / denominator)


def _is_good(
    r: RequestRecord, sla_ttft_ms: float | None, sla_tpot_ms: float | None, sla_e2e_ms: float | None
) -> bool:
    """Every SLA that is set holds (bounds inclusive); TPOT is skipped for output_length <= 1."""
    ttft, tpot, e2e = r.ttft_ms, r.tpot_ms, r.e2e_latency_ms
    if sla_ttft_ms is not None and (ttft is None or ttft > sla_ttft_ms):
        return False
    if sla_e2e_ms is not None and (e2e is None or e2e > sla_e2e_ms):
        return False
    return not (sla_tpot_ms is not None and tpot is not None and tpot > sla_tpot_ms)


def build_summary(
    records: Sequence[RequestRecord],
    gaps: GapLog,
    *,
    num_workers: int,
    gpus_per_worker: int = 1,
    committed_prefill_tokens: int,
    wall_time_ms: float | None,
    sla_ttft_ms: float | None = None,
    sla_tpot_ms: float | None = None,
    sla_e2e_ms: float | None = None,
) -> Summary:
    """The reference replay's summary dict (aggregated serving: one worker pool).

    `prefix_cache_reused_ratio` is Σ reused_tokens_total / Σ admitted_tokens_total over
    every admission of every record (readmissions included); the first-admission ratio
    is Σ reused_input_tokens / Σ input_length over completed requests. Worker seconds are
    `num_workers × duration_s` (a fixed fleet); gpu_hours = worker_seconds × gpus / 3600.
    Goodput keys appear only when an `sla_*` bound is given.
    """
    done = _completed(records)
    total_in = sum(r.input_length for r in done)
    total_out = sum(r.output_length for r in done)
    duration_ms = max((r.terminal_ms for r in done if r.terminal_ms is not None), default=0.0)
    duration_s = max(duration_ms / 1000.0, 1e-9)
    decode_worker_seconds = num_workers * duration_ms / 1000.0
    processed = total_in + total_out

    def per_wall_s(tokens: int) -> float | None:
        if wall_time_ms is None:
            return None
        return 0.0 if wall_time_ms <= 0 else tokens * 1000.0 / wall_time_ms

    s: Summary = {
        "kv_eviction_policy": "lru",
        "committed_prefill_tokens": int(committed_prefill_tokens),
        "num_requests": len(records),
        "completed_requests": len(done),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "duration_ms": float(duration_ms),
        "wall_time_ms": None if wall_time_ms is None else float(wall_time_ms),
        "request_throughput_rps": len(done) / duration_s,
        "input_throughput_tok_s": total_in / duration_s,
        "output_throughput_tok_s": total_out / duration_s,
        "total_throughput_tok_s": processed / duration_s,
        "prefill_worker_seconds": 0.0,
        "decode_worker_seconds": decode_worker_seconds,
        "prefill_gpus_per_worker": 0,
        "decode_gpus_per_worker": int(gpus_per_worker),
        "gpu_hours": decode_worker_seconds * gpus_per_worker / 3600.0,
        "power_w": None,
        "power_coverage": 0.0,
        "processed_tokens": processed,
        "processed_tokens_per_s": per_wall_s(processed),
        "processed_output_tokens_per_s": per_wall_s(total_out),
        "prefix_cache_reused_ratio": _ratio(
            sum(r.reused_tokens_total for r in records), sum(r.admitted_tokens_total for r in records)
        ),
        "first_admission_prefix_cache_reused_ratio": _ratio(sum(r.reused_input_tokens for r in done), total_in),
    }
    ttft = [x for r in done if (x := r.ttft_ms) is not None]
    ttst = [x for r in done if (x := r.ttst_ms) is not None]
    tpot = [x for r in done if (x := r.tpot_ms) is not None]
    e2e = [x for r in done if (x := r.e2e_latency_ms) is not None]
    s["num_ttft_samples"] = len(ttft)
    s["num_tpot_samples"] = len(tpot)
    s["num_e2e_latency_samples"] = len(e2e)
    gap_values, gap_weights = gaps.arrays()
    positive = gap_values > 0.0
    distributions: dict[str, dict[str, float | None]] = {
        "ttft": weighted_stats(ttft),
        "ttst": weighted_stats(ttst),
        "tpot": weighted_stats(tpot),
        "itl": weighted_stats(gap_values, gap_weights),
        "e2e_latency": weighted_stats(e2e),
    }
    for name in LATENCY_METRICS:
        _put_distribution(s, name, "_ms", distributions[name])
    per_user = weighted_stats(1000.0 / gap_values[positive], gap_weights[positive])
    _put_distribution(s, PER_USER_METRIC, "", per_user)

    if sla_ttft_ms is not None or sla_tpot_ms is not None or sla_e2e_ms is not None:
        good = [r for r in done if _is_good(r, sla_ttft_ms, sla_tpot_ms, sla_e2e_ms)]
        s["goodput_completed_requests"] = len(good)
        s["goodput_request_throughput_rps"] = len(good) / duration_s
        s["goodput_output_throughput_tok_s"] = sum(r.output_length for r in good) / duration_s
    return s


# --------------------------------------------------------------------------------------------
# Table

TABLE_TITLE = "clustersim | LLM Metrics"
TABLE_COLUMNS = ("avg", "min", "max", "p99", "p90", "p75", "std")
_COLUMN_STATS = ("mean", "min", "max", "p99", "p90", "p75", "std")
_TABLE_ROWS = (
    ("Time to First Token (ms)", "ttft", "_ms"),
    ("Time to Second Token (ms)", "ttst", "_ms"),
    ("Inter Token Latency (ms)", "itl", "_ms"),
    ("Time per Output Token (ms)", "tpot", "_ms"),
    ("Request Latency (ms)", "e2e_latency", "_ms"),
    ("Output Token Throughput Per User (tokens/sec/user)", PER_USER_METRIC, ""),
)
_SINGLE_ROWS = (
    ("Output Token Throughput (tokens/sec)", "output_throughput_tok_s"),
    ("Request Throughput (requests/sec)", "request_throughput_rps"),
    ("Request Count (requests)", "completed_requests"),
)
_TRAILER = (
    ("Prefix Cache Reused Ratio", "prefix_cache_reused_ratio"),
    ("First Admission Prefix Cache Reused Ratio", "first_admission_prefix_cache_reused_ratio"),
    ("Duration (ms)", "duration_ms"),
    ("GPU Hours", "gpu_hours"),
    ("Wall Time (ms)", "wall_time_ms"),
    ("Goodput (requests/sec)", "goodput_request_throughput_rps"),
)


def format_value(value: object) -> str:
    """`1,234.57` for floats, `1,234` for ints, `N/A` for None, NaN, missing or text."""
    if isinstance(value, bool) or value is None:
        return "N/A"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:,.2f}"
    return "N/A"


def simulated_tokens_per_wall_s(summary: Mapping[str, object], wall_ms: float) -> float:
    """Input plus output tokens of the run per wall-clock second (the CLIs' speed figure)."""
    tokens = sum(v for k in ("total_input_tokens", "total_output_tokens")
                 if isinstance(v := summary.get(k), int | float))
    return tokens / max(wall_ms / 1000.0, 1e-9)


def format_table(summary: Mapping[str, object]) -> str:
    """An AIPerf-style table of `summary` (as `build_summary` returns), no trailing newline.

    Rows: the six distributions with avg/min/max/p99/p90/p75/std, then three single-value
    rows; then `Label: value` lines (goodput only when present).
    """
    rows: list[list[str]] = []
    for label, name, suffix in _TABLE_ROWS:
        rows.append([label, *(format_value(summary.get(f"{stat}_{name}{suffix}")) for stat in _COLUMN_STATS)])
    for label, key in _SINGLE_ROWS:
        rows.append([label, format_value(summary.get(key)), *["N/A"] * (len(TABLE_COLUMNS) - 1)])
    headers = ["Metric", *TABLE_COLUMNS]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:]))
        return "│ " + " │ ".join([first, *rest]) + " │"

    def rule(left: str, mid: str, right: str) -> str:
        return left + mid.join("─" * (w + 2) for w in widths) + right

    total_width = sum(widths) + 3 * len(widths) + 1
    out = [TABLE_TITLE.center(total_width).rstrip(), rule("┏", "┳", "┓").replace("─", "━")]
    out.append(line(headers).replace("│", "┃"))
    out.append(rule("┡", "╇", "┩").replace("─", "━"))
    out.extend(line(row) for row in rows)
    out.append(rule("└", "┴", "┘"))
    for label, key in _TRAILER:
        if key in summary:
            out.append(f"{label}: {format_value(summary.get(key))}")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# JSON outputs


def _dumps(obj: object, indent: int | None) -> str:
    return json.dumps(obj, sort_keys=True, indent=indent, allow_nan=False, ensure_ascii=False)


def write_report_json(report: Mapping[str, object], path: str | Path) -> None:
    """Write `report` as JSON: sorted keys, indent 2, trailing newline, UTF-8.

    Same dict, same bytes. Raises ValueError on NaN/inf (not valid JSON).
    """
    Path(path).write_bytes((_dumps(report, 2) + "\n").encode("utf-8"))


def _opt(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def per_request_rows(records: Sequence[RequestRecord]) -> list[dict[str, object]]:
    """One dict per record with the reference's per-request keys (facts §h) that we track.

    Ordered by (arrival_time_ms, request_id); `itl_ms` is the request's TPOT; a worker id
    of -1 (never dispatched) becomes `decode_worker_idx: null`.
    """
    rows: list[dict[str, object]] = []
    for r in sorted(records, key=lambda rec: (rec.arrival_ms, rec.request_id)):
        rows.append(
            {
                "session_id": r.session_id,
                "turn_index": r.turn_index,
                "uuid": str(r.request_id),
                "arrival_time_ms": float(r.arrival_ms),
                "dispatched_at_ms": _opt(r.dispatched_ms),
                "first_admit_ms": _opt(r.first_admit_ms),
                "terminal_time_ms": _opt(r.terminal_ms),
                "first_token_ms": _opt(r.first_token_ms),
                "last_token_ms": _opt(r.last_token_ms),
                "ttft_ms": _opt(r.ttft_ms),
                "ttst_ms": _opt(r.ttst_ms),
                "e2e_latency_ms": _opt(r.e2e_latency_ms),
                "itl_ms": _opt(r.tpot_ms),
                "input_length": r.input_length,
                "requested_output_length": r.requested_output_length,
                "output_length": r.output_length,
                "reused_input_tokens": r.reused_input_tokens,
                "decode_worker_idx": r.worker_id if r.worker_id >= 0 else None,
                "dp_rank": r.dp_rank,
                "admission_count": r.admission_count,
                "readmission_count": r.readmission_count,
                "terminal_status": r.terminal_status.value,
                "routing_history": r.routing_history,
            }
        )
    return rows


def write_per_request_jsonl(records: Sequence[RequestRecord], path: str | Path) -> None:
    """One JSON object per line (sorted keys), in `per_request_rows` order."""
    text = "".join(_dumps(row, None) + "\n" for row in per_request_rows(records))
    Path(path).write_bytes(text.encode("utf-8"))
