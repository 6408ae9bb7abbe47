"""PrefixIndex: reference-semantics stories, and property tests against a naive dict-of-sets model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.events import KvCleared, KvEvent, KvRemoved, KvStored
from router.dump import dump_events
from router.index import PrefixIndex


def stored(w: int, eid: int, hashes: list[int], parent: int | None = None, r: int = 0) -> KvEvent:
    return KvEvent(0.0, w, r, eid, KvStored(parent, tuple(hashes), tuple(h + 1000 for h in hashes)))


def removed(w: int, eid: int, hashes: list[int], r: int = 0) -> KvEvent:
    return KvEvent(0.0, w, r, eid, KvRemoved(tuple(hashes)))


def test_reference_story_remove_truncates_match() -> None:
    """The fact sheet's RadixTree check: 4 stored -> 4; remove block 4 -> 3; remove block 2 -> 1."""
    idx = PrefixIndex()
    idx.apply(stored(7, 0, [1, 2, 3, 4]))
    assert idx.find_matches([1, 2, 3, 4]).scores == {(7, 0): 4}
    idx.apply(removed(7, 1, [4]))
    assert idx.find_matches([1, 2, 3, 4]).scores == {(7, 0): 3}
    idx.apply(removed(7, 2, [2]))
    assert idx.find_matches([1, 2, 3, 4]).scores == {(7, 0): 1}
    idx.check_invariants()


def test_two_workers_branching_and_frequencies() -> None:
    idx = PrefixIndex()
    idx.apply(stored(0, 0, [1, 2, 3]))
    idx.apply(stored(1, 0, [1, 4, 5]))
    res = idx.find_matches([1, 2, 3])
    assert res.scores == {(0, 0): 3, (1, 0): 1}
    assert res.frequencies == [2, 1, 1]
    assert res.tree_sizes == {(0, 0): 3, (1, 0): 3}
    # A stored event continuing worker 1's chain from a parent it holds.
    idx.apply(stored(1, 1, [2, 6], parent=1))
    assert idx.find_matches([1, 2, 3]).scores == {(0, 0): 3, (1, 0): 2}


def test_unknown_parent_skips_whole_event_like_the_reference() -> None:
    idx = PrefixIndex()
    assert not idx.apply_stored(0, 0, 12345, [1, 2, 3])
    assert idx.num_skipped_stored == 1
    assert idx.find_matches([1, 2, 3]).scores == {}
    assert idx.apply_removed(0, 0, [1, 2, 3]) == 3  # unknown blocks are ignored


def test_duplicates_are_idempotent_and_cleared_is_per_rank() -> None:
    idx = PrefixIndex()
    for _ in range(3):
        idx.apply(stored(0, 0, [1, 2], r=0))
    idx.apply(stored(0, 1, [1, 2], r=1))
    assert idx.find_matches([1, 2]).scores == {(0, 0): 2, (0, 1): 2}
    idx.apply(KvEvent(0.0, 0, 1, 5, KvCleared()))
    assert idx.find_matches([1, 2]).scores == {(0, 0): 2}
    idx.clear(0)  # no rank: all ranks of the worker
    assert idx.find_matches([1, 2]).scores == {}
    assert idx.slots() == [(0, 0), (0, 1)]
    idx.check_invariants()


def test_early_exit_stops_at_a_unique_holder() -> None:
    idx = PrefixIndex()
    idx.apply(stored(0, 0, [1, 2, 3, 4]))
    idx.apply(stored(1, 0, [1, 2]))
    assert idx.find_matches([1, 2, 3, 4], early_exit=True).scores == {(1, 0): 2, (0, 0): 3}
    idx.remove_worker(1)
    assert idx.find_matches([1, 2, 3, 4], early_exit=True).scores == {(0, 0): 1}


def test_remove_worker_frees_slot_for_reuse() -> None:
    idx = PrefixIndex()
    idx.apply(stored(0, 0, [1]))
    idx.apply(stored(1, 0, [1]))
    idx.remove_worker(0)
    assert idx.slot(2, 0) == 0  # lowest free slot is reused
    assert idx.find_matches([1]).scores == {(1, 0): 1}
    idx.check_invariants()


