"""The runtime room: a shard's window protocol (`encode_step` / `Shard.step` / `decode_reply`), a node
shard with one real rank answering windows, and the Ray runtime's shard placement (no Ray needed)."""

from __future__ import annotations

import math
from typing import Any, cast

import msgpack
import pytest

from actors.engine.config import EngineConfig, FixedTimingConfig
from actors.engine.records import EngineRecord, TerminalStatus
from cluster.control.host import ControlHost
from cluster.nodes.hosted import HostOptions
from cluster.plane.codec import decode, encode
from cluster.plane.endpoint import EventPlaneConfig
from cluster.plane.messages import (
    CONTROL_ADDR,
    CompletionMsg,
    Envelope,
    FirstTokenMsg,
    Message,
    RequestMsg,
    ShutdownMsg,
    Topic,
    delivery_key,
)
from cluster.plane.ranks import RankSpec
from cluster.runtime.ray import RuntimeSetupError, ShardMap, assign_shards
from cluster.runtime.shard import Shard, ShardPlan, decode_reply, encode_step

INF = math.inf
ENGINE = EngineConfig(timing_model=FixedTimingConfig(type="fixed", prefill_ms=10.0, decode_ms=2.0))


def request_env(t: float, rid: int = 0, seq: int = 0) -> Envelope:
    return Envelope(t, delivery_key(CONTROL_ADDR, seq, 0), 1, Topic.REQUESTS,
                    RequestMsg(rid, 0, 0, 64, 3, (1,), 64, t - 1.0))


def node_shard(options: HostOptions | None = None) -> Shard:
    """A node shard (no control) hosting one real rank, gidx 0 at address 1, on a 1 ms plane."""
    plan = ShardPlan(EventPlaneConfig(latency_ms=1.0), 0, (RankSpec(0, 0, 0, ENGINE, node="a"),),
                     options or HostOptions())
    return Shard(plan, hosts_control=False)


def step(shard: Shard, horizon: float, inbound: list[Envelope] | None = None) -> tuple[list[Envelope], float, float]:
    return decode_reply(shard.step(encode_step(horizon, inbound or [])))


# ---------------------------------------------------------------------- the window protocol


def test_a_step_payload_carries_the_horizon_and_the_envelopes() -> None:
    envs = [request_env(5.0), request_env(6.5, rid=1, seq=1)]
    horizon, payload = msgpack.unpackb(encode_step(12.5, envs))
    assert horizon == 12.5 and decode(payload) == envs
    assert msgpack.unpackb(encode_step(INF, [])) == [None, b""]


def test_a_reply_decodes_outbox_next_event_and_bound_with_none_as_infinity() -> None:
    out = [Envelope(9.0, 77, CONTROL_ADDR, Topic.RESPONSES, FirstTokenMsg(4, 0, 0, 8.0))]
    assert decode_reply(msgpack.packb([encode(out), None, 7.0], use_bin_type=True)) == (out, INF, 7.0)
    assert decode_reply(msgpack.packb([b"", 3.0, None], use_bin_type=True)) == ([], 3.0, INF)


# ---------------------------------------------------------------------- a node shard


def test_a_node_shard_with_nothing_queued_answers_infinities() -> None:
    shard = node_shard()
    assert step(shard, 0.0) == ([], INF, INF)
    assert step(shard, INF) == ([], INF, INF)
    beating = node_shard(HostOptions(heartbeat_ms=4.0))  # a heartbeat is an event, not a response
    assert step(beating, 0.0) == ([], 4.0, INF)
    assert step(beating, 5.0) == ([], 8.0, INF)


def test_a_node_shard_processes_only_events_before_the_horizon() -> None:
    shard = node_shard()
    # The request arrives at 5; the prefill pass ends at 15 (first token), the decode run at 19.
    assert step(shard, 15.0, [request_env(5.0)]) == ([], 15.0, 15.0)
    assert shard.loop.now_ms == 5.0
    out, nxt, bound = step(shard, 16.0)
    assert out == [Envelope(16.0, delivery_key(1, 0, 0), CONTROL_ADDR, Topic.RESPONSES, FirstTokenMsg(0, 0, 0, 15.0))]
    assert (nxt, bound, shard.loop.now_ms) == (19.0, 19.0, 15.0)
    assert step(shard, 19.0) == ([], 19.0, 19.0)
    out, nxt, bound = step(shard, INF)
    assert (nxt, bound, shard.loop.now_ms) == (INF, INF, 19.0)
    assert [(e.t_arrive, e.key, e.dst, e.topic) for e in out] == [
        (20.0, delivery_key(1, 1, 0), CONTROL_ADDR, Topic.RESPONSES)]
    done = out[0].msg
    assert isinstance(done, CompletionMsg) and (done.request_id, done.status) == (0, TerminalStatus.COMPLETED)
    assert (done.record.first_token_ms, done.record.second_token_ms, done.record.last_token_ms) == (15.0, 17.0, 19.0)
    assert step(shard, INF) == ([], INF, INF)
    stats = shard.result().ranks
    assert [(r.gidx, r.alive, r.num_admissions) for r in stats] == [(0, True, 1)]


