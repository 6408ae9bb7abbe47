"""PrefixIndex: reference-semantics stories, recorded reference answers, and property tests
against a plain model of the reference indexer (tests/radix_model.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors.engine.events import KvCleared, KvEvent, KvRemoved, KvStored
from router.dump import dump_events
from router.index import PrefixIndex
from tests.radix_model import RadixModel


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
    # Early exit works per edge, like the reference: worker 0 alone covers edge [3, 4] whole.
    assert idx.find_matches([1, 2, 3, 4], early_exit=True).scores == {(1, 0): 2, (0, 0): 4}
    idx.remove_worker(1)
    assert idx.find_matches([1, 2, 3, 4], early_exit=True).scores == {(0, 0): 4}  # one edge [1, 2, 3, 4]


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


class Chain:
    """Chained hashing for generated ops, as an engine hashes: a block's sequence hash is an id
    interned per (parent hash, token), so a hash fixes its whole prefix (no hash repeats on a
    path). Stored ops carry tokens under a parent hash; Removed/replace ops carry hashes."""

    def __init__(self) -> None:
        self.ids: dict[tuple[int | None, int], int] = {}

    def block(self, parent: int | None, token: int) -> int:
        return self.ids.setdefault((parent, token), len(self.ids) + 1)

    def chain(self, parent: int | None, tokens: list[int]) -> list[int]:
        out = []
        for t in tokens:
            parent = self.block(parent, t)
            out.append(parent)
        return out

    def op(self, op: tuple[str, int, int, int | None, list[int]]) -> tuple[str, int, int, int | None, list[int]]:
        kind, w, r, parent, hashes = op
        return (kind, w, r, parent, self.chain(parent, hashes)) if kind == "stored" else op


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


def model_op(model: RadixModel, op: tuple[str, int, int, int | None, list[int]]) -> None:
    kind, w, r, parent, hashes = op
    if kind == "stored":
        model.stored((w, r), parent, hashes)
    elif kind == "removed":
        model.removed((w, r), hashes)
    elif kind == "cleared":
        model.cleared((w, r))
    else:
        model.remove_worker(w)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(OPS, max_size=40), tokens=st.lists(st.lists(HASHES, max_size=8), min_size=1, max_size=4))
def test_index_equals_reference_model(
    ops: list[tuple[str, int, int, int | None, list[int]]], tokens: list[list[int]]
) -> None:
    idx, model, chain = PrefixIndex(), RadixModel(), Chain()
    for eid, raw in enumerate(ops):
        op = chain.op(raw)
        apply_op(idx, op, eid)
        model_op(model, op)
        idx.check_invariants()
    for key in idx.slots():
        assert idx.held_blocks(*key) == frozenset(model.held(key))
    for q in (chain.chain(None, t) for t in tokens):
        for early in (False, True):
            expected = model.find_matches(q, early)
            res = idx.find_matches(q, early)
            assert res.scores == expected, (q, early)
        expected = model.find_matches(q)
        slots, depths = idx.match_depths(q)
        assert {idx.key_of(s): d for s, d in zip(slots.tolist(), depths.tolist())} == expected
        res = idx.find_matches(q)
        # frequencies[d] = number of slots matching more than d blocks
        assert res.frequencies == [sum(1 for v in expected.values() if v > d) for d in range(len(res.frequencies))]
        assert len(res.frequencies) == max(expected.values(), default=0)


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(OPS, max_size=40), tokens=st.lists(st.lists(HASHES, max_size=8), min_size=1, max_size=6))
def test_dump_rebuilds_the_matching_state(
    ops: list[tuple[str, int, int, int | None, list[int]]], tokens: list[list[int]]
) -> None:
    idx, chain = PrefixIndex(), Chain()
    for eid, op in enumerate(ops):
        apply_op(idx, chain.op(op), eid)
    rebuilt = PrefixIndex()
    for ev in dump_events(idx):
        rebuilt.apply(ev)
    rebuilt.check_invariants()
    for q in (chain.chain(None, t) for t in tokens):
        assert rebuilt.find_matches(q).scores == idx.find_matches(q).scores


# ------------------------------------------------------------------ batches and resync snapshots

OPS_WITH_REPLACE = st.one_of(
    OPS, st.tuples(st.just("replace"), WORKERS, RANKS, st.none(), st.lists(HASHES, max_size=6))
)


@settings(max_examples=150, deadline=None)
@example(ops=[("stored", 0, 0, None, []), ("stored", 0, 0, None, []), ("stored", 0, 0, None, [0, 0]),
              ("replace", 0, 0, None, [2])], cuts=[], tokens=[[]])  # the replace keeps a block it detaches
@given(
    ops=st.lists(OPS_WITH_REPLACE, max_size=40),
    cuts=st.lists(st.integers(min_value=1, max_value=4), max_size=40),
    tokens=st.lists(st.lists(HASHES, max_size=8), min_size=1, max_size=4),
)
def test_apply_many_and_replace_slot_equal_the_model(
    ops: list[tuple[str, int, int, int | None, list[int]]], cuts: list[int], tokens: list[list[int]]
) -> None:
    """Events applied in chunks through `apply_many`, interleaved with snapshots, match the model.

    The model's snapshot: a Removed of the blocks not listed (in hash order), then each listed
    block the slot no longer holds (new, or detached by that removal) stored as a root, in order."""
    idx, model, chain = PrefixIndex(), RadixModel(), Chain()
    chunk: list[KvEvent] = []
    sizes = iter(cuts)
    for eid, (kind, w, r, parent, hashes) in enumerate(map(chain.op, ops)):
        if kind in ("stored", "removed", "cleared"):
            if kind == "stored":
                chunk.append(stored(w, eid, hashes, parent, r))
            elif kind == "removed":
                chunk.append(removed(w, eid, hashes, r))
            else:
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
            held = model.held((w, r))
            model.removed((w, r), sorted(held - set(hashes)))
            kept = model.held((w, r))  # a removal detaches the children nobody else holds: listed, they return
            for h in dict.fromkeys(hashes):
                if h not in kept:
                    model.stored((w, r), None, [h])
        else:
            model_op(model, (kind, w, r, parent, hashes))
    idx.apply_many(chunk)
    idx.check_invariants()
    for key in idx.slots():
        assert set(idx.held_blocks(*key)) == model.held(key)
    for q in (chain.chain(None, t) for t in tokens):
        assert idx.find_matches(q).scores == model.find_matches(q)


def test_replace_slot_stores_roots_and_leaves_other_slots_alone() -> None:
    idx = PrefixIndex()
    idx.apply(stored(0, 0, [1, 2, 3]))
    idx.apply(stored(1, 0, [1, 2, 3]))
    idx.replace_slot(1, 0, [1, 2, 9, 9])
    assert idx.held_blocks(1, 0) == {1, 2, 9}
    assert idx.find_matches([1, 2, 3]).scores == {(0, 0): 3, (1, 0): 2}
    # A new snapshot block becomes a root edge; block 3 (not listed) truncated worker 1's edge.
    assert idx.find_matches([9]).scores == {(1, 0): 1}
    dumped = [(e.worker_id, e.data) for e in dump_events(idx)]
    assert [d for w, d in dumped if w == 1] == [KvStored(None, (1, 2), (0, 0)), KvStored(None, (9,), (0,))]
    assert [d for w, d in dumped if w == 0] == [KvStored(None, (1, 2, 3), (0, 0, 0))]
    # A Stored continuing from a snapshot block is accepted (the parent is held).
    assert idx.apply_stored(1, 0, 9, [10])
    idx.replace_slot(1, 0, [])
    assert idx.held_blocks(1, 0) == frozenset() and idx.find_matches([9]).scores == {}
    idx.check_invariants()


# ------------------------------------------------------------------ the reference's own answers

def test_minimal_case_re_store_detaches_the_tail() -> None:
    """Issue 11's minimal case: store 11-12-13, remove 12, store 12 again: 2 blocks match
    (the reference truncates the edge at 12), not 3."""
    idx = PrefixIndex()
    idx.apply(stored(0, 0, [11, 12, 13]))
    idx.apply(removed(0, 1, [12]))
    assert idx.find_matches([11, 12, 13]).scores == {(0, 0): 1}
    idx.apply(stored(0, 2, [12], parent=11))
    assert idx.find_matches([11, 12, 13]).scores == {(0, 0): 2}
    assert idx.held_blocks(0, 0) == {11, 12}  # 13 left with the truncation
    assert idx.apply_removed(0, 0, [13]) == 1
    idx.check_invariants()


def test_a_removed_parent_stops_other_holders_matching_through_it() -> None:
    """Worker 0 loses block 2 but still holds 3: the walk drops it at 2 (score 1) while
    worker 1, holding 1-2 only, scores 2."""
    idx = PrefixIndex()
    idx.apply(stored(0, 0, [1, 2, 3]))
    idx.apply(stored(1, 0, [1, 2]))
    idx.apply(removed(0, 1, [2]))
    assert idx.find_matches([1, 2, 3]).scores == {(0, 0): 1, (1, 0): 2}


def test_an_edge_nobody_covers_whole_loses_its_children() -> None:
    """Checked against dynamo._core.RadixTree: edge [1, 2] has children [3] (worker 0) and [4]
    (worker 1); both remove 2, so the children are detached: worker 0 re-storing 2 matches
    2 blocks, not 3, although it never removed 3; storing 3 again reattaches it."""
    idx = PrefixIndex()
    idx.apply(stored(0, 0, [1, 2]))
    idx.apply(stored(0, 1, [3], parent=2))
    idx.apply(stored(1, 0, [1, 2, 4]))
    assert idx.find_matches([1, 2, 3]).scores == {(0, 0): 3, (1, 0): 2}
    idx.apply(removed(0, 2, [2]))
    idx.apply(removed(1, 1, [2]))
    idx.apply(stored(0, 3, [2], parent=1))
    assert idx.find_matches([1, 2, 3]).scores == {(0, 0): 2, (1, 0): 1}
    assert 3 in idx.held_blocks(0, 0)
    idx.apply(stored(0, 4, [3], parent=2))
    assert idx.find_matches([1, 2, 3]).scores == {(0, 0): 3, (1, 0): 1}
    idx.check_invariants()


REFERENCE_CASES = Path(__file__).parent / "data" / "index_reference_cases.json"


def replay_recorded(ops: list[list[Any]]) -> list[dict[tuple[int, int], int]]:
    """Apply a recorded op list (the script's format) and answer its queries."""
    idx = PrefixIndex()
    out = []
    for eid, op in enumerate(ops):
        kind = op[0]
        if kind == "query":
            out.append(idx.find_matches([b[0] for b in op[2]], early_exit=op[1]).scores)
        elif kind == "remove_worker":
            idx.remove_worker(op[1])
        elif kind == "stored":
            idx.apply(KvEvent(0.0, op[1], op[2], eid, KvStored(op[3], tuple(b[0] for b in op[4]), tuple(b[1] for b in op[4]))))
        elif kind == "removed":
            idx.apply(removed(op[1], eid, op[3], op[2]))
        else:
            idx.apply(KvEvent(0.0, op[1], op[2], eid, KvCleared()))
        idx.check_invariants()
    return out


def test_recorded_reference_answers() -> None:
    """Every query of the recorded sequences scores as `dynamo._core.RadixTree` (1.6.1) did
    (recorded by `benchmarks/index_vs_reference.py --record`)."""
    cases = json.loads(REFERENCE_CASES.read_text())["cases"]
    assert {c["profile"] for c in cases} == {"engine", "adversarial"}
    n = 0
    for case in cases:
        ours = replay_recorded(case["ops"])
        expected = [{(w, r): s for w, r, s in sc} for sc in case["scores"]]
        assert ours == expected
        n += len(ours)
    assert n >= 200
