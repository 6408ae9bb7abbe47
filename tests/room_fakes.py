"""Fakes shared by the room tests: a scripted engine rank, a recording event plane and a timing model that
records the co-tenant limits it is given. Each is duck-typed to the protocol its room uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

from actors.engine.events import KvEvent, KvStored, LoadMetrics
from actors.engine.protocol import Finished, FirstToken, RankCounters, RankOutput
from actors.engine.records import EngineRecord, FailureReason, TerminalStatus
from actors.engine.request import RankRequest
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import Message, Topic

M = TypeVar("M")


class FakeRank:
    """A scripted `EngineRank`: `begin` starts one pass of `pass_ms` over everything waiting, `advance` ends
    it (each request gets its first token and completes); a submit or interrupt while busy cuts the pass to
    `cut_ms` when set. Every call is logged as (call, now, detail)."""

    def __init__(self, worker_id: int, dp_rank: int, pass_ms: float = 10.0) -> None:
        self._ids, self.pass_ms = (worker_id, dp_rank), pass_ms
        self.cut_ms: float | None = None
        self.refuse: set[int] = set()
        self.log: list[tuple[str, float, object]] = []
        self.waiting: list[int] = []
        self.running: list[int] = []
        self.end: float | None = None
        self.kv_at_advance: list[KvEvent] = []
        self.kv_at_kill: list[KvEvent] = []
        self.stamped: list[KvEvent] = []
        self.load_changed = True
        self.snapshot: tuple[tuple[int, ...], int] = ((), 0)
        self.build_args: dict[str, Any] = {}

    worker_id = property(lambda self: self._ids[0])
    dp_rank = property(lambda self: self._ids[1])
    busy = property(lambda self: self.end is not None)
    busy_until_ms = property(lambda self: self.end)
    is_idle = property(lambda self: not self.waiting and not self.running and self.end is None)

    def next_due_ms(self) -> float | None:
        return self.end

    def submit(self, request: RankRequest, now_ms: float) -> Finished | None:
        self.log.append(("submit", now_ms, request.request_id))
        if request.request_id in self.refuse:
            return Finished(request.request_id, TerminalStatus.REJECTED, EngineRecord(end_ms=now_ms),
                            FailureReason.REJECTED_PROMPT_TOO_LONG, "too long")
        self.waiting.append(request.request_id)
        self._cut()
        return None

    def _cut(self) -> None:
        if self.end is not None and self.cut_ms is not None:
            self.end = self.cut_ms

    def interrupt(self, now_ms: float) -> None:
        self.log.append(("interrupt", now_ms, None))
        self._cut()

    def begin(self, now_ms: float) -> RankOutput:
        self.log.append(("begin", now_ms, None))
        if self.waiting:
            self.running, self.waiting, self.end = self.waiting, [], now_ms + self.pass_ms
        return RankOutput()

    def advance(self, now_ms: float) -> RankOutput:
        self.log.append(("advance", now_ms, None))
        done, self.running, self.end = self.running, [], None
        kv, self.kv_at_advance = self.kv_at_advance, []
        return RankOutput([FirstToken(r, now_ms) for r in done],
                          [Finished(r, TerminalStatus.COMPLETED, EngineRecord(1, end_ms=now_ms)) for r in done],
                          kv, self.load_changed)

    def kill(self, now_ms: float, reason: FailureReason, detail: str) -> RankOutput:
        self.log.append(("kill", now_ms, reason))
        lost, self.running, self.waiting, self.end = self.running + self.waiting, [], [], None
        return RankOutput(finished=[Finished(r, TerminalStatus.FAILED, EngineRecord(end_ms=now_ms), reason, detail)
                                    for r in lost], kv_events=self.kv_at_kill)

    def take_kv_events(self) -> list[KvEvent]:
        out, self.stamped = self.stamped, []
        return out

    def load_metrics(self, now_ms: float) -> LoadMetrics:
        return LoadMetrics(now_ms, *self._ids, len(self.running), 0, 100, len(self.running), len(self.waiting), 0)

    def kv_snapshot(self) -> tuple[tuple[int, ...], int]:
        return self.snapshot

    def counters(self) -> RankCounters:
        return RankCounters(len(self.calls("advance")), 0, 0, 0)

    def calls(self, name: str) -> list[float]:
        return [t for c, t, _ in self.log if c == name]


class FakePlane:
    """Records `send` and `publish` calls as (topic, src, dst or None, msg, now)."""

    def __init__(self) -> None:
        self.node_of: dict[int, str] = {}
        self.out: list[tuple[Topic, int, int | None, Message, float]] = []

    def send(self, topic: Topic, src: int, dst: int, msg: Message, now_ms: float) -> None:
        self.out.append((topic, src, dst, msg, now_ms))

    def publish(self, topic: Topic, src: int, msg: Message, now_ms: float) -> None:
        self.out.append((topic, src, None, msg, now_ms))

    def msgs(self, kind: type[M]) -> list[tuple[float, M]]:
        return [(now, m) for _, _, _, m, now in self.out if isinstance(m, kind)]

    def timeline(self) -> list[tuple[float, Message]]:
        return [(now, m) for _, _, _, m, now in self.out]


def plane_of(p: FakePlane) -> PlaneEndpoint:
    return cast(PlaneEndpoint, p)  # duck-typed: send(), publish() and node_of are all the rooms use


class FakeTiming:
    def __init__(self) -> None:
        self.limits: list[list[float]] = []

    def set_busy_cotenants(self, limits: Sequence[float]) -> None:
        self.limits.append(list(limits))


def event(t: float, eid: int) -> KvEvent:
    """A KV stored event of rank (0, 0) with id `eid`, block hash 100 + eid."""
    return KvEvent(t, 0, 0, eid, KvStored(None, (100 + eid,), (200 + eid,)))