def test_two_requests_of_one_window_leave_in_the_outbox_in_send_order() -> None:
    shard = node_shard()
    out, nxt, _ = step(shard, INF, [request_env(5.0), request_env(5.0, rid=1, seq=1)])
    kinds = [(type(e.msg).__name__, e.msg.request_id, e.t_arrive) for e in out]  # type: ignore[union-attr]
    assert kinds == [("FirstTokenMsg", 0, 16.0), ("FirstTokenMsg", 1, 16.0), ("CompletionMsg", 0, 20.0),
                     ("CompletionMsg", 1, 20.0)]
    assert [e.key for e in out] == [delivery_key(1, k, 0) for k in range(4)] and nxt == INF


class FakeControl:
    """What a shard needs of a control host: `on_message`, `send_times`, `is_triggering`."""

    def __init__(self) -> None:
        self.send_times: list[float] = []
        self.got: list[tuple[float, int, Message]] = []

    def is_triggering(self, msg: Message) -> bool:
        return isinstance(msg, CompletionMsg)

    def on_message(self, now: float, item: tuple[int, Message]) -> None:
        self.got.append((now, *item))


def test_a_control_shard_keeps_triggering_arrivals_and_delivers_to_control() -> None:
    plan = ShardPlan(EventPlaneConfig(), 0, (), HostOptions())
    shard = Shard(plan, hosts_control=True)
    fake = FakeControl()
    assert shard.attach_control(lambda loop, plane: cast(ControlHost, fake)) is cast(Any, fake)
    done = CompletionMsg(0, 0, 0, TerminalStatus.COMPLETED, EngineRecord(3, end_ms=4.0))
    envs = [Envelope(4.0, 2, CONTROL_ADDR, Topic.RESPONSES, done),
            Envelope(3.0, 1, CONTROL_ADDR, Topic.RESPONSES, FirstTokenMsg(0, 0, 0, 2.0))]
    shard.inject(envs)
    assert fake.send_times == [4.0]
    shard.advance(INF)
    assert fake.got == [(3.0, CONTROL_ADDR, envs[1].msg), (4.0, CONTROL_ADDR, done)]
    shard.plane.send(Topic.CONTROL, CONTROL_ADDR, 7, ShutdownMsg(5.0), 5.0)  # address 7 lives elsewhere
    assert shard.take_outbox() == [Envelope(5.0, delivery_key(0, 0, 0), 7, Topic.CONTROL, ShutdownMsg(5.0))]
    assert shard.take_outbox() == []


# ---------------------------------------------------------------------- shard placement


def test_assign_shards_balances_ranks_over_whole_nodes() -> None:
    nodes = ["a", "a", "b", "c", "c", "c"]
    assert assign_shards(nodes, 2) == [[3, 4, 5], [0, 1, 2]]
    assert assign_shards(nodes, 3) == [[3, 4, 5], [0, 1], [2]]
    assert assign_shards(["b", "a"], 2) == [[1], [0]]  # a tie goes to the lowest shard, nodes by name
    assert assign_shards(["a"], 1) == [[0]]


def test_assign_shards_counts_nodes_without_ranks() -> None:
    assert assign_shards(["a", "a"], 3, other_nodes=["x", "y", "a"]) == [[0, 1], [], []]
    with pytest.raises(RuntimeSetupError, match="--shards 3: only 2 node"):
        assign_shards(["a", "a"], 3, other_nodes=["x"])


def test_a_shard_map_places_unseen_nodes_on_the_shard_with_fewest_nodes() -> None:
    node_of_rank = ["a", "a", "b", "c", "c", "c"]
    groups = assign_shards(node_of_rank, 2)  # c -> 0; a, b -> 1
    node_of_addr = {g + 1: n for g, n in enumerate(node_of_rank)}
    m = ShardMap(groups, node_of_rank, node_of_addr, other_nodes=["e", "d", "a"])
    assert m.shard_of_node == {"c": 0, "a": 1, "b": 1, "d": 0, "e": 0}
    assert [m.shard_of(addr) for addr in (CONTROL_ADDR, 1, 3, 4)] == [-1, 1, 1, 0]
    node_of_addr.update({10: "f", 11: "g", 12: "f"})  # a worker added on nodes never seen
    assert [m.shard_of(addr) for addr in (10, 11, 12)] == [1, 0, 1]
    assert m.shard_of_node["f"] == 1 and m.shard_of_node["g"] == 0
