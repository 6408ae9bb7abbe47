"""Time-sliced co-tenants: ranks on shares of one physical card slow each other while busy.

Ranks with the same `cotenant_group` share a card. Whenever a rank becomes busy or idle, the
timing models of the other members are told which co-tenants are busy now (their core limits)
and their decode runs are cut after the pass in progress, so later passes use the new speed.
A pass keeps the speed it started with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from actors.engine.protocol import EngineRank


@runtime_checkable
class ContendedTiming(Protocol):
    """A timing model whose speed depends on busy co-tenants of its physical card."""

    def set_busy_cotenants(self, limits: Sequence[float]) -> None:
        """Core limits of the other time-sliced vGPUs on the card that are busy now."""
        ...


class _Member:
    __slots__ = ("key", "rank", "timing", "core_limit", "busy")

    def __init__(self, key: int, rank: EngineRank, timing: ContendedTiming, core_limit: float) -> None:
        self.key = key
        self.rank = rank
        self.timing = timing
        self.core_limit = core_limit
        self.busy = False


class Contention:
    """Co-tenant groups of one host. `rearm(key, now)` is called for each re-timed rank."""

    def __init__(self, rearm: Callable[[int, float], None]) -> None:
        self._groups: dict[int, list[_Member]] = {}
        self._member: dict[int, tuple[_Member, list[_Member]]] = {}
        self._rearm = rearm

    def __bool__(self) -> bool:
        return bool(self._member)

    def join(self, key: int, group: int, rank: EngineRank, timing: object, core_limit: float) -> None:
        """Rank `key` shares card `group` with the group's other members.

        Raises:
            ValueError: its timing model ignores contention.
        """
        if not isinstance(timing, ContendedTiming):
            raise ValueError(f"rank {key} shares a card but its timing model ignores contention")
        members = self._groups.setdefault(group, [])
        member = _Member(key, rank, timing, core_limit)
        members.append(member)
        self._member[key] = (member, members)

    def update(self, key: int, now: float) -> None:
        """Rank `key` may have become busy or idle: re-time its co-tenants if so."""
        entry = self._member.get(key)
        if entry is None:
            return
        member, members = entry
        busy = member.rank.busy
        if busy == member.busy:
            return
        member.busy = busy
        for other in members:
            if other is member:
                continue
            other.timing.set_busy_cotenants([m.core_limit for m in members if m is not other and m.busy])
            other.rank.interrupt(now)
            self._rearm(other.key, now)
