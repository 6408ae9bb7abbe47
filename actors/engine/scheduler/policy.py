"""Scheduling policies behind one interface, chosen by the engine's `backend` (a registry).

A policy decides what one pass schedules on a `RankState` (admission, preemption, chunking)
and whether admission is blocked for a whole decode run (what macro-stepping needs). The
rank core (`actors.engine.scheduler.core`) owns everything else: the pass in flight, decode
runs, token emission and KV event stamping. vLLM is the policy today; an SGLang policy
registers here under its backend name.
"""

from __future__ import annotations

from typing import Protocol

from actors.engine.records import FailureReason
from actors.engine.scheduler.state import RankState, Scheduled
from actors.engine.scheduler.vllm import VllmPolicy


class SchedulerPolicy(Protocol):
    """What the rank core asks of a scheduling policy."""

    def refuse(self, st: RankState, prompt_len: int) -> tuple[FailureReason, str] | None:
        """Why a prompt can never run on this rank (checked on arrival), or None."""
        ...

    def schedule(self, st: RankState, now: float) -> tuple[list[Scheduled], bool]:
        """The pass at `now`, and whether to schedule again at the same instant when it is empty."""
        ...

    def admission_blocked(self, st: RankState, budget: int) -> bool:
        """Whether admission stays blocked for a decode run that leaves `budget` tokens free."""
        ...


POLICIES: dict[str, type[SchedulerPolicy]] = {"vllm": VllmPolicy}
"""Backend name -> policy class."""


def policy_for(backend: str) -> SchedulerPolicy:
    try:
        return POLICIES[backend]()
    except KeyError:
        raise ValueError(f"no scheduling policy for backend {backend!r}; known: {', '.join(sorted(POLICIES))}") from None
