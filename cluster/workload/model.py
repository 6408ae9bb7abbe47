"""Workloads as sessions of turns.

A `Workload` is an immutable, sorted list of `Session`s; a session is one or more
`Turn`s (requests). The first turn arrives at `Session.start_ms`; turn k > 0 is sent
`Turn.delay_ms` after turn k-1 completes (closed loop per session), so only first-turn
arrivals are known before the run. Requests carry no token strings: a turn has
`input_length`, `output_length` and `hash_ids`, one id per `trace_block_size` tokens
(facts §h: hash id h stands for trace_block_size copies of token id u32(h)).

Invariants (checked in `__post_init__`):
- sessions are sorted by `start_ms`; ties keep file (or creation) order;
- `trace_order`, when given, is a permutation of the session indices: the sessions in file
  order (first appearance), which closed-loop slots take sessions in and same-instant
  arrivals are ordered by (the reference's session index); None = `sessions` order;
- every session has at least one turn and its first turn has `delay_ms == 0.0`;
- `turn.input_length <= len(turn.hash_ids) * trace_block_size`;
- all times are finite, non-negative simulated milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property


class WorkloadError(ValueError):
    """A workload could not be loaded. The message is one line naming the file and line."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One request of a session.

    `hash_ids` has one id per trace block; `input_length` never exceeds
    `len(hash_ids) * trace_block_size`. `delay_ms` is the think time between the
    completion of the previous turn and this turn's arrival; 0.0 for the first turn.
    """

    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    delay_ms: float


@dataclass(frozen=True, slots=True)
class Session:
    """A conversation: `turns[0]` arrives at `start_ms`, the rest follow completions."""

    session_id: str
    start_ms: float
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Workload:
    """An immutable workload. See the module docstring for the invariants."""

    sessions: tuple[Session, ...]
    trace_block_size: int
    trace_order: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.trace_block_size <= 0:
            raise ValueError(f"trace_block_size must be positive, got {self.trace_block_size}")
        if self.trace_order is not None and sorted(self.trace_order) != list(range(len(self.sessions))):
            raise ValueError("trace_order is not a permutation of the sessions")
        previous = -math.inf
        for session in self.sessions:
            if not session.turns:
                raise ValueError(f"session {session.session_id!r} has no turns")
            if not (math.isfinite(session.start_ms) and session.start_ms >= 0.0):
                raise ValueError(f"session {session.session_id!r} has start_ms {session.start_ms}")
            if session.start_ms < previous:
                raise ValueError(f"sessions are not sorted by start_ms at {session.session_id!r}")
            previous = session.start_ms
            if session.turns[0].delay_ms != 0.0:
                raise ValueError(f"first turn of session {session.session_id!r} has a delay")
            for turn in session.turns:
                if turn.input_length > len(turn.hash_ids) * self.trace_block_size:
                    raise ValueError(f"session {session.session_id!r}: input_length exceeds its hash_ids")
                if not (math.isfinite(turn.delay_ms) and turn.delay_ms >= 0.0):
                    raise ValueError(f"session {session.session_id!r}: bad delay_ms {turn.delay_ms}")

    @property
    def num_sessions(self) -> int:
        return len(self.sessions)

    @cached_property
    def num_requests(self) -> int:
        """Number of turns over all sessions."""
        return sum(len(s.turns) for s in self.sessions)

    @cached_property
    def total_input_tokens(self) -> int:
        return sum(t.input_length for s in self.sessions for t in s.turns)

    @cached_property
    def total_output_tokens(self) -> int:
        return sum(t.output_length for s in self.sessions for t in s.turns)

    def scaled(self, arrival_speedup_ratio: float) -> "Workload":
        """The same workload with session starts and inter-turn delays divided by the ratio."""
        if not arrival_speedup_ratio > 0:
            raise ValueError(f"arrival_speedup_ratio must be positive, got {arrival_speedup_ratio}")
        r = arrival_speedup_ratio
        return Workload(
            sessions=tuple(
                Session(s.session_id, s.start_ms / r,
                        tuple(Turn(t.input_length, t.output_length, t.hash_ids, t.delay_ms / r) for t in s.turns))
                for s in self.sessions
            ),
            trace_block_size=self.trace_block_size,
            trace_order=self.trace_order,
        )

    def first(self, n: int) -> "Workload":
        """The first `n` sessions (by start), keeping their file order."""
        order = None if self.trace_order is None else tuple(i for i in self.trace_order if i < n)
        return Workload(self.sessions[:n], self.trace_block_size, order)

    @cached_property
    def session_order(self) -> tuple[int, ...]:
        """Session indices in file order (`trace_order`, else `sessions` order)."""
        return self.trace_order if self.trace_order is not None else tuple(range(len(self.sessions)))

    @property
    def last_start_ms(self) -> float:
        """Arrival of the last session's first turn (0.0 for an empty workload)."""
        return self.sessions[-1].start_ms if self.sessions else 0.0
