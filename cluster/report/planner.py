"""The report's `planner` section: what the planner decided and what it cost.

- `config`: the planner config as given (defaults filled);
- `decisions`: every tick: time, observed and predicted load, current counts, targets, what was
  asked of the fleet, and (joined by the cause `planner.<tick>`) what came of it: workers placed
  (with the time each became ready) or `capacity_exhausted`, workers drained and stopped;
- `replicas`: per deployment, a step series `[t_ms, ready, starting, draining]` at every change;
- `gpu_hours`: per deployment, its workers' GPUs over their lifetimes (placement to stop, startup
  included), clipped to the run, as the summary's `gpu_hours`;
- `sla`: the TTFT and ITL targets (the SLA planner's, else the run's --sla-ttft-ms/--sla-tpot-ms)
  and `attainment`: the share of requests that completed meeting both (None without targets);
  `goodput_rps`: those requests per second of the run.
Deterministic: built from the fleet's lives and actions and the records only.
"""

from __future__ import annotations

import math
from typing import Any

from actors.engine.records import RequestRecord, TerminalStatus
from cluster.control.fleet import Fleet
from cluster.control.planner_host import PlannerHost
from cluster.report.summary import WorkerLifetime


def _outcomes(fleet: Fleet) -> dict[str, list[dict[str, Any]]]:
    """Fleet actions by cause, with the ready / stop times of the workers they touched."""
    ready = {str(a["worker"]): a.get("ready_ms") for a in fleet.actions if a["kind"] == "worker_ready"}
    stopped = {str(a["worker"]): a.get("stopped_ms") for a in fleet.actions if a["kind"] == "worker_stopped"}
    out: dict[str, list[dict[str, Any]]] = {}
    for a in fleet.actions:
        cause = a.get("cause")
        if not isinstance(cause, str) or not cause.startswith("planner."):
            continue
        entry = {k: v for k, v in a.items() if k != "cause"}
        w = a.get("worker")
        if a["kind"] == "add_worker" and w is not None:
            entry["ready_ms"] = ready.get(str(w))
        if a["kind"] == "remove_worker" and w is not None:
            entry["stopped_ms"] = stopped.get(str(w))
        out.setdefault(cause, []).append(entry)
    return out


def _replicas(fleet: Fleet, duration_ms: float) -> dict[str, list[list[float]]]:
    """Per deployment, [t_ms, ready, starting, draining] at every change up to the run's end."""
    drain_at = {str(a["worker"]): float(str(a["at_ms"])) for a in fleet.actions
                if a["kind"] == "remove_worker" and a.get("outcome") == "draining"}
    inf = math.inf
    spans: dict[str, list[tuple[float, float, float, float]]] = {}  # started, ready, drain, stop
    for life in fleet.lives.values():
        stop = life.stopped_ms if life.stopped_ms is not None else inf
        ready = life.ready_ms if life.ready_ms is not None else stop
        drain = min(drain_at.get(life.info.name, stop), stop)
        spans.setdefault(life.info.deployment, []).append((life.started_ms, min(ready, drain), drain, stop))
    series: dict[str, list[list[float]]] = {}
    for d, ws in sorted(spans.items()):
        times = sorted({t for w in ws for t in w if t <= duration_ms} | {0.0})
        out: list[list[float]] = []
        for t in times:
            row = [t, float(sum(1 for s0, r, dr, _ in ws if r <= t < dr)),
                   float(sum(1 for s0, r, _, _ in ws if s0 <= t < r)),
                   float(sum(1 for _, _, dr, st in ws if dr <= t < st))]
            if not out or out[-1][1:] != row[1:]:
                out.append(row)
        series[d] = out
    return series


def planner_section(planner: PlannerHost, fleet: Fleet, records: list[RequestRecord], duration_ms: float,
                    sla_ttft_ms: float | None, sla_tpot_ms: float | None) -> dict[str, Any]:
    cfg = planner.config
    ttft = getattr(cfg, "ttft_ms", None) if cfg.type == "sla" else sla_ttft_ms
    itl = getattr(cfg, "itl_ms", None) if cfg.type == "sla" else sla_tpot_ms
    outcomes = _outcomes(fleet)
    decisions: list[dict[str, Any]] = [{"tick": d.tick, "at_ms": d.at_ms, "reason": d.reason, "observed": d.observed,
                  "predicted": d.predicted, "current": d.current, "targets": d.targets, "applied": d.applied,
                  "outcomes": outcomes.get(d.cause, [])} for d in planner.decisions]
    hours: dict[str, list[float]] = {}
    for life in fleet.lives.values():
        span = WorkerLifetime(life.started_ms, life.stopped_ms, life.info.num_gpus).span_ms(duration_ms)
        hours.setdefault(life.info.deployment, []).append(span * life.info.num_gpus / 3_600_000.0)
    done = [r for r in records if r.terminal_status is TerminalStatus.COMPLETED and r.first_token_ms is not None]
    attainment: float | None = None
    goodput: float | None = None
    if ttft is not None or itl is not None:
        def good(r: RequestRecord) -> bool:
            assert r.first_token_ms is not None
            osl = r.engine.output_length
            r_itl = ((r.last_token_ms or r.first_token_ms) - r.first_token_ms) / (osl - 1) if osl > 1 else 0.0
            return ((ttft is None or r.first_token_ms - r.arrival_ms <= ttft) and (itl is None or r_itl <= itl))
        n_good = sum(1 for r in done if good(r))
        attainment = n_good / len(records) if records else None
        goodput = n_good / max(duration_ms / 1000.0, 1e-9)
    exhausted = sum(1 for d in decisions for o in d["outcomes"] if o.get("outcome") == "capacity_exhausted")
    return {
        "config": cfg.model_dump(mode="json", by_alias=True),
        "num_decisions": len(decisions),
        "capacity_exhausted": exhausted,
        "decisions": decisions,
        "replicas": _replicas(fleet, duration_ms),
        "gpu_hours": {d: math.fsum(v) for d, v in sorted(hours.items())},
        "sla": {"ttft_ms": ttft, "itl_ms": itl, "attainment": attainment, "goodput_rps": goodput},
    }