def test_many_slots_use_the_numpy_decoder() -> None:
    idx = PrefixIndex()
    for w in range(300):
        idx.apply(stored(w, 0, list(range(1, 2 + w % 10))))
    res = idx.find_matches(list(range(1, 12)))
    assert res.scores == {(w, 0): 1 + w % 10 for w in range(300)}
    slots, depths = idx.match_depths(list(range(1, 12)))
    assert sorted(zip(slots.tolist(), depths.tolist())) == [(w, 1 + w % 10) for w in range(300)]


# ----------------------------------------------------------------------------- properties

HASHES = st.integers(min_value=0, max_value=11)
WORKERS = st.integers(min_value=0, max_value=3)
RANKS = st.integers(min_value=0, max_value=1)
OPS = st.one_of(
    st.tuples(st.just("stored"), WORKERS, RANKS, st.one_of(st.none(), HASHES), st.lists(HASHES, max_size=5)),
    st.tuples(st.just("removed"), WORKERS, RANKS, st.none(), st.lists(HASHES, max_size=5)),
    st.tuples(st.just("cleared"), WORKERS, RANKS, st.none(), st.just([])),
    st.tuples(st.just("remove_worker"), WORKERS, RANKS, st.none(), st.just([])),
)


class NaiveIndex:
    """dict (worker, rank) -> set of hashes, with the same event semantics, written plainly."""

    def __init__(self) -> None:
        self.sets: dict[tuple[int, int], set[int]] = {}

    def apply(self, op: tuple[str, int, int, int | None, list[int]]) -> None:
        kind, w, r, parent, hashes = op
        if kind == "stored":
            held = self.sets.setdefault((w, r), set())
            if parent is None or parent in held:
                held.update(hashes)
        elif kind == "removed":
            if (w, r) in self.sets:
                self.sets[(w, r)].difference_update(hashes)
        elif kind == "cleared":
            if (w, r) in self.sets:
                self.sets[(w, r)] = set()
        else:
            for key in [k for k in self.sets if k[0] == w]:
                del self.sets[key]

    def find_matches(self, query: list[int]) -> dict[tuple[int, int], int]:
        out = {}
        for key, held in self.sets.items():
            k = 0
            while k < len(query) and query[k] in held:
                k += 1
            if k:
                out[key] = k
        return out


def apply_op(idx: PrefixIndex, op: tuple[str, int, int, int | None, list[int]], eid: int) -> None:
    kind, w, r, parent, hashes = op
    if kind == "stored":
        idx.apply(stored(w, eid, hashes, parent, r))
    elif kind == "removed":
        idx.apply(removed(w, eid, hashes, r))
    elif kind == "cleared":
        if idx.peek_slot(w, r) is not None:
            idx.apply(KvEvent(0.0, w, r, eid, KvCleared()))
    else:
        idx.remove_worker(w)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(OPS, max_size=40), queries=st.lists(st.lists(HASHES, max_size=8), min_size=1, max_size=4))
def test_index_equals_naive_model(ops: list[tuple[str, int, int, int | None, list[int]]], queries: list[list[int]]) -> None:
    idx, naive = PrefixIndex(), NaiveIndex()
    for eid, op in enumerate(ops):
        apply_op(idx, op, eid)
        naive.apply(op)
        idx.check_invariants()
    for key, held in naive.sets.items():
        assert idx.held_blocks(*key) == frozenset(held)
    assert {k for k, v in naive.sets.items()} == set(idx.slots())
    for q in queries:
        expected = naive.find_matches(q)
        res = idx.find_matches(q)
        assert res.scores == expected
        slots, depths = idx.match_depths(q)
        assert {idx.key_of(s): d for s, d in zip(slots.tolist(), depths.tolist())} == expected
        # frequencies[d] = number of slots matching more than d blocks
        assert res.frequencies == [sum(1 for v in expected.values() if v > d) for d in range(len(res.frequencies))]
        assert len(res.frequencies) == max(expected.values(), default=0)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(OPS, max_size=40))
