"""The KV event streams of the ranks a node host drives: what leaves, when, in which batches.

One stream per rank. Events a rank stamped (at the end of the pass that made them visible)
leave as `KvBatchMsg`s, one batch per stamp time, numbered by the rank's `KvPublisher`
(replay buffer included), on the `kv_events` topic:
- after a pass (`flush` at its FINISH or START);
- inside a macro-stepped decode run, at a publish tick at the exact end of every pass
  where a request starts or fills a block (`crossing_passes`: the only passes that can
  change the cache); the run's last pass is its FINISH. So batches leave at the same
  instants, grouped the same way, as pass-by-pass execution would send them;
- before answering a replay request (`answer_replay`), so a snapshot covers every event
  already stamped.
Ticks use the rank's global index as loop key (FINISH priority), like its passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actors.engine.events import KvEvent
from actors.engine.scheduler.macro import DecodeRun, crossing_passes
from actors.engine.scheduler.vllm import VllmRank
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import KvBatchMsg, KvSnapshot, ReplayRequestMsg, Topic, rank_addr
from cluster.plane.recovery import KvPublisher
from cluster.sim.clock import EventLoop, Priority


@dataclass(slots=True)
class _RunTicks:
    run: DecodeRun
    passes: list[int]
    next_i: int = 0


class KvStreams:
    """See the module docstring. `publish`: send batches; `collect`: keep every event (tests)."""

    def __init__(self, ranks: Sequence[VllmRank], gidxs: Sequence[int], loop: EventLoop, plane: PlaneEndpoint,
                 publish: bool, collect: bool, buffer_batches: int) -> None:
        self.ranks = list(ranks)
        self.gidxs = list(gidxs)
        self.loop = loop
        self.plane = plane
        self.publish = publish
        self.collect = collect
        self._addr = [rank_addr(g) for g in gidxs]
        self.publishers = [KvPublisher(r.worker_id, r.dp_rank, buffer_batches) for r in self.ranks]
        self._ticks: list[_RunTicks | None] = [None] * len(self.ranks)
        self.collected: list[list[KvEvent]] = [[] for _ in self.ranks]
        self.kv_tap: Callable[[KvBatchMsg], None] | None = None
        """Sees every published batch (an outside observer such as a ZMQ mirror)."""

    def last_seq(self, i: int) -> int:
        return self.publishers[i].last_seq

    def flush(self, now: float, i: int) -> None:
        """Send rank i's stamped, unsent events, one batch per stamp time."""
        rank = self.ranks[i]
        if not rank.events:
            return
        events = rank.take_events()
        if self.collect:
            self.collected[i].extend(events)
        if not self.publish:
            return
        pub = self.publishers[i]
        start = 0
        for k in range(1, len(events) + 1):
            if k == len(events) or events[k].t_ms != events[start].t_ms:
                batch = pub.batch(events[start].t_ms, tuple(events[start:k]))
                self.plane.publish(Topic.KV_EVENTS, self._addr[i], batch, now)
                if self.kv_tap is not None:
                    self.kv_tap(batch)
                start = k

    # ------------------------------------------------------------------ decode runs

    def start_run(self, i: int, run: DecodeRun) -> None:
        """Schedule publish ticks at the run's cache-changing passes (the last one is its FINISH)."""
        if not self.publish:
            return
        passes = crossing_passes(run.computed0, self.ranks[i].block_size, 1, run.num_passes - 1).tolist()
        if passes:
            ticks = _RunTicks(run, passes)
            self._ticks[i] = ticks
            self._schedule(i, ticks)

    def end_run(self, i: int) -> None:
        """The rank's run ended (its FINISH) or the rank died: pending ticks are void."""
        self._ticks[i] = None

    def _schedule(self, i: int, ticks: _RunTicks) -> None:
        j = ticks.passes[ticks.next_i]
        self.loop.schedule(float(ticks.run.ends_ms[j]), Priority.FINISH, self.gidxs[i], self._on_tick, (i, ticks))

    def _on_tick(self, now: float, arg: tuple[int, _RunTicks]) -> None:
        i, ticks = arg
        rank = self.ranks[i]
        run = ticks.run
        if rank.run is not run or self._ticks[i] is not ticks:
            return  # the run ended or was replaced
        j = ticks.passes[ticks.next_i]
        if j >= run.num_passes:
            return  # the run was cut before this pass; its FINISH publishes the rest
        rank.materialize(j)
        self.flush(now, i)
        ticks.next_i += 1
        if ticks.next_i < len(ticks.passes) and ticks.passes[ticks.next_i] < run.num_passes:
            self._schedule(i, ticks)

    # ------------------------------------------------------------------ replay

    def answer_replay(self, now: float, i: int, msg: ReplayRequestMsg) -> None:
        """Reply with the buffered batches from `msg.from_seq`, or a snapshot of the rank's cache."""
        self.flush(now, i)  # a snapshot must cover every event already stamped
        rank = self.ranks[i]
        pub = self.publishers[i]
        reply = pub.replay(msg.from_seq, lambda: KvSnapshot(tuple(rank.pool.cached_hashes()), rank.next_event_id,
                                                            pub.last_seq))
        self.plane.send(Topic.KV_REPLAY, self._addr[i], msg.reply_to, reply, now)
