"""KvRouter.resync_slot: a publisher snapshot replaces a slot's index entries and restarts its sequence."""

from __future__ import annotations

import pytest

from actors.engine.events import KvEvent, KvRemoved, KvStored
from router.config import KvRouterConfig
from router.dump import dump_events
from router.router import KvRouter
from router.sequencing import Delivery, EventSequencer

BS = 64


def store(w: int, eid: int, hashes: list[int], t: float = 0.0, parent: int | None = None, r: int = 0) -> KvEvent:
    return KvEvent(t, w, r, eid, KvStored(parent, tuple(hashes), tuple(hashes)))


def router(**kw: object) -> KvRouter:
    r = KvRouter(KvRouterConfig.from_mapping(dict(kw)), BS, seed=0)
    r.add_worker(0)
    r.add_worker(1, dp_size=2)
    return r


def test_snapshot_replaces_the_slot_and_older_events_become_duplicates() -> None:
    """Events 0-1 arrive, 2-4 are lost; the snapshot as of event 5 replaces the slot."""
    r = router()
    r.apply_events([store(0, 0, [1, 2, 3]), store(0, 1, [9], parent=3)], 0.0)
    r.apply_event(store(1, 0, [1, 2], r=1), 0.0)
    r.apply_event(store(0, 5, [4], parent=3), 1.0)  # a gap: ids 2..4 missing
    assert r.stats().events_missing == 3 and r.index.held_blocks(0, 0) == {1, 2, 3, 4, 9}
    r.resync_slot(0, 0, [1, 2, 3, 7], next_event_id=6, now_ms=2.0)
    assert r.index.held_blocks(0, 0) == {1, 2, 3, 7}
    assert r.index.held_blocks(1, 1) == {1, 2}  # other slots untouched
    # Block 7 is new since the loss: a snapshot lists no parents, so it becomes a root edge.
    assert r.index.find_matches([1, 2, 3, 7]).scores == {(0, 0): 3, (1, 1): 2}
    assert r.index.find_matches([7]).scores == {(0, 0): 1}
    st = r.stats()
    assert (st.events_missing, st.event_gaps, st.events_applied) == (0, 1, 4)
    # The lost batch shows up after all (a replay): the snapshot already covers it.
    r.apply_events([KvEvent(3.0, 0, 0, i, KvRemoved((1,))) for i in (2, 3, 4, 5)], 3.0)
    assert r.stats().events_duplicate == 4 and r.index.held_blocks(0, 0) == {1, 2, 3, 7}
    # Id 6 is the next one: applied on top of the snapshot, with a snapshot block as parent.
    r.apply_event(store(0, 6, [8], parent=7), 4.0)
    assert r.index.find_matches([7, 8]).scores[(0, 0)] == 2
    assert r.stats().events_applied == 5 and r.take_gap_reports()[0].first == 2
    r.check_invariants()


def test_snapshot_keeps_held_blocks_in_place_and_new_ones_become_roots() -> None:
    r = router()
    r.apply_event(store(0, 0, [1, 2]), 0.0)
    r.resync_slot(0, 0, [2, 1, 5], 1, 0.0)
    dumped = [e.data for e in dump_events(r.index) if e.worker_id == 0]
    assert dumped == [KvStored(None, (1, 2), (0, 0)), KvStored(None, (5,), (0,))]


def test_events_held_by_the_lag_below_next_id_are_dropped_on_release() -> None:
    r = router(kv_event_lag_ms=10.0)
    r.apply_events([store(0, 0, [1], t=0.0), store(0, 1, [2], t=5.0, parent=1), store(0, 2, [3], t=6.0, parent=2)], 6.0)
    assert r.stats().events_held == 3
    r.resync_slot(0, 0, [1, 2], next_event_id=2, now_ms=10.0)  # releases id 0 (due at 10) first
    assert r.index.held_blocks(0, 0) == {1, 2} and r.stats().events_held == 2
    r.advance(20.0)  # id 1 is covered by the snapshot: a duplicate; id 2 applies
    assert r.index.held_blocks(0, 0) == {1, 2, 3}
    st = r.stats()
    assert (st.events_duplicate, st.events_applied, st.events_held) == (1, 2, 0)


def test_unknown_slot_is_counted_and_ignored() -> None:
    r = router()
    r.resync_slot(7, 0, [1, 2], 3, 0.0)  # unregistered worker
    r.resync_slot(0, 1, [1, 2], 3, 0.0)  # worker 0 has no rank 1
    assert r.stats().events_unknown_worker == 2
    assert r.index.find_matches([1, 2]).scores == {} and r.index.peek_slot(7, 0) is None
    with pytest.raises(ValueError, match="next_event_id"):
        r.resync_slot(0, 0, [], -1, 0.0)


def test_approximate_mode_ignores_snapshots() -> None:
    r = router(use_kv_events=False)
    r.resync_slot(0, 0, [1, 2], 3, 0.0)
    assert r.stats().events_ignored == 1 and r.index.find_matches([1, 2]).scores == {}


def test_resync_after_remove_and_readd_of_a_worker() -> None:
    r = router()
    r.apply_event(store(1, 0, [4, 5], r=1), 0.0)
    r.remove_worker(1)
    r.resync_slot(1, 1, [4], 1, 0.0)
    assert r.stats().events_unknown_worker == 1
    r.add_worker(1, dp_size=2)
    r.resync_slot(1, 1, [4], 1, 0.0)
    assert r.index.find_matches([4, 5]).scores == {(1, 1): 1}
    r.apply_event(store(1, 0, [5], r=1, parent=4), 0.0)  # covered by the snapshot
    assert r.stats().events_duplicate == 1
    r.check_invariants()


def test_sequencer_resync() -> None:
    seq = EventSequencer()
    seq.register(0, 1)
    assert [seq.accept(0, 0, i) for i in (0, 3)] == [Delivery.IN_ORDER, Delivery.GAP]
    seq.resync(0, 0, 2)  # an older snapshot than the last event seen: id 3 is delivered again
    assert seq.missing(0, 0) == [] and seq.num_missing == 0
    assert [seq.accept(0, 0, i) for i in (1, 2, 3)] == [Delivery.DUPLICATE, Delivery.IN_ORDER, Delivery.IN_ORDER]
    assert seq.num_gaps == 1 and len(seq.take_gap_reports()) == 1
    with pytest.raises(KeyError):
        seq.resync(5, 0, 0)
