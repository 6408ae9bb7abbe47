"""The node side of disaggregated serving: handoffs out of prefill ranks, transfers into decode ranks.

- A prefill rank's `Handoff` (its prompt computed, the KV held as the source) leaves as a
  `HandoffMsg` to the control shard, carrying the prefill engine's transfer keys (as in the
  reference, the prefill worker's `kv_transfer_bandwidth` and `kv_bytes_per_token` time the transfer).
- A `RequestMsg` with a `source` reaches the decode rank chosen by the decode router: the
  destination is reserved at the rank's next scheduling point (now when it is idle, else the end
  of the pass in progress, as the 1.6.1 replay does: `destination_reserved_ms` is a pass boundary of
  the decode worker); the transfer then takes `TransferSpec.ms(tokens)` (tokens: the whole prompt, or
  with `destination_missing` only those the decode rank's prefix cache lacks, looked up at receipt);
  when it ends the request is submitted to the decode rank as `transferred` (it joins the next pass,
  so it is admitted at the next scheduling point again: the reference's `destination_activated_ms`);
  at that point a `TransferDoneMsg` tells the control shard, which releases the source (the
  reference releases it at activation too).
- A `ReleaseSourceMsg` frees a prefill rank's source blocks.

With a zero transfer time the request is activated at once, in the same delivery.
Activation events are keyed by request id (`ACTIVATE_KEY + id`), so their same-instant order does
not depend on which ranks share a shard.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

from actors.engine.protocol import Handoff
from actors.engine.request import RankRequest
from actors.engine.transfer import TransferSpec
from cluster.nodes.hosted import Hosted
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import CONTROL_ADDR, HandoffMsg, RequestMsg, Topic, TransferDoneMsg, TransferSource
from cluster.sim.clock import EventLoop, Priority

ACTIVATE_KEY = 1 << 44
"""Loop keys of destination activations (after kills and ready events at one instant)."""


@dataclass(frozen=True, slots=True)
class _Incoming:
    h: Hosted
    request: RankRequest
    source: TransferSource
    tokens: int
    nbytes: int
    ms: float
    reserved_ms: float


class Transfers:
    """See the module docstring. `submit(now, h, request)` submits to a rank as a routed request does."""

    def __init__(self, loop: EventLoop, plane: PlaneEndpoint, response_times: list[float],
                 submit: Callable[[float, Hosted, RankRequest], None], rearm: Callable[[Hosted], None]) -> None:
        self.loop = loop
        self.plane = plane
        self._response_times = response_times
        self._submit = submit
        self._rearm = rearm

    def send_handoffs(self, now: float, h: Hosted, handoffs: list[Handoff]) -> None:
        spec = TransferSpec.of(h.spec.engine)
        rank = h.rank
        for ho in handoffs:
            msg = HandoffMsg(ho.request_id, rank.worker_id, rank.dp_rank, ho.t_ms, ho.record,
                             spec.bytes_per_token, spec.bandwidth_gbps, spec.destination_missing)
            self.plane.send(Topic.RESPONSES, h.addr, CONTROL_ADDR, msg, now)

    def receive(self, now: float, h: Hosted, msg: RequestMsg, request: RankRequest) -> None:
        """A decode rank was chosen: reserve now, activate when the KV has crossed."""
        src = msg.source
        assert src is not None
        spec = TransferSpec(src.bytes_per_token, src.bandwidth_gbps, src.destination_missing)
        cached = h.rank.cached_prompt_tokens(request) if src.destination_missing else 0
        tokens = spec.tokens(request.input_length, cached)
        h.rank.interrupt(now)  # a decode run in flight ends after the pass in progress: the reservation point
        self._rearm(h)
        reserved = h.rank.busy_until_ms if h.rank.busy_until_ms is not None else now
        incoming = _Incoming(h, request, src, tokens, spec.nbytes(tokens), spec.ms(tokens), reserved)
        t = reserved + incoming.ms
        if t <= now:
            self._activate(now, incoming)
            return
        self.loop.schedule(t, Priority.DELIVER, ACTIVATE_KEY + request.request_id, self._activate, incoming)
        heapq.heappush(self._response_times, t)

    def _activate(self, now: float, x: _Incoming) -> None:
        """The KV has crossed: submit; the source is released when the request joins a pass (the rank's
        next scheduling point, as the reference's `source_released_ms` = `destination_activated_ms`)."""
        rank = x.h.rank
        done = TransferDoneMsg(x.request.request_id, rank.worker_id, rank.dp_rank, now, x.source.gidx,
                               x.tokens, x.nbytes, x.ms, x.reserved_ms)
        self._submit(now, x.h, x.request)
        joins = rank.busy_until_ms if rank.busy_until_ms is not None else now
        if joins <= now:
            self._send_done(now, (x.h, done))
            return
        self.loop.schedule(joins, Priority.DELIVER, ACTIVATE_KEY + x.request.request_id, self._send_done, (x.h, done))
        heapq.heappush(self._response_times, joins)

    def _send_done(self, now: float, arg: tuple[Hosted, TransferDoneMsg]) -> None:
        h, done = arg
        self.plane.send(Topic.RESPONSES, h.addr, CONTROL_ADDR, done, now)
