"""The AIPerf-style table printed after a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from cluster.report.summary import PER_USER_METRIC

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
    ("Duration (ms, simulated)", "duration_ms"),
    ("GPU Hours", "gpu_hours"),
    ("Wall Time (ms, wall clock)", "wall_time_ms"),
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
