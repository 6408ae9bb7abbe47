"""A user planner for the `python` planner type (tests): the reference scaling hook's shape."""

from __future__ import annotations

from typing import Any


class StepTo:
    """At the first tick at or after `at_ms`, ask for `workers`; record the snapshots seen."""

    seen: list[dict[str, Any]] = []

    def __init__(self, at_ms: float, workers: int, tick_ms: float = 1000.0) -> None:
        self.at_ms = at_ms
        self.workers = workers
        self.tick_ms = tick_ms
        self.done = False
        StepTo.seen = []

    def initial_tick_ms(self) -> float:
        return self.tick_ms

    def on_tick(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        StepTo.seen.append(snapshot)
        target = None
        if not self.done and snapshot["now_ms"] >= self.at_ms:
            target, self.done = self.workers, True
        return {"target_prefill": None, "target_decode": target, "next_tick_ms": snapshot["now_ms"] + self.tick_ms}
