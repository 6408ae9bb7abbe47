"""Run summary: the reference replay's keys (facts §h) and weighted order statistics.

Definitions (facts §h, verified against the reference's per-request data):
- Latency statistics (TTFT, TTST, TPOT, e2e) use COMPLETED requests only; token totals,
  throughputs and `first_admission_prefix_cache_reused_ratio` too.
- `duration_ms` is the last completion time (arrivals start at 0); throughputs divide by it.
- ITL is every inter-token gap of the run (the `GapLog`, weighted); the per-user output
  throughput distribution is 1000/gap for every gap > 0 (so its min is 1000/max gap).
- pXX = sorted[round(XX/100 * (n-1))], rounding half away from zero (median = p50 = sorted[n//2]);
  measured against the reference on 215 percentiles of n = 3..133 (facts §h's nearest rank
  ceil(q*n)-1 disagrees with it on 1 in 5); std is the population std; an empty distribution gives None (JSON null) for every stat.
Weighted order statistics never expand weights: values are sorted once and ranks are
found with `searchsorted` on the cumulative weights. All outputs are plain Python
int/float/str/None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from actors.engine.records import EngineRecord, GapLog, RequestRecord, TerminalStatus

SummaryValue = float | int | str | None
Summary = dict[str, SummaryValue]

PERCENTILES = (75, 90, 95, 99)
LATENCY_METRICS = ("ttft", "ttst", "tpot", "itl", "e2e_latency")
PER_USER_METRIC = "output_token_throughput_per_user"
STAT_NAMES = ("mean", "min", "max", "median", "p75", "p90", "p95", "p99", "std")


def _rank_index(n: int, percent: int) -> int:
    """0-based index of the `percent`-th percentile of n sorted values, as the reference computes it:
    q*(n-1) in f64 (q = percent/100), rounded half away from zero (Rust's `f64::round`)."""
    x = percent / 100 * (n - 1)
    k = math.floor(x)
    return int(k + 1 if x - k >= 0.5 else k)


def weighted_stats(
    values: npt.ArrayLike, weights: npt.ArrayLike | None = None
) -> dict[str, float | None]:
    """mean/min/max/median/p75/p90/p95/p99/std of `values`, each repeated `weights` times.

    Equal to the unweighted statistics of the expanded array (order statistics exactly,
    mean and std up to float rounding), without building it. Zero weights are allowed.
    Returns None for every statistic when the total weight is 0. The same (values,
    weights) arrays always give the same floats, on any machine and numpy build; `GapLog.arrays()` is canonical, so ITL
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

    # Exact sums (math.fsum) of exactly rounded products: a BLAS dot product's result depends on
    # the numpy build and the CPU (its kernels sum in different orders), and reports must not.
    wf = w.astype(np.float64)
    mean = math.fsum((v * wf).tolist()) / n
    std = math.sqrt(max(0.0, math.fsum((wf * (v - mean) ** 2).tolist()) / n))
    out: dict[str, float | None] = {"mean": mean, "min": at(0), "max": at(n - 1), "median": at(_rank_index(n, 50))}
    for p in PERCENTILES:
        out[f"p{p}"] = at(_rank_index(n, p))
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


@dataclass(frozen=True, slots=True)
class WorkerLifetime:
    """When a worker held its GPUs: from `started_ms` (placement) to `stopped_ms` (None: to the end)."""

    started_ms: float
    stopped_ms: float | None
    num_gpus: int
    prefill: bool = False
    """A prefill worker (disaggregated serving): charged to `prefill_worker_seconds`; every other
    worker (decode or aggregated) to `decode_worker_seconds`, as the reference reports."""

    def span_ms(self, duration_ms: float) -> float:
        """The part of the lifetime inside [0, duration]."""
        stop = self.stopped_ms if self.stopped_ms is not None else duration_ms
        return max(0.0, min(stop, duration_ms) - min(self.started_ms, duration_ms))


def _prompt_engine(r: RequestRecord) -> EngineRecord:
    """The engine record of the rank that computed the prompt (the prefill rank's when disaggregated)."""
    return r.handoff.prefill if r.handoff is not None else r.engine


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
    lifetimes: Sequence[WorkerLifetime] | None = None,
) -> Summary:
    """The reference replay's summary dict (aggregated serving, or a prefill and a decode pool).

    `prefix_cache_reused_ratio` is Σ reused_tokens_total / Σ admitted_tokens_total over
    every admission of every record (readmissions included); the first-admission ratio
    is Σ reused_input_tokens / Σ input_length over completed requests. Workers are charged
    for their lifetimes (`lifetimes`: when each started, stopped (None: still up) and how many
    GPUs it held), clipped to [0, duration]: worker seconds = Σ lifetime, gpu_hours =
    Σ lifetime × gpus / 3600 s (exact sums, `math.fsum`). Without `lifetimes`, a fixed fleet
    of `num_workers` workers of `gpus_per_worker` GPUs lives for the whole duration.
    Prefill workers' lifetimes are `prefill_worker_seconds`, every other worker's `decode_worker_seconds`;
    a disaggregated request's prefix-cache figures are its prefill rank's (it computed the prompt).
    Goodput keys appear only when an `sla_*` bound is given.
    """
    done = _completed(records)
    total_in = sum(r.input_length for r in done)
    total_out = sum(r.output_length for r in done)
    duration_ms = max((r.terminal_ms for r in done if r.terminal_ms is not None), default=0.0)
    duration_s = max(duration_ms / 1000.0, 1e-9)
    if lifetimes is None:
        lifetimes = [WorkerLifetime(0.0, None, gpus_per_worker)] * num_workers
    spans = [(w.span_ms(duration_ms), w.num_gpus) for w in lifetimes]
    decode_worker_seconds = math.fsum(ms for (ms, _), w in zip(spans, lifetimes) if not w.prefill) / 1000.0
    prefill_worker_seconds = math.fsum(ms for (ms, _), w in zip(spans, lifetimes) if w.prefill) / 1000.0
    prefill_gpus = max((w.num_gpus for w in lifetimes if w.prefill), default=0)
    decode_gpus = max((w.num_gpus for w in lifetimes if not w.prefill), default=gpus_per_worker)
    gpu_hours = math.fsum(ms * gpus for ms, gpus in spans) / 3_600_000.0
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
        "prefill_worker_seconds": prefill_worker_seconds,
        "decode_worker_seconds": decode_worker_seconds,
        "prefill_gpus_per_worker": int(prefill_gpus),
        "decode_gpus_per_worker": int(decode_gpus if any(w.prefill for w in lifetimes) else gpus_per_worker),
        "gpu_hours": gpu_hours,
        "power_w": None,
        "power_coverage": None,  # the reference reports null when no power model is configured
        "processed_tokens": processed,
        "processed_tokens_per_s": per_wall_s(processed),
        "processed_output_tokens_per_s": per_wall_s(total_out),
        "prefix_cache_reused_ratio": _ratio(
            sum(_prompt_engine(r).reused_tokens_total for r in records),
            sum(_prompt_engine(r).admitted_tokens_total for r in records)
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
