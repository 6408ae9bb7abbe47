"""`EngineRank`: all that hosts see of an engine rank (one DP rank of one worker).

A host drives a rank on its event loop with these calls, each taking the simulated `now_ms`:

- `submit(request, now)`: queue a request (a decode run in flight is cut after the pass in
  progress, so the request joins the next pass). Returns a `Finished` rejection instead when
  the request can never run on this rank.
- `begin(now)`: when nothing is in flight, form the next pass (or macro-stepped decode run), if
  there is work. Call it after every message of the instant has arrived (the loop's START
  priority).
- `advance(now)`: at `next_due_ms()` (the loop's FINISH priority): apply what is due, i.e. a
  publish point inside a decode run or the end of the pass or run in flight.
- `interrupt(now)`: the rank's speed changed (busy co-tenants): cut a decode run after the pass
  in progress, so later passes are timed anew.
- `kill(now)`: the rank dies; every request on it fails.
- `release_source(request_id, now)`: a prefill rank's handoff transfer ended (disaggregated serving).
A host drains a rank itself (it stops sending, and the rank is done once `is_idle`): a rank
cannot know what is still on its way to it.
`begin`, `advance` and `kill` hand back a `RankOutput`: first tokens, finished requests, the KV
events stamped since the last output, and whether the load metrics changed. Nothing else of a
rank (queues, KV cache, decode runs) is visible outside `actors/engine/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from actors.engine.events import KvEvent, LoadMetrics
from actors.engine.records import EngineRecord, FailureReason, TerminalStatus
from actors.engine.request import RankRequest


@dataclass(frozen=True, slots=True)
class FirstToken:
    """A request's first token left the engine at `t_ms`."""

    request_id: int
    t_ms: float


@dataclass(frozen=True, slots=True)
class Finished:
    """A request ended on the rank: completed, rejected or failed, with the engine's record."""

    request_id: int
    status: TerminalStatus
    record: EngineRecord
    reason: FailureReason | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Handoff:
    """A prefill rank computed a request's prompt at `t_ms` and holds its KV as a transfer source
    (disaggregated serving); `record` is the prefill rank's record of it. Not client-visible."""

    request_id: int
    t_ms: float
    record: EngineRecord


@dataclass(slots=True)
class RankOutput:
    """What happened during one call."""

    first_tokens: list[FirstToken] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    kv_events: list[KvEvent] = field(default_factory=list)
    """Events stamped since the last output, in event-id order (stamps never decrease)."""
    load_changed: bool = False
    """A pass ended that emitted a first token, finished a request, admitted or preempted."""
    handoffs: list[Handoff] = field(default_factory=list)
    """Prompts a prefill rank finished and now holds as transfer sources (`release_source` frees them)."""


@dataclass(frozen=True, slots=True)
class RankCounters:
    """Engine counters of one rank, for reports."""

    num_passes: int
    preemptions_total: int
    committed_prefill_tokens: int
    num_admissions: int


class EngineRank(Protocol):
    """See the module docstring."""

    @property
    def worker_id(self) -> int: ...

    @property
    def dp_rank(self) -> int: ...

    @property
    def busy(self) -> bool:
        """A pass or decode run is in flight."""
        ...

    @property
    def busy_until_ms(self) -> float | None:
        """When the pass or decode run in flight ends (None: nothing in flight)."""
        ...

    @property
    def is_idle(self) -> bool:
        """Nothing queued, running or in flight."""
        ...

    def submit(self, request: RankRequest, now_ms: float) -> Finished | None: ...

    def begin(self, now_ms: float) -> RankOutput: ...

    def next_due_ms(self) -> float | None:
        """When `advance` must be called next (None: nothing in flight)."""
        ...

    def advance(self, now_ms: float) -> RankOutput: ...

    def interrupt(self, now_ms: float) -> None: ...

    def kill(self, now_ms: float, reason: FailureReason, detail: str) -> RankOutput: ...

    def take_kv_events(self) -> list[KvEvent]:
        """Stamped events not yet handed out (before a snapshot, or at the end of a run)."""
        ...

    def load_metrics(self, now_ms: float) -> LoadMetrics: ...

    def kv_snapshot(self) -> tuple[tuple[int, ...], int]:
        """(every cached block hash, the next KV event id): what a full resync installs."""
        ...

    def counters(self) -> RankCounters: ...

    def release_source(self, request_id: int, now_ms: float) -> None:
        """A prefill rank's transfer of this request's KV ended: free the source blocks (no-op when
        the rank no longer holds them)."""
        ...

    def cached_prompt_tokens(self, request: RankRequest) -> int:
        """Prompt tokens of `request` this rank's prefix cache would serve now (what a
        `destination_missing` transfer need not send). Changes nothing."""
        ...
