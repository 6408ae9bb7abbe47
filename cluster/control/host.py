"""The control shard's components: frontend and router behind one event-plane address.

`ControlHost` receives everything addressed to `CONTROL_ADDR` and hands it on:
responses to the frontend (and the router's load tracking), KV batches, metrics, replay
replies and worker-down notices to the router host, ranks' lifecycle notices to the fleet
(`cluster.control.fleet`, the control API), load metrics also to the planner
(`cluster.control.planner_host`), when there is one. It sends routed requests to ranks.

Lookahead (Ray runtime): `next_send_ms()` is the earliest time this shard could send a
message, given what is queued here. Sends happen only when a workload arrival is handled,
or when a *triggering* message is delivered: `is_triggering` says which kinds can cause a
send in this configuration (a completion only in closed-loop workloads or with router
queueing; a KV batch or heartbeat only when stream recovery may have to ask for a
replay; ...). Times of arrivals and of triggering deliveries are kept in `send_times`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

from actors.engine.records import FailureReason, RequestRecord, TerminalStatus
from cluster.control.disagg import Handoffs
from cluster.control.fleet import Fleet
from cluster.control.kv_links import KvLinks
from cluster.control.frontend import Frontend
from cluster.control.migration import Migrator
from cluster.control.planner_host import PlannerHost
from cluster.control.router_host import PromptHashes, RouterHost
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import (
    CONTROL_ADDR,
    CompletionMsg,
    FirstTokenMsg,
    HandoffMsg,
    KvBatchMsg,
    LoadMetricsMsg,
    Message,
    ReplayReplyMsg,
    RequestMsg,
    ShutdownMsg,
    Topic,
    TransferDoneMsg,
    TransferSource,
    WorkerDownMsg,
    rank_addr,
)
from cluster.plane.ranks import RankReadyMsg, RankStoppedMsg
from cluster.sim.clock import EventLoop
from cluster.workload.model import Workload


class ControlHost:
    """Frontend + router host on one loop. Build with `ControlHost.build(...)`, then `wire`."""

    def __init__(self, loop: EventLoop, plane: PlaneEndpoint) -> None:
        self.loop = loop
        self.plane = plane
        self.send_times: list[float] = []
        self.frontend: Frontend
        self.router: RouterHost
        self.fleet: Fleet
        self._trigger_kinds: tuple[type, ...] = ()
        self.reacts_to_responses = False
        self.reacts_to_stream = False
        self.migrator: Migrator | None = None
        self.handoffs: Handoffs | None = None
        self.links: KvLinks | None = None
        """KV transfers over modelled links (scenario `topology`); None: the decode rank times them."""
        self.planner: PlannerHost | None = None
        """The planner, when the scenario has one (it also reads the ranks' load metrics)."""

    def wire(self, workload: Workload, router: RouterHost, fleet: Fleet, concurrency: int | None,
             on_done: Callable[[RequestRecord], None] | None = None, stream_lossy: bool = False,
             announce_shutdown: bool = False, migration_limit_of: Callable[[int], int] | None = None) -> None:
        """Attach the frontend, router and fleet (the router's callbacks point back here).

        `announce_shutdown`: when the workload is over, tell every rank (they stop their
        heartbeats a few periods later, and apply no fault due after it).
        `migration_limit_of(worker_id)`: the migration limit of the worker's deployment (None: no
        migration anywhere).
        """
        self.router = router
        self.fleet = fleet
        self.frontend = Frontend(workload, self.loop, router.route, concurrency, on_done=on_done,
                                 send_times=self.send_times,
                                 on_finished=self._finished)
        self._announce = announce_shutdown
        if router.decode_router is not None:
            self.handoffs = Handoffs(self.frontend, router, self.plane, self.links, fleet)
        if migration_limit_of is not None:
            self.migrator = Migrator(self.frontend, router, migration_limit_of)
        # Which deliveries can make this shard send (the Ray runtime's lookahead depends on it).
        self.reacts_to_responses = (self.frontend.closed_loop or router.queueing or announce_shutdown
                                    or self.migrator is not None)
        """Completions (and with router queueing first tokens and worker losses) can dispatch requests."""
        self.reacts_to_stream = router.subscriber.recovery and router.subscribes_kv and stream_lossy
        """KV batches, heartbeats and replay replies can reveal gaps and cause replay requests."""
        kinds: list[type] = []
        if self.reacts_to_responses:
            kinds.append(CompletionMsg)
        # A worker coming or going releases queued requests, or fails them when none is left.
        kinds += [WorkerDownMsg, RankReadyMsg, RankStoppedMsg]
        if self.handoffs is not None:  # a handoff routes to a decode rank, a transfer's end releases the source
            kinds += [HandoffMsg, TransferDoneMsg]
        if router.queueing:
            kinds.append(FirstTokenMsg)
        if self.reacts_to_stream:
            kinds += [KvBatchMsg, LoadMetricsMsg, ReplayReplyMsg]
        self._trigger_kinds = tuple(kinds)

    # ------------------------------------------------------------------ plane callbacks

    def send_request(self, now: float, record: RequestRecord, hash_ids: tuple[int, ...], gidx: int,
                     hashes: PromptHashes) -> None:
        """Send `record` to the rank the router chose (it wrote the record's `worker_id`, `dp_rank`)."""
        carried = record.engine  # a migrated request carries the tokens generated so far
        msg = RequestMsg(record.request_id, record.worker_id, record.dp_rank, record.input_length,
                         record.requested_output_length, hash_ids, self.frontend.workload.trace_block_size,
                         record.dispatched_ms, hashes[0], hashes[1], carried.output_length,
                         carried.last_token_ms or 0.0)
        self.plane.send(Topic.REQUESTS, CONTROL_ADDR, rank_addr(gidx), msg, now)

    def send_decode(self, now: float, record: RequestRecord, hash_ids: tuple[int, ...], gidx: int,
                    hashes: PromptHashes, source: object) -> None:
        """Send a prefilled request to the decode rank the decode router chose, with its KV source."""
        assert isinstance(source, TransferSource)
        if self.links is not None and self.handoffs is not None and source.bandwidth_gbps is not None:
            self.handoffs.over_links(now, record, gidx, source,
                                     lambda t, src: self.send_decode(t, record, hash_ids, gidx, hashes, src))
            return
        msg = RequestMsg(record.request_id, record.worker_id, record.dp_rank, record.input_length,
                         record.requested_output_length, hash_ids, self.frontend.workload.trace_block_size,
                         record.dispatched_ms, hashes[0], hashes[1], source=source)
        self.plane.send(Topic.REQUESTS, CONTROL_ADDR, rank_addr(gidx), msg, now)

    def _finished(self, now: float) -> None:
        """The last request ended: the fleet changes no more; the ranks are told if they must be."""
        self.fleet.over = True
        if self._announce:
            self._announce_shutdown(now)

    def _announce_shutdown(self, now: float) -> None:
        for addr in self.fleet.addresses():
            self.plane.send(Topic.CONTROL, CONTROL_ADDR, addr, ShutdownMsg(now), now)

    def reject(self, now: float, record: RequestRecord, reason: FailureReason, detail: str) -> None:
        self.frontend.terminal(now, record, TerminalStatus.REJECTED, reason, detail)

    def fail(self, now: float, record: RequestRecord, reason: FailureReason, detail: str, cause: str | None) -> None:
        self.frontend.terminal(now, record, TerminalStatus.FAILED, reason, detail, cause)

    def on_message(self, now: float, item: tuple[int, Message]) -> None:
        msg = item[1]
        if isinstance(msg, KvBatchMsg):
            self.router.on_kv_batch(now, msg)
        elif isinstance(msg, FirstTokenMsg):
            self.frontend.on_first_token(now, msg)
            self.router.on_first_token(now, msg.request_id)
        elif isinstance(msg, CompletionMsg):
            if self.migrator is not None and self.migrator.takes(msg):
                self.router.on_complete(now, msg.request_id)
                self.migrator.on_failure(now, msg)
            else:
                self.frontend.on_completion(now, msg)
                self.router.on_complete(now, msg.request_id)
        elif isinstance(msg, HandoffMsg) and self.handoffs is not None:
            self.handoffs.on_handoff(now, msg)
        elif isinstance(msg, TransferDoneMsg) and self.handoffs is not None:
            self.handoffs.on_transfer_done(now, msg)
        elif isinstance(msg, LoadMetricsMsg):
            self.router.on_metrics(now, msg)
            if self.planner is not None:
                self.planner.on_metrics(msg)
        elif isinstance(msg, ReplayReplyMsg):
            self.router.on_replay(now, msg)
        elif isinstance(msg, WorkerDownMsg):  # the fleet takes the whole worker out of routing
            self.fleet.on_down(now, msg)
        elif isinstance(msg, RankReadyMsg):
            self.fleet.on_ready(now, msg)
        elif isinstance(msg, RankStoppedMsg):
            self.fleet.on_stopped(now, msg)
        else:  # pragma: no cover - ranks send nothing else to the control address
            raise TypeError(f"control shard cannot handle {type(msg).__name__}")

    # ------------------------------------------------------------------ lookahead

    def is_triggering(self, msg: Message) -> bool:
        """Whether delivering `msg` here may make this shard send something."""
        return isinstance(msg, self._trigger_kinds)

    def next_send_ms(self, processed_before_ms: float) -> float:
        """No message leaves this shard before this time, given that every event before
        `processed_before_ms` has been processed and nothing else arrives meanwhile."""
        times = self.send_times
        while times and times[0] < processed_before_ms:
            heapq.heappop(times)
        return times[0] if times else math.inf
