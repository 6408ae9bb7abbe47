"""What a planner sees and says, and the registry of planners (`PLANNERS`).

A planner is driven by its host (`cluster.control.planner_host`) on the virtual clock:
`initial_tick_ms()` once, then `on_tick(snapshot)` at each tick it asked for, returning a
`Decision`: absolute targets (None: unchanged) and the next tick (None: stop). This is the
reference replay's scaling-hook shape, so a user class written for the reference plugs in
(`python` type; it gets the snapshot as the reference's dict).
Invariant: planners are deterministic functions of the snapshots they were given.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from actors.engine.events import ForwardPass
from planner.config import PythonPlannerConfig, ScriptedPlannerConfig


@dataclass(frozen=True)
class Traffic:
    """What the frontend saw in the window since the last snapshot (requests that completed)."""

    duration_s: float
    num_req: int
    avg_isl: float
    avg_osl: float
    avg_ttft_ms: float
    avg_itl_ms: float


@dataclass(frozen=True)
class EngineLoad:
    """One rank's latest load metrics, as received over the event plane (they may be late or lost)."""

    worker_id: int
    dp_rank: int
    t_ms: float
    running: int
    waiting: int
    kv_tokens: int
    max_kv_tokens: int
    last_pass: ForwardPass | None = None
    """The rank's latest forward pass as its metrics carried it (None before the first)."""
    prefill_pool: bool = False

    def as_fpm(self) -> dict[str, Any]:
        """The reference replay's FPM snapshot dict (the keys this engine model measures), with
        the load fields besides; wall_time in seconds, 0 before the first pass."""
        p = self.last_pass or ForwardPass(0.0, 0, 0, 0, 0)
        return {"worker_id": self.worker_id, "dp_rank": self.dp_rank, "wall_time": p.wall_ms / 1000.0,
                "num_prefill_requests": p.prefill_requests, "sum_prefill_tokens": p.prefill_tokens,
                "num_decode_requests": p.decode_requests, "sum_decode_kv_tokens": p.decode_kv_tokens,
                "num_queued_prefill": self.waiting, "t_ms": self.t_ms, "running": self.running,
                "waiting": self.waiting, "kv_tokens": self.kv_tokens, "max_kv_tokens": self.max_kv_tokens}


@dataclass(frozen=True)
class PoolState:
    """Worker counts of one pool (agg: the decode pool). `current` = ready + starting (not draining)."""

    ready: int
    starting: int
    draining: int
    ready_ids: tuple[int, ...] = ()

    @property
    def current(self) -> int:
        return self.ready + self.starting


@dataclass(frozen=True)
class Snapshot:
    tick: int
    now_ms: float
    decode: PoolState
    prefill: PoolState | None
    """None in agg mode (one pool)."""
    traffic: Traffic
    loads: tuple[EngineLoad, ...] = ()

    def as_reference(self) -> dict[str, Any]:
        """The reference replay's snapshot dict (the keys a scaling hook reads)."""
        p = self.prefill or PoolState(0, 0, 0)
        d = self.decode
        return {
            "tick_ordinal": self.tick, "now_ms": self.now_ms,
            "active_prefill_count": p.ready, "active_decode_count": d.ready,
            "active_prefill_ids": list(p.ready_ids), "active_decode_ids": list(d.ready_ids),
            "starting_prefill_count": p.starting, "starting_decode_count": d.starting,
            "draining_prefill_count": p.draining, "draining_decode_count": d.draining,
            "non_draining_prefill_count": p.current, "non_draining_decode_count": d.current,
            "total_prefill_count": p.current + p.draining, "total_decode_count": d.current + d.draining,
            "traffic": asdict(self.traffic) | {"ttft_count": self.traffic.num_req, "itl_count": self.traffic.num_req},
            "decode_fpm_snapshots": [x.as_fpm() for x in self.loads if not x.prefill_pool],
            "prefill_fpm_snapshots": [x.as_fpm() for x in self.loads if x.prefill_pool],
        }


@dataclass(frozen=True)
class Decision:
    target_decode: int | None
    target_prefill: int | None
    next_tick_ms: float | None
    observed: dict[str, float] = field(default_factory=dict)
    predicted: dict[str, float] = field(default_factory=dict)
    reason: str = ""


class Planner(Protocol):
    def initial_tick_ms(self) -> float: ...

    def on_tick(self, snapshot: Snapshot) -> Decision: ...


class ScriptedPlanner:
    """Applies `steps` at ticks every `tick_s`: at a tick, the latest step with at_s <= now not yet applied."""

    def __init__(self, config: ScriptedPlannerConfig, context: Any = None) -> None:
        self.config = config
        self._steps = sorted(config.steps, key=lambda s: s.at_s)
        self._next = 0

    def initial_tick_ms(self) -> float:
        return self.config.tick_s * 1000.0

    def on_tick(self, snapshot: Snapshot) -> Decision:
        due = None
        while self._next < len(self._steps) and self._steps[self._next].at_s * 1000.0 <= snapshot.now_ms + 1e-9:
            due = self._steps[self._next]
            self._next += 1
        nxt = snapshot.now_ms + self.config.tick_s * 1000.0 if self._next < len(self._steps) else None
        if due is None:
            return Decision(None, None, nxt, reason="no_step")
        decode = due.workers if due.workers is not None else due.decode
        return Decision(decode, due.prefill, nxt, reason="scripted")


class PythonPlanner:
    """A user's class (`module:Class`, built with `args`) with the reference hook's methods; the
    module is looked up on the import path, then in the current directory (as `python -m` would)."""

    def __init__(self, config: PythonPlannerConfig, context: Any = None) -> None:
        module, _, name = config.class_.partition(":")
        try:
            cls = getattr(_import(module), name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"planner class {config.class_}: {exc}") from None
        self.impl = cls(**config.args)
        for method in ("initial_tick_ms", "on_tick"):
            if not callable(getattr(self.impl, method, None)):
                raise ValueError(f"planner class {config.class_} has no {method}()")

    def initial_tick_ms(self) -> float:
        return float(self.impl.initial_tick_ms())

    def on_tick(self, snapshot: Snapshot) -> Decision:
        out = self.impl.on_tick(snapshot.as_reference())
        if not isinstance(out, dict):
            raise ValueError(f"planner on_tick returned {type(out).__name__}, not a dict")

        def opt(key: str) -> int | None:
            v = out.get(key)
            return None if v is None else int(v)
        nxt = out.get("next_tick_ms")
        return Decision(opt("target_decode"), opt("target_prefill"), None if nxt is None else float(nxt),
                        reason=str(out.get("reason", "python")))


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        cwd = os.getcwd()
        if cwd in sys.path:
            raise
        sys.path.insert(0, cwd)
        try:
            return importlib.import_module(module)
        finally:
            sys.path.remove(cwd)


def _sla(config: Any, context: Any) -> Planner:
    from planner.sla import SlaPlanner

    return SlaPlanner(config, context)


PLANNERS: dict[str, Callable[[Any, Any], Planner]] = {
    "sla": _sla, "scripted": ScriptedPlanner, "python": PythonPlanner,
}
"""Planner config `type` -> constructor (config, context: the host's `PlannerContext`)."""
