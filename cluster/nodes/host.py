"""Engine ranks on one shard's event loop: the node side of the simulation.

`NodeHost` drives the ranks placed on a shard's nodes through the `EngineRank` protocol
(`actors.engine.protocol`) and talks to the rest of the cluster only through the event plane:
- `RequestMsg` in: the request is submitted (a decode run in flight is cut after its current
  pass) or refused (`CompletionMsg` rejected), and the rank is woken;
- the rank's due events (pass and run ends, publish points inside decode runs) run at FINISH
  priority; what they return leaves at once: the KV events as numbered `KvBatchMsg`s
  (`cluster.nodes.kv_streams`), `FirstTokenMsg` / `CompletionMsg` responses, and load metrics
  when the pass admitted, preempted, emitted a first token or completed something;
- a woken rank forms its next pass at START priority, after every message of the instant;
- `ReplayRequestMsg` in: buffered batches or a snapshot back;
- heartbeats every `heartbeat_ms` on a fixed grid, carrying the rank's last KV seq, from the
  start of the run until `heartbeat_count` periods after a `ShutdownMsg` (the control plane's
  "workload over"), so batches lost at the tail of a stream are noticed too;
- faults: a killed rank fails its requests, drops its cache and announces `WorkerDownMsg`; a
  kill due after the control plane said the workload is over (`ShutdownMsg`) is not applied;
  a straggler window (`slow_gpu`) multiplies a rank's pass times (`cluster.nodes.straggler`).

Same-instant order: a rank's START and due events use its global index as key, so the order
never depends on which other ranks share the shard. `response_bound_ms()` is the earliest time this
host could send a response (the Ray runtime's lookahead).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from actors.engine.events import KvEvent
from actors.engine.hashing import PromptHashers
from actors.engine.protocol import Finished, RankOutput
from actors.engine.rank import build_rank
from actors.engine.records import EngineRecord, FailureReason, GapLog, TerminalStatus
from actors.engine.request import RankRequest
from actors.engine.timing.registry import timing_from_config
from cluster.nodes.contention import Contention
from cluster.nodes.hosted import READY_KEY, Hosted, HostOptions, RankStats
from cluster.nodes.kv_streams import KvStream, KvTap
from cluster.nodes.straggler import Straggler
from cluster.nodes.transfers import Transfers
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import (
    CONTROL_ADDR,
    CompletionMsg,
    FirstTokenMsg,
    LoadMetricsMsg,
    Message,
    ReleaseSourceMsg,
    ReplayRequestMsg,
    RequestMsg,
    ShutdownMsg,
    Topic,
    WorkerDownMsg,
    rank_addr,
)
from cluster.plane.ranks import (
    DrainRankMsg,
    RankKill,
    RankReadyMsg,
    RankSlowdown,
    RankSpec,
    RankStoppedMsg,
    StartRankMsg,
    StopRankMsg,
)
from cluster.sim.clock import EventLoop, Priority


class NodeHost:
    """Hosts ranks on one loop. See the module docstring."""

    def __init__(self, specs: Sequence[RankSpec], loop: EventLoop, plane: PlaneEndpoint, gaps: GapLog,
                 options: HostOptions = HostOptions(), kills: Sequence[RankKill] = (),
                 slowdowns: Sequence[RankSlowdown] = ()) -> None:
        self.loop = loop
        self.plane = plane
        self.gaps = gaps
        self.options = options
        self.kv_tap: KvTap | None = None
        self._hashers = PromptHashers()
        self._hosted: dict[int, Hosted] = {}
        """By address, in hosting order (heartbeats and results follow it)."""
        self._contention = Contention(self._rearm_rank)
        self._response_times: list[float] = []
        """Times of queued events that may send a response (the lookahead)."""
        self._heartbeats_on = False
        self._transfers = Transfers(loop, plane, self._response_times, self._submit, self._rearm)
        self._stragglers: dict[int, Straggler] = {}
        slowed = {g for sd in slowdowns for g in sd.gidxs}
        self._slowed = slowed
        for spec in specs:
            self._host(spec).ready = True  # ranks of the initial fleet serve from the start
        self._arm_heartbeats(0.0)
        for kill in kills:
            self._schedule_kill(kill)
        for sd in slowdowns:
            self._schedule_slowdown(sd, 0.0)

    def _schedule_slowdown(self, sd: RankSlowdown, now: float) -> None:
        """Open the window at its start (or now, for a rank placed inside it) and close it at its end."""
        mine = tuple(g for g in sd.gidxs if g in self._stragglers)
        if mine and sd.until_ms > now:
            start = max(sd.t_ms, now)
            self.loop.schedule(start, Priority.CONTROL, sd.key, self._on_speed, (mine, sd.factor))
            self.loop.schedule(sd.until_ms, Priority.CONTROL, sd.key, self._on_speed, (mine, 1.0))
            heapq.heappush(self._response_times, start)  # re-timed runs end at new times
            heapq.heappush(self._response_times, sd.until_ms)

    def _schedule_kill(self, kill: RankKill) -> None:
        mine = tuple(g for g in kill.gidxs if rank_addr(g) in self._hosted)
        if mine:
            self.loop.schedule(kill.t_ms, Priority.CONTROL, kill.key, self._on_kill,
                               RankKill(kill.t_ms, mine, kill.reason, kill.detail, kill.cause, kill.key))
            heapq.heappush(self._response_times, kill.t_ms)

    def _arm_heartbeats(self, now: float) -> None:
        """Heartbeats run on a fixed grid (multiples of `heartbeat_ms`) while some rank is hosted."""
        hb = self.options.heartbeat_ms
        if hb is None or self._heartbeats_on or not self._hosted:
            return
        self._heartbeats_on = True
        self.loop.schedule((now // hb + 1) * hb, Priority.CONTROL, -1, self._on_heartbeat)

    def _host(self, spec: RankSpec) -> Hosted:
        opts = self.options
        timing = spec.timing if spec.timing is not None else timing_from_config(spec.engine)
        pass_timing = timing
        if spec.gidx in self._slowed:
            pass_timing = self._stragglers[spec.gidx] = Straggler(timing)
        rank = build_rank(spec.engine, pass_timing, self.gaps, self._hashers, spec.worker_id, spec.dp_rank,
                          macro_step=opts.macro_step, emit_events=opts.publish_kv or opts.collect_kv,
                          publish_ticks=opts.publish_kv)
        stream = KvStream(rank, spec.addr, self.plane, opts.publish_kv, opts.collect_kv, opts.replay_buffer_batches,
                          tap=self._tap)
        hosted = Hosted(spec, rank, stream, opts.heartbeat_count)
        self._hosted[spec.addr] = hosted
        self.plane.node_of[spec.addr] = spec.node
        if spec.cotenant_group is not None:
            self._contention.join(spec.gidx, spec.cotenant_group, rank, timing, spec.core_limit)
        return hosted

    def _tap(self, batch: object) -> None:
        if self.kv_tap is not None:
            self.kv_tap(batch)  # type: ignore[arg-type]

    @property
    def addresses(self) -> list[int]:
        return list(self._hosted)

    # ------------------------------------------------------------------ messages in

    def on_message(self, now: float, item: tuple[int, Message]) -> None:
        addr, msg = item
        if isinstance(msg, StartRankMsg):
            self._start_rank(now, msg)
            return
        h = self._hosted[addr]
        if isinstance(msg, RequestMsg):
            self._on_request(now, h, msg)
        elif isinstance(msg, ReleaseSourceMsg):
            if h.alive:
                h.rank.release_source(msg.request_id, now)
                self._stop_if_drained(now, h)
        elif isinstance(msg, ReplayRequestMsg):
            if h.alive:
                h.stream.answer_replay(now, h.rank, msg)
        elif isinstance(msg, ShutdownMsg):
            h.shut = True
        elif isinstance(msg, DrainRankMsg):
            h.expected = msg.expected
            self._stop_if_drained(now, h)
        elif isinstance(msg, StopRankMsg):
            if h.alive:
                self._kill_rank(now, h, msg.reason, msg.detail, msg.cause)
                self._stopped(now, h)
        else:  # pragma: no cover - the plane only routes these kinds to ranks
            raise TypeError(f"rank {addr - 1} cannot handle {type(msg).__name__}")

    def _start_rank(self, now: float, msg: StartRankMsg) -> None:
        """Host a rank the control plane placed here; it serves `startup_ms` later."""
        self._slowed.update(g for sd in msg.slowdowns for g in sd.gidxs)
        h = self._host(msg.spec)
        for kill in msg.kills:
            self._schedule_kill(kill)
        for sd in msg.slowdowns:
            self._schedule_slowdown(sd, now)
        self._arm_heartbeats(now)
        ready_ms = now + msg.spec.startup_ms
        self.loop.schedule(ready_ms, Priority.CONTROL, READY_KEY + msg.spec.gidx, self._on_ready, h)
        heapq.heappush(self._response_times, ready_ms)

    def _on_ready(self, now: float, h: Hosted) -> None:
        if not h.alive:
            return
        h.ready = True
        rank = h.rank
        self.plane.send(Topic.CONTROL, h.addr, CONTROL_ADDR, RankReadyMsg(rank.worker_id, rank.dp_rank, now), now)
        self._stop_if_drained(now, h)

    def _stop_if_drained(self, now: float, h: Hosted) -> None:
        """A draining rank stops once every request sent to it arrived and finished."""
        if h.alive and h.ready and h.expected is not None and h.received >= h.expected and h.rank.is_idle:
            h.retire(now)
            self._stopped(now, h)

    def _stopped(self, now: float, h: Hosted) -> None:
        rank = h.rank
        self.plane.send(Topic.CONTROL, h.addr, CONTROL_ADDR, RankStoppedMsg(rank.worker_id, rank.dp_rank, now), now)
        if self._contention:
            self._contention.update(h.spec.gidx, now)

    def _on_request(self, now: float, h: Hosted, msg: RequestMsg) -> None:
        if msg.source is None or not h.alive:
            h.received += 1  # a transferred request counts once it is activated (a drain waits for it)
        if not h.alive:
            self._respond(now, h, Finished(msg.request_id, TerminalStatus.FAILED, EngineRecord(end_ms=now),
                                           FailureReason.WORKER_KILLED, "worker is down"))
            return
        given = None if msg.block_hashes is None or msg.local_hashes is None else (msg.block_hashes, msg.local_hashes)
        request = RankRequest(msg.request_id, msg.input_length, msg.output_length, msg.hash_ids,
                              msg.trace_block_size, given, msg.generated_tokens, msg.last_token_ms,
                              transferred=msg.source is not None)
        if msg.source is not None:
            self._transfers.receive(now, h, msg, request)
            return
        self._submit(now, h, request)

    def _submit(self, now: float, h: Hosted, request: RankRequest) -> None:
        if request.transferred:
            h.received += 1
            if not h.alive:
                self._respond(now, h, Finished(request.request_id, TerminalStatus.FAILED, EngineRecord(end_ms=now),
                                               FailureReason.WORKER_KILLED, "worker is down"))
                return
        refused = h.rank.submit(request, now)
        self._rearm(h)
        if refused is not None:
            self._respond(now, h, refused)
            self._stop_if_drained(now, h)  # it may have been the last request a draining rank waited for
            return
        if self.options.publish_metrics:
            self._publish_metrics(now, h)
        self._wake(h, now)

    # ------------------------------------------------------------------ responses out

    def _respond(self, now: float, h: Hosted, f: Finished, cause: str | None = None) -> None:
        rank = h.rank
        msg = CompletionMsg(f.request_id, rank.worker_id, rank.dp_rank, f.status, f.record, f.reason, f.detail, cause)
        self.plane.send(Topic.RESPONSES, h.addr, CONTROL_ADDR, msg, now)

    def _publish_metrics(self, now: float, h: Hosted) -> None:
        msg = LoadMetricsMsg(h.rank.load_metrics(now), h.stream.last_seq)
        self.plane.publish(Topic.METRICS, h.addr, msg, now)

    # ------------------------------------------------------------------ driving a rank

    def _wake(self, h: Hosted, now: float) -> None:
        if not h.rank.busy and not h.begin_pending:
            h.begin_pending = True
            self.loop.schedule(now, Priority.START, h.spec.gidx, self._on_begin, h)
            heapq.heappush(self._response_times, now)

    def _rearm(self, h: Hosted) -> None:
        """Schedule the rank's due event for `next_due_ms()`, superseding an earlier one."""
        end = h.rank.busy_until_ms
        if end != h.end_ms:
            h.end_ms = end
            if end is not None:  # the end of what is in flight may send responses (lookahead)
                heapq.heappush(self._response_times, end)
        due = h.rank.next_due_ms()
        if due == h.due_ms:
            return
        h.due_ms = due
        h.due_token += 1
        if due is not None:
            self.loop.schedule(due, Priority.FINISH, h.spec.gidx, self._on_due, (h, h.due_token))

    def _rearm_rank(self, gidx: int, now: float) -> None:
        self._rearm(self._hosted[rank_addr(gidx)])

    def _on_begin(self, now: float, h: Hosted) -> None:
        h.begin_pending = False
        if not h.alive:
            return
        out = h.rank.begin(now)
        for f in out.finished:
            self._respond(now, h, f)
        h.stream.send(out.kv_events, now)  # evictions made visible at a begin that scheduled nothing
        self._rearm(h)
        if self._contention:
            self._contention.update(h.spec.gidx, now)
        if not h.rank.busy:  # a begin that only refused requests may have emptied a draining rank
            self._stop_if_drained(now, h)

    def _on_due(self, now: float, arg: tuple[Hosted, int]) -> None:
        h, token = arg
        if token != h.due_token or not h.alive:
            return  # superseded: the run was cut short and re-armed (or the rank died)
        h.due_ms = None
        out = h.rank.advance(now)
        if not h.rank.busy:
            h.end_ms = None
        self._send_output(now, h, out)
        if h.rank.busy:
            self._rearm(h)
        else:
            self._wake(h, now)
            self._stop_if_drained(now, h)

    def _send_output(self, now: float, h: Hosted, out: RankOutput) -> None:
        h.stream.send(out.kv_events, now)
        rank = h.rank
        for t in out.first_tokens:
            self.plane.send(Topic.RESPONSES, h.addr, CONTROL_ADDR,
                            FirstTokenMsg(t.request_id, rank.worker_id, rank.dp_rank, now), now)
        for f in out.finished:
            self._respond(now, h, f)
        if out.handoffs:
            self._transfers.send_handoffs(now, h, out.handoffs)
        if self.options.publish_metrics and out.load_changed:
            self._publish_metrics(now, h)

    # ------------------------------------------------------------------ heartbeats

    def _on_heartbeat(self, now: float, _: object) -> None:
        hb = self.options.heartbeat_ms
        assert hb is not None
        keep = False
        for h in self._hosted.values():
            if not h.alive:
                continue
            if not h.ready:  # a starting rank heart-beats once ready: keep the grid going
                keep = True
                continue
            if h.shut:
                if h.hb_left <= 0:
                    continue
                h.hb_left -= 1
            self._publish_metrics(now, h)
            keep = keep or not h.shut or h.hb_left > 0
        if keep:
            self.loop.schedule(now + hb, Priority.CONTROL, -1, self._on_heartbeat)
        else:
            self._heartbeats_on = False

    # ------------------------------------------------------------------ faults

    def _on_kill(self, now: float, kill: RankKill) -> None:
        for g in kill.gidxs:
            h = self._hosted[rank_addr(g)]
            if not h.alive or h.shut:  # dead already, or the run is over (the kill is not applied)
                continue
            self._kill_rank(now, h, kill.reason, kill.detail, kill.cause)
            rank = h.rank
            self.plane.send(Topic.CONTROL, h.addr, CONTROL_ADDR,
                            WorkerDownMsg(rank.worker_id, rank.dp_rank, now, kill.reason, kill.detail, kill.cause),
                            now)
            if self._contention:
                self._contention.update(h.spec.gidx, now)

    def _on_speed(self, now: float, arg: tuple[tuple[int, ...], float]) -> None:
        """A straggler window opens or closes: later passes of these ranks use the new factor."""
        gidxs, factor = arg
        for g in gidxs:
            self._stragglers[g].factor = factor
            h = self._hosted[rank_addr(g)]
            if h.alive:
                h.rank.interrupt(now)
                self._rearm(h)

    def _kill_rank(self, now: float, h: Hosted, reason: FailureReason, detail: str, cause: str | None) -> None:
        """The rank dies now: its KV events so far leave, every request on it fails."""
        h.retire(now)
        out = h.rank.kill(now, reason, detail)
        h.stream.send(out.kv_events, now)
        for f in out.finished:
            self._respond(now, h, f, cause)

    # ------------------------------------------------------------------ lookahead and results

    def response_bound_ms(self, processed_before_ms: float) -> float:
        """No response leaves this host before this time, given that every event before
        `processed_before_ms` has been processed and no new message arrives meanwhile."""
        times = self._response_times
        while times and times[0] < processed_before_ms:
            heapq.heappop(times)
        return times[0] if times else math.inf

    def finalize(self) -> None:
        """Publish and collect what the ranks still hold stamped (end of run)."""
        for h in self._hosted.values():
            h.stream.send(h.rank.take_kv_events(), self.loop.now_ms)

    def collected_kv_events(self) -> list[list[KvEvent]]:
        """Every collected KV event, per hosted rank in hosting order (with `collect_kv`)."""
        return [h.stream.collected for h in self._hosted.values()]

    def rank_stats(self) -> list[RankStats]:
        out = []
        for h in self._hosted.values():
            c = h.rank.counters()
            cached = list(h.rank.kv_snapshot()[0])
            out.append(RankStats(h.spec.gidx, h.spec.worker_id, h.spec.dp_rank, c.num_passes, c.preemptions_total,
                                 c.committed_prefill_tokens, c.num_admissions, h.alive, cached, h.stopped_ms))
        return out
