"""Disaggregated serving in the control shard: the handoff between the two routing stages.

A request's life with a prefill pool and a decode pool (facts §g, checked against the 1.6.1 replay):
1. the frontend dispatches it; the prefill router (any router mode, over the prefill pool) picks a
   prefill rank, which runs the prompt;
2. the prefill rank's `HandoffMsg` (prompt computed, source KV held, no client token): the prefill
   router releases the request's prefill tokens, and the decode router (over the decode pool) picks
   the destination at once (`destination_reserved_ms` = `source_held_ms` on a zero-latency plane);
   the request goes to that rank with its `TransferSource`;
3. the decode rank's `TransferDoneMsg` (the KV crossed, the destination is activated): the source is
   released (`ReleaseSourceMsg` to the prefill rank) and the prefill router forgets the request;
4. the decode rank produces every output token, the first included; first token and completion
   go to the frontend and the decode router as for an aggregated request.

The decode router follows the reference's rule for the decode pool: the same selector as the
prefill stage, scoring load only (no overlap credit) and tracking no prefill tokens
(`decode_router_config`).
"""

from __future__ import annotations

from collections.abc import Callable

from actors.engine.records import HandoffRecord, RequestRecord
from cluster.control.fleet import Fleet
from cluster.control.kv_links import KvLinks, Place
from cluster.control.frontend import Frontend
from cluster.control.router_host import RouterHost
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import CONTROL_ADDR, HandoffMsg, ReleaseSourceMsg, Topic, TransferDoneMsg, rank_addr
from cluster.plane.messages import TransferSource
from router.config import KvRouterConfig


def decode_router_config(config: KvRouterConfig) -> KvRouterConfig:
    """The decode stage's router settings: load only (overlap credit 0), no prefill tokens tracked."""
    return config.model_copy(update={"overlap_score_credit": 0.0, "router_track_prefill_tokens": False})


class Handoffs:
    """Steps 2 and 3 of the module docstring."""

    def __init__(self, frontend: Frontend, router: RouterHost, plane: PlaneEndpoint, links: KvLinks | None = None,
                 fleet: Fleet | None = None) -> None:
        self.frontend = frontend
        self.router = router
        self.plane = plane
        self.links = links
        self.fleet = fleet
        self._gidx = router.gidx_of

    def _place(self, gidx: int) -> Place:
        assert self.fleet is not None
        worker_id, dp = self.router.slots[gidx]
        info = self.fleet.lives[worker_id].info
        vgpus = info.vgpus[dp] if info.vgpus else ()
        if not vgpus:
            return Place(info.rank_nodes[dp], 0, None)
        return Place(vgpus[0].node, vgpus[0].card_index, vgpus[0].gpu.interconnect.gbps)

    def over_links(self, now: float, rec: RequestRecord, dst_gidx: int, source: TransferSource,
                   send: Callable[[float, TransferSource], None]) -> None:
        """Topology on: the whole prompt crosses the links between the two GPUs (`KvLinks`), starting
        when the destination is chosen; the request reaches the decode rank when the last byte has."""
        assert self.links is not None and rec.handoff is not None
        nbytes = rec.input_length * (source.bytes_per_token or 0)
        ho = rec.handoff

        def arrived(t: float, ms: float) -> None:
            ho.transfer_tokens, ho.transfer_bytes, ho.transfer_ms = rec.input_length, nbytes, ms
            ho.over_links = True
            send(t, TransferSource(source.gidx, None, None, False))

        self.links.start(now, rec.request_id, self._place(source.gidx), self._place(dst_gidx), nbytes, arrived)

    def on_handoff(self, now: float, msg: HandoffMsg) -> None:
        rid = msg.request_id
        rec = self.frontend.records[rid]
        rec.handoff = HandoffRecord(msg.worker_id, msg.dp_rank, msg.record, msg.t_ms)
        self.router.on_prefill_done(now, rid)
        source = TransferSource(self._gidx(msg.worker_id, msg.dp_rank), msg.bytes_per_token, msg.bandwidth_gbps,
                                msg.destination_missing)
        self.router.route_decode(now, rec, self.frontend.hash_ids_of(rid), source)

    def on_transfer_done(self, now: float, msg: TransferDoneMsg) -> None:
        rec: RequestRecord = self.frontend.records[msg.request_id]
        ho = rec.handoff
        assert ho is not None
        ho.destination_reserved_ms = msg.reserved_ms
        ho.transfer_done_ms = msg.t_ms
        ho.source_released_ms = now
        if not ho.over_links:
            ho.transfer_tokens, ho.transfer_bytes, ho.transfer_ms = msg.tokens, msg.nbytes, msg.ms
        self.plane.send(Topic.REQUESTS, CONTROL_ADDR, rank_addr(msg.source_gidx), ReleaseSourceMsg(msg.request_id),
                        now)
        self.router.on_source_released(now, msg.request_id)