def test_dump_rebuilds_the_same_index(ops: list[tuple[str, int, int, int | None, list[int]]]) -> None:
    idx = PrefixIndex()
    for eid, op in enumerate(ops):
        apply_op(idx, op, eid)
    rebuilt = PrefixIndex()
    for ev in dump_events(idx):
        rebuilt.apply(ev)
    assert rebuilt.num_skipped_stored == 0
    for key in idx.slots():
        if idx.held_blocks(*key):
            assert rebuilt.held_blocks(*key) == idx.held_blocks(*key)
    assert {k for k in rebuilt.slots()} == {k for k in idx.slots() if idx.held_blocks(*k)}


# ------------------------------------------------------------------ batches and resync snapshots

OPS_WITH_REPLACE = st.one_of(
    OPS, st.tuples(st.just("replace"), WORKERS, RANKS, st.none(), st.lists(HASHES, max_size=6))
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(OPS_WITH_REPLACE, max_size=40),
    cuts=st.lists(st.integers(min_value=1, max_value=4), max_size=40),
    queries=st.lists(st.lists(HASHES, max_size=8), min_size=1, max_size=4),
)
def test_apply_many_and_replace_slot_equal_naive_model(
    ops: list[tuple[str, int, int, int | None, list[int]]], cuts: list[int], queries: list[list[int]]
) -> None:
    """Events applied in chunks through `apply_many`, interleaved with snapshots, match the model."""
    idx, naive = PrefixIndex(), NaiveIndex()
    chunk: list[KvEvent] = []
    sizes = iter(cuts)
    for eid, (kind, w, r, parent, hashes) in enumerate(ops):
        if kind in ("stored", "removed", "cleared"):
            if kind == "stored":
                chunk.append(stored(w, eid, hashes, parent, r))
            elif kind == "removed":
                chunk.append(removed(w, eid, hashes, r))
            elif (w, r) in naive.sets:  # Cleared of an unknown slot: the model has nothing to clear
                chunk.append(KvEvent(0.0, w, r, eid, KvCleared()))
            if len(chunk) >= next(sizes, 1):
                idx.apply_many(chunk)
                chunk = []
        else:
            idx.apply_many(chunk)
            chunk = []
            if kind == "replace":
                idx.replace_slot(w, r, hashes)
            else:
                idx.remove_worker(w)
        if kind == "replace":
            naive.sets[(w, r)] = set(hashes)
        else:
            naive.apply((kind, w, r, parent, hashes))
    idx.apply_many(chunk)
    idx.check_invariants()
    assert {k: set(v) for k, v in naive.sets.items()} == {k: set(idx.held_blocks(*k)) for k in idx.slots()}
    for q in queries:
        assert idx.find_matches(q).scores == naive.find_matches(q)


def test_replace_slot_stores_roots_and_leaves_other_slots_alone() -> None:
    idx = PrefixIndex()
    idx.apply(stored(0, 0, [1, 2, 3]))
    idx.apply(stored(1, 0, [1, 2, 3]))
    idx.replace_slot(1, 0, [1, 2, 9, 9])
    assert idx.held_blocks(1, 0) == {1, 2, 9}
    assert idx.find_matches([1, 2, 3]).scores == {(0, 0): 3, (1, 0): 2}
    # Roots: no parent needed to match, and the dump shows parent None and token hash 0.
    assert idx.find_matches([9]).scores == {(1, 0): 1}
    dumped = [(e.worker_id, e.data) for e in dump_events(idx)]
    assert [d for w, d in dumped if w == 1] == [KvStored(None, (h,), (0,)) for h in (1, 2, 9)]
    # Worker 0 still has the parents and token hashes its events recorded.
    assert [d for w, d in dumped if w == 0] == [KvStored(p, (h,), (h + 1000,)) for p, h in ((None, 1), (1, 2), (2, 3))]
    # A Stored continuing from a snapshot block is accepted (the parent is held).
    assert idx.apply_stored(1, 0, 9, [10])
    idx.replace_slot(1, 0, [])
    assert idx.held_blocks(1, 0) == frozenset() and idx.find_matches([9]).scores == {}
    idx.check_invariants()
