"""KvRouter: cost formula, load release, lag, gaps, queueing, modes, config."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.events import KvCleared, KvEvent, KvRemoved, KvStored, LoadMetrics
from router.config import KvRouterConfig, parse_router_mode
from router.dump import dump_events
from router.load import LoadTracker
from router.policies import RouterQueue, pick_softmax
from router.router import KvRouter
from router.sequencing import MAX_UNDRAINED_GAP_REPORTS, Delivery, EventSequencer

BS = 64


def cfg(**kw: object) -> KvRouterConfig:
    return KvRouterConfig.from_mapping(dict(kw))


def store(w: int, eid: int, hashes: list[int], t: float = 0.0, parent: int | None = None) -> KvEvent:
    return KvEvent(t, w, 0, eid, KvStored(parent, tuple(hashes), tuple(hashes)))


def test_fact_sheet_log_check_costs() -> None:
    """Idle worker, 1024 tokens, bs 64 -> 16 + 16 = 32; worker with an active request sharing 8 blocks -> 8 + 24 = 32."""
    r = KvRouter(cfg(), BS, seed=0)
    r.add_worker(0)
    d = r.route(1, list(range(100, 116)), 1024, 0.0)
    assert d is not None and d.worker_id == 0 and d.cost == 32.0
    r.on_first_token(1, 10.0)
    r.apply_event(store(0, 0, list(range(100, 116))), 10.0)
    r.add_worker(1)
    query = list(range(100, 108)) + list(range(200, 208))
    d2 = r.route(2, query, 1024, 20.0)
    assert d2 is not None and d2.cost == 32.0 and d2.best_overlap_blocks == 8
    r.check_invariants()


def test_kv_prefers_the_cached_worker_and_load_is_released() -> None:
    r = KvRouter(cfg(), BS, seed=0)
    for w in range(4):
        r.add_worker(w)
    r.apply_event(store(2, 0, list(range(16))), 0.0)
    d = r.route(7, list(range(16)), 1024, 1.0)
    assert d is not None and (d.worker_id, d.overlap_blocks, d.overlap_regret_blocks) == (2, 16, 0)
    slot = r.index.peek_slot(2, 0)
    assert slot is not None
    assert r.load.prefill_tokens[slot] == 0  # fully cached: nothing to prefill
    assert r.load.active_blocks[slot] == 16 and r.load.active_requests[slot] == 1
    d = r.route(8, list(range(300, 316)), 1024, 2.0)
    assert d is not None and d.worker_id != 2
    s8 = r.index.peek_slot(d.worker_id, 0)
    assert s8 is not None and r.load.prefill_tokens[s8] == 1024
    r.on_first_token(8, 3.0)
    assert r.load.prefill_tokens[s8] == 0 and r.load.active_blocks[s8] == 16
    r.on_complete(8, 4.0)
    r.on_complete(7, 4.0)
    assert r.load.active_blocks.sum() == 0 and r.load.active_requests.sum() == 0
    r.check_invariants()


def test_same_seed_same_decisions_and_ties_are_seeded() -> None:
    def run(seed: int) -> list[int]:
        r = KvRouter(cfg(), BS, seed=seed)
        for w in range(8):
            r.add_worker(w)
        out = []
        for i in range(40):
            d = r.route(i, [i * 1000 + k for k in range(4)], 256, float(i))
            assert d is not None
            out.append(d.worker_id)
            r.on_complete(i, float(i))
        return out

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_softmax_follows_normalized_costs() -> None:
    rng = np.random.default_rng(0)
    costs = np.array([0.0, 1.0, 2.0])
    picks = np.bincount([pick_softmax(costs, 1.0, rng) for _ in range(20000)], minlength=3) / 20000
    p = np.exp(-np.array([0.0, 0.5, 1.0]))
    assert np.allclose(picks, p / p.sum(), atol=0.015)
    equal = np.bincount([pick_softmax(np.array([5.0, 5.0, 5.0]), 0.5, rng) for _ in range(6000)], minlength=3)
    assert np.allclose(equal / 6000, 1 / 3, atol=0.03)  # equal costs: uniform, every candidate reachable


def test_event_lag_holds_events_until_due_but_not_completions() -> None:
    r = KvRouter(cfg(kv_event_lag_ms=50.0), BS, seed=0)
    r.add_worker(0)
    r.add_worker(1)
    r.apply_event(store(1, 0, [1, 2, 3, 4], t=100.0), 100.0)
    assert r.next_due_ms() == 150.0
    assert r.index.find_matches([1, 2, 3, 4]).scores == {}
    r.advance(149.9)
    assert r.index.find_matches([1, 2, 3, 4]).scores == {}
    d = r.route(1, [1, 2, 3, 4], 256, 150.0)  # route releases due events first
    assert d is not None and d.worker_id == 1 and d.overlap_blocks == 4
    assert r.next_due_ms() is None
    r.on_complete(1, 151.0)  # immediate
    assert r.load.active_requests.sum() == 0


def test_sequence_gaps_late_and_duplicates() -> None:
    seq = EventSequencer()
    assert [seq.accept(0, 0, i) for i in (0, 1, 4, 2, 1, 3, 5)] == [
        Delivery.IN_ORDER,
        Delivery.IN_ORDER,
        Delivery.GAP,
        Delivery.LATE,
        Delivery.DUPLICATE,
        Delivery.LATE,
        Delivery.IN_ORDER,
    ]
    assert seq.num_gaps == 1 and seq.num_missing == 0 and seq.num_duplicates == 1
    [rep] = seq.take_gap_reports()
    assert (rep.first, rep.last, rep.seen) == (2, 3, 4)
    # Through the router: a duplicated Removed does not touch the index twice; gaps are counted.
    r = KvRouter(cfg(), BS, seed=0)
    r.add_worker(0)
    r.apply_event(store(0, 0, [1, 2]), 0.0)
    r.apply_event(KvEvent(0.0, 0, 0, 2, KvRemoved((2,))), 0.0)
    r.apply_event(KvEvent(0.0, 0, 0, 2, KvRemoved((2,))), 0.0)
    r.apply_event(store(9, 0, [1]), 0.0)  # unregistered worker
    st_ = r.stats()
    assert (st_.events_applied, st_.event_gaps, st_.events_missing, st_.events_duplicate, st_.events_unknown_worker) == (2, 1, 1, 1, 1)
    assert r.take_gap_reports()[0].first == 1


def test_undrained_gap_reports_are_bounded_but_still_counted() -> None:
    seq = EventSequencer()
    seq.register(0, 1)
    n = MAX_UNDRAINED_GAP_REPORTS + 10
    for i in range(n):
        assert seq.accept(0, 0, 2 * i + 1) is Delivery.GAP  # every other id skipped
    reports = seq.take_gap_reports()
    assert seq.num_gaps == n and seq.num_missing == n
    assert len(reports) == MAX_UNDRAINED_GAP_REPORTS and reports[-1].seen == 2 * n - 1
    assert seq.take_gap_reports() == []


def test_queue_threshold_release_order_and_cap() -> None:
    r = KvRouter(cfg(router_queue_threshold=0.5, max_num_batched_tokens=1000, router_queue_max_size=2), BS, seed=0)
    r.add_worker(0)
    assert r.route(1, [], 1000, 0.0) is not None  # 1000 > 500: now busy
    assert r.route(2, [], 100, 1.0) is None
    assert r.route(3, [], 100, 2.0) is None
    assert r.route(4, [], 100, 3.0) is None  # queue full
    assert r.take_rejected() == [4]
    assert r.drain(4.0) == []
    r.on_first_token(1, 5.0)
    out = r.drain(5.0)
    assert [d.request_id for d in out] == [2, 3]
    assert out[0].queued and out[0].queue_wait_ms == 4.0 and out[0].history_entry()["outcome"] == "queued"
    r.check_invariants()


@pytest.mark.parametrize(
    ("policy", "expected"), [("fcfs", [1, 2, 3]), ("lcfs", [3, 2, 1]), ("wspt", [2, 3, 1])]
)
def test_queue_policies(policy: str, expected: list[int]) -> None:
    q = RouterQueue(policy)  # type: ignore[arg-type]
    q.push(1, 0.0, isl_tokens=4000, cached_tokens=0)
    q.push(2, 10.0, isl_tokens=500, cached_tokens=0)
    q.push(3, 20.0, isl_tokens=4000, cached_tokens=2000)
    assert [q.pop() for _ in range(3)] == expected


def test_no_workers_queues_until_add_worker() -> None:
    r = KvRouter(cfg(), BS, seed=0)
    assert r.route(1, [1], 64, 0.0) is None
    r.add_worker(5)
    [d] = r.drain(1.0)
    assert d.worker_id == 5


def test_modes_round_robin_random_least_loaded() -> None:
    rr = KvRouter(cfg(router_mode="round_robin"), BS, seed=0)
    for w in (3, 1, 2):
        rr.add_worker(w)
    got = [rr.route(i, [], 64, 0.0) for i in range(5)]
    assert [d.worker_id for d in got if d] == [1, 2, 3, 1, 2]
    ll = KvRouter(cfg(router_mode="least_loaded"), BS, seed=0)
    ll.add_worker(0, dp_size=2)
    a = ll.route(1, [], 64, 0.0)
    b = ll.route(2, [], 64, 0.0)
    assert a and b and {a.dp_rank, b.dp_rank} == {0, 1}
    rnd = [KvRouter(cfg(router_mode="random"), BS, seed=11) for _ in range(2)]
    for x in rnd:
        for w in range(10):
            x.add_worker(w)
    picks = [[x.route(i, [], 64, 0.0).worker_id for i in range(20)] for x in rnd]  # type: ignore[union-attr]
    assert picks[0] == picks[1] and len(set(picks[0])) > 3


def test_remove_worker_drops_its_load_and_index() -> None:
    r = KvRouter(cfg(), BS, seed=0)
    r.add_worker(0)
    r.add_worker(1)
    r.apply_event(store(1, 0, [1, 2]), 0.0)
    d = r.route(1, [1, 2], 128, 0.0)
    assert d is not None and d.worker_id == 1
    assert r.remove_worker(1) == [1]
    assert r.workers() == [(0, 0)]
    assert r.index.find_matches([1, 2]).scores == {}
    r.add_worker(2)  # reuses worker 1's slot with fresh load
    assert r.load.active_blocks.sum() == 0
    r.check_invariants()


def test_load_metrics_blend() -> None:
    r = KvRouter(cfg(load_metrics_weight=1.0, overlap_score_credit=0.0), BS, seed=0)
    r.add_worker(0)
    r.add_worker(1)
    r.on_load_metrics(LoadMetrics(0.0, 0, 0, 500, 0, 1000, 3, 0, 0))
    d = r.route(1, [], 64, 0.0)
    assert d is not None and d.worker_id == 1


def test_approximate_mode_indexes_routed_blocks_with_ttl() -> None:
    r = KvRouter(cfg(use_kv_events=False, router_ttl_secs=1.0), BS, seed=0)
    for w in range(3):
        r.add_worker(w)
    d = r.route(1, [1, 2, 3], 192, 0.0)
    assert d is not None
    r.on_complete(1, 1.0)
    r.apply_event(store(0, 0, [9]), 1.0)  # ignored in approximate mode
    assert r.index.find_matches([1, 2, 3]).scores == {(d.worker_id, 0): 3}
    assert r.next_due_ms() == 1000.0
    r.advance(1000.0)
    assert r.index.find_matches([1, 2, 3]).scores == {}
    assert r.stats().events_ignored == 1


def test_config_names_bad_fields_and_maps_alias() -> None:
    with pytest.raises(ValueError, match="unknown router config field 'router_tempurature'"):
        KvRouterConfig.from_json(json.dumps({"router_tempurature": 0.5}))
    with pytest.raises(ValueError, match="router_temperature"):
        KvRouterConfig.from_json('{"router_temperature": -1}')
    c = KvRouterConfig.from_json('{"overlap_score_weight": 2.0, "router_queue_policy": "wspt"}')
    assert c.prefill_load_scale == 2.0 and c.overlap_score_credit == 1.0
    c0 = KvRouterConfig.from_json('{"overlap_score_weight": 0}')
    assert c0.prefill_load_scale == 0.0 and c0.overlap_score_credit == 0.0
    d = KvRouterConfig()
    assert (d.prefill_load_scale, d.router_temperature, d.router_queue_policy, d.kv_event_lag_ms) == (1.0, 0.0, "fcfs", None)
    assert parse_router_mode("kv_router") == "kv" and parse_router_mode("round-robin") == "round_robin"
    with pytest.raises(ValueError):
        KvRouterConfig.from_json('{"router_track_output_blocks": true}')


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "first", "done"]), st.integers(0, 9), st.integers(0, 3), st.integers(0, 6)),
        max_size=60,
    ),
    reuse=st.booleans(),
)
def test_load_tracker_invariants(ops: list[tuple[str, int, int, int]], reuse: bool) -> None:
    lt = LoadTracker(4, reuse)
    lt.ensure_capacity(4)
    for kind, rid, slot, n in ops:
        if kind == "add":
            if lt.slot_of(rid) is None:
                lt.add(rid, slot, [100 + k for k in range(n)], 4 * n + 1, 4 * (n // 2))
        elif kind == "first":
            lt.release_prefill(rid)
        else:
            lt.complete(rid)
        lt.check_invariants()
    s, d = lt.shared_depths([100, 101, 102])
    for sl, dep in zip(s.tolist(), d.tolist()):
        assert dep >= 1 and lt.active_blocks[sl] >= dep


# --------------------------------------------------------------------- batched event delivery

SLOTS = [(0, 0), (1, 0), (1, 1), (2, 0), (9, 0)]  # worker 1 has dp_size 2; worker 9 is never registered
EVENT_OPS = st.tuples(
    st.sampled_from(SLOTS),
    st.sampled_from(["next", "next", "next", "gap", "dup", "old"]),
    st.sampled_from(["stored", "stored", "removed", "cleared"]),
    st.one_of(st.none(), st.integers(0, 7)),
    st.lists(st.integers(0, 7), max_size=4),
    st.sampled_from([0.0, 1.0, 4.0, 9.0]),
)
ROUTER_OPS = st.one_of(
    st.tuples(st.just("batch"), st.sampled_from([0.0, 0.0, 1.0, 3.0]), st.lists(EVENT_OPS, max_size=5)),
    st.tuples(st.just("resync"), st.sampled_from(SLOTS), st.lists(st.integers(0, 7), max_size=4), st.integers(-2, 3)),
    st.tuples(st.just("advance"), st.sampled_from([1.0, 5.0])),
)


def router_state(r: KvRouter) -> tuple[object, ...]:
    """Everything observable about KV event handling: index, stats, sequencer, held events."""
    idx = r.index
    feed = r._feed
    seq = feed.sequencer
    return (
        {k: idx.held_blocks(*k) for k in idx.slots()},
        [(e.worker_id, e.dp_rank, e.event_id, e.data) for e in dump_events(idx)],
        (idx.num_skipped_stored, idx.num_ignored_removed),
        r.stats(),
        dict(seq.expected),
        {k: seq.missing(*k) for k in seq.expected},
        r.take_gap_reports(),
        feed.peek_held(),
        feed._held_seq,
        r.next_due_ms(),
    )


@settings(max_examples=250, deadline=None)
@given(
    ops=st.lists(ROUTER_OPS, max_size=25),
    lag=st.sampled_from([None, 0.0, 3.0]),
    use_kv_events=st.sampled_from([True, True, True, False]),
)
def test_apply_events_equals_apply_event_per_event(
    ops: list[tuple[object, ...]], lag: float | None, use_kv_events: bool
) -> None:
    """A batch through `apply_events` leaves the router exactly as `apply_event` on each event."""
    routers = [KvRouter(cfg(kv_event_lag_ms=lag, use_kv_events=use_kv_events), BS, seed=0) for _ in range(2)]
    for r in routers:
        r.add_worker(0)
        r.add_worker(1, dp_size=2)
        r.add_worker(2)
    next_id = dict.fromkeys(SLOTS, 0)
    now = 0.0
    for op in ops:
        if op[0] == "batch":
            _, dt, specs = op
            assert isinstance(dt, float) and isinstance(specs, list)
            now += dt
            batch = []
            for slot, how, kind, parent, hashes, age in specs:
                nid = next_id[slot]
                eid = {"next": nid, "gap": nid + 2, "dup": max(nid - 1, 0), "old": max(nid - 3, 0)}[how]
                next_id[slot] = max(nid, eid + 1)
                data: KvStored | KvRemoved | KvCleared
                if kind == "stored":
                    data = KvStored(parent, tuple(hashes), tuple(h + 100 for h in hashes))
                elif kind == "removed":
                    data = KvRemoved(tuple(hashes))
                else:
                    data = KvCleared()
                batch.append(KvEvent(now - age, slot[0], slot[1], eid, data))
            for e in batch:
                routers[0].apply_event(e, now)
            routers[1].apply_events(batch, now)
        elif op[0] == "resync":
            _, slot, hashes, delta = op
            assert isinstance(slot, tuple) and isinstance(hashes, list) and isinstance(delta, int)
            nxt = max(next_id[slot] + delta, 0)
            for r in routers:
                r.resync_slot(slot[0], slot[1], hashes, nxt, now)
        else:
            dt = op[1]
            assert isinstance(dt, float)
            now += dt
            for r in routers:
                r.advance(now)
        assert router_state(routers[0]) == router_state(routers[1])
    for r in routers:
        r.advance(now + 100.0)
        r.check_invariants()
    assert router_state(routers[0]) == router_state(routers[1])


def test_apply_events_with_lag_releases_in_due_order() -> None:
    """A batch mixing due and not-yet-due events: due ones apply now, the rest when due."""
    r = KvRouter(cfg(kv_event_lag_ms=10.0), BS, seed=0)
    r.add_worker(0)
    batch = [store(0, 0, [1], t=0.0), store(0, 1, [2], t=5.0, parent=1), store(0, 2, [3], t=1.0, parent=2)]
    r.apply_events(batch, 11.0)
    assert r.index.held_blocks(0, 0) == {1}  # id 2 is due (11.0) but its parent (id 1) is not yet
    assert r.stats().events_held == 1 and r.stats().event_gaps == 1
    r.advance(15.0)
    assert r.index.held_blocks(0, 0) == {1, 2}  # the skipped Stored (no parent then) is not retried
    assert r.stats().stored_skipped_unknown_parent == 1 and r.stats().events_missing == 0
    r.apply_events([], 100.0)  # an empty batch does nothing
    assert r.stats().events_applied == 3
