"""The virtual-time event loop (DESIGN §3).

Events are ordered by `(t_ms, priority, key, seq)`:
- `priority` orders what happens at one instant (see `Priority`);
- `key` is a stable, component-chosen tie-break (a rank's global index, a
  request's dispatch number). It makes same-instant order independent of *when*
  an event was scheduled, which differs between macro-stepped and pass-by-pass
  execution; without it, two ranks finishing at the same instant could be
  processed in different orders by the two modes;
- `seq` is the loop's insertion counter, the final tie-break.
"""

from __future__ import annotations

import heapq
import itertools
from enum import IntEnum
from typing import Any, Callable


class Priority(IntEnum):
    """Same-instant order. Lower runs first."""

    CONTROL = 0
    """Faults, timers and control-plane actions: they see the state before anything else at t."""
    FINISH = 1
    """A rank's pass (or decode run) ends: tokens and completions are emitted."""
    DELIVER = 2
    """Event-plane messages reach components: routed requests, tokens, KV event batches, metrics."""
    ARRIVE = 3
    """Workload arrivals reach the frontend, after every message of this instant, so a routing
    decision at t sees every KV event and load signal delivered at t."""
    START = 4
    """A rank forms its next pass, after every message of this instant has arrived."""


Handler = Callable[[float, Any], None]


class EventLoop:
    """A deterministic discrete-event loop on simulated milliseconds."""

    def __init__(self) -> None:
        self._queue: list[tuple[float, int, int, int, Handler, Any]] = []
        self._seq = itertools.count()
        self.now_ms = 0.0
        self.num_events = 0
        self.stopped = False
        """Set by `request_stop`: `run` returns at the next event boundary, leaving the rest queued."""

    def schedule(self, t_ms: float, priority: Priority, key: int, handler: Handler, arg: Any = None) -> None:
        if t_ms < self.now_ms:
            raise ValueError(f"cannot schedule at {t_ms} ms, before now ({self.now_ms} ms)")
        heapq.heappush(self._queue, (t_ms, int(priority), key, next(self._seq), handler, arg))

    def peek_ms(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def request_stop(self) -> None:
        """Make `run` return before its next event (a host stopping a run early, e.g. on Ctrl-C).
        Safe to call from a signal handler: it only sets a flag, checked between events."""
        self.stopped = True

    def run(self, until_ms: float | None = None) -> None:
        """Process events in order until the queue is empty (or the next one is after `until_ms`,
        or `request_stop` was called)."""
        queue = self._queue
        pop = heapq.heappop
        while queue:
            if (until_ms is not None and queue[0][0] > until_ms) or self.stopped:
                break
            t_ms, _, _, _, handler, arg = pop(queue)
            self.now_ms = t_ms
            self.num_events += 1
            handler(t_ms, arg)

    def run_before(self, horizon_ms: float) -> None:
        """Process every event with `t_ms < horizon_ms` (a conservative window's exclusive end).

        Events scheduled while running are processed too when they fall before the horizon.
        Afterwards `now_ms` is the time of the last event processed (the loop never invents
        time it did not simulate).
        """
        queue = self._queue
        pop = heapq.heappop
        while queue and queue[0][0] < horizon_ms:
            t_ms, _, _, _, handler, arg = pop(queue)
            self.now_ms = t_ms
            self.num_events += 1
            handler(t_ms, arg)

    def __len__(self) -> int:
        """Events still queued (including superseded ones their handlers will ignore)."""
        return len(self._queue)
