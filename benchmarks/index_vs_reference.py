"""Router index vs the reference indexer: do overlap scores agree, query by query?

Generates seeded KV event sequences, feeds them both to `router.index.PrefixIndex` and to
the reference's `dynamo._core.RadixTree` (Dynamo 1.6.1, events as JSON), and after every
few events asks both the same overlap queries. Prints, per profile, how many queries agree.

Profiles
- engine: what engines emit. Ranks with an LRU block pool; each request stores its
  uncached prompt blocks as one event (parent = last cached block), then decode blocks
  one event each; eviction is leaf first, one Removed per block.
- adversarial: interior removals (several blocks per event), re-stores of removed blocks
  under their parent, stores continuing or diverging from existing edges, unknown and
  stale parents, Cleared of one rank, worker removal; 2 ranks per worker.

Hashes are chained like an engine's: a block's sequence hash mixes its parent's sequence
hash and its token hash. The reference is queried by token hashes, the index by sequence
hashes. The reference is never a dependency: without it the script says so and exits 0.

    python benchmarks/index_vs_reference.py [--seed 0] [--sequences 60] [--queries 60] \\
        [--reference-site /path/to/refvenv/lib/python3.11/site-packages]
    python benchmarks/index_vs_reference.py --record tests/data/index_reference_cases.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from actors.engine.events import KvCleared, KvEvent, KvRemoved, KvStored
from router.index import PrefixIndex

MASK63 = (1 << 63) - 1
Op = list[Any]
"""["stored", worker, rank, parent_or_None, [[bh, th], ...]] | ["removed", worker, rank, [bh, ...]] |
["cleared", worker, rank] | ["remove_worker", worker] | ["query", early_exit, [[bh, th], ...]]"""


def chain_hash(parent: int | None, th: int) -> int:
    """A block's sequence hash from its parent's and its token hash (splitmix64-style mix)."""
    x = ((parent or 0x9E3779B97F4A7C15) * 0xBF58476D1CE4E5B9 + th * 0x94D049BB133111EB + 1) & ((1 << 64) - 1)
    x ^= x >> 31
    return (x * 0xD6E8FEB86659FD93 & ((1 << 64) - 1)) >> 1 & MASK63 or 1


class Universe:
    """Every block ever generated: sequence hash -> (parent sequence hash, token hash)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.meta: dict[int, tuple[int | None, int]] = {}
        self.children: dict[int | None, list[int]] = {}

    def child(self, parent: int | None, fresh_p: float) -> tuple[int, int]:
        """A block under `parent`: an existing child (overlap) or a fresh one."""
        kids = self.children.get(parent, [])
        if kids and self.rng.random() > fresh_p:
            bh = kids[int(self.rng.integers(len(kids)))]
            return bh, self.meta[bh][1]
        th = int(self.rng.integers(1, 1 << 31))
        bh = chain_hash(parent, th)
        if bh not in self.meta:
            self.meta[bh] = (parent, th)
            self.children.setdefault(parent, []).append(bh)
        return bh, th

    def path(self, bh: int) -> list[list[int]]:
        out: list[list[int]] = []
        cur: int | None = bh
        while cur is not None:
            parent, th = self.meta[cur]
            out.append([cur, th])
            cur = parent
        return out[::-1]

    def query(self) -> list[list[int]]:
        if not self.meta or self.rng.random() < 0.05:
            return [list(self.child(None, 1.0))]
        keys = list(self.meta)
        path = self.path(keys[int(self.rng.integers(len(keys)))])
        tail = path[-1][0]
        for _ in range(int(self.rng.integers(0, 3))):
            bh, th = self.child(tail, 0.3)
            path.append([bh, th])
            tail = bh
        return path


def engine_ops(seed: int, n_requests: int, queries_per: int) -> list[Op]:
    rng = np.random.default_rng(seed)
    uni = Universe(rng)
    ranks = [(w, r) for w in range(3) for r in range(int(rng.integers(1, 3)))]
    cap = int(rng.integers(12, 40))
    lru: dict[tuple[int, int], dict[int, int]] = {k: {} for k in ranks}  # held hash -> last use
    groups = [[uni.child(None, 1.0)] for _ in range(4)]
    for g in groups:
        for _ in range(int(rng.integers(2, 8))):
            g.append(uni.child(g[-1][0], 1.0))
    ops: list[Op] = []
    clock = 0
    for i in range(n_requests):
        key = ranks[int(rng.integers(len(ranks)))]
        held = lru[key]
        g = groups[int(rng.integers(len(groups)))]
        chain = [list(b) for b in g[: int(rng.integers(1, len(g) + 1))]]
        for _ in range(int(rng.integers(0, 6))):
            chain.append(list(uni.child(chain[-1][0], 0.7)))
        j = 0
        while j < len(chain) and chain[j][0] in held:
            j += 1
        new = chain[j:]
        if new:
            ops.append(["stored", key[0], key[1], chain[j - 1][0] if j else None, new])
        for _ in range(int(rng.integers(0, 3))):  # decode blocks, one event each
            b = list(uni.child(chain[-1][0], 1.0))
            ops.append(["stored", key[0], key[1], chain[-1][0], [b]])
            chain.append(b)
        for b in chain:
            clock += 1
            held[b[0]] = clock
        while len(held) > cap:  # evict the least recently used leaf (children before parents)
            parents = {uni.meta[h][0] for h in held}
            victim = min((h for h in held if h not in parents), key=lambda h: held[h])
            del held[victim]
            ops.append(["removed", key[0], key[1], [victim]])
        if i % 2 == 1:
            ops.extend(["query", bool(rng.random() < 0.2), uni.query()] for _ in range(queries_per))
    return ops


def adversarial_ops(seed: int, n_steps: int, queries_per: int) -> list[Op]:
    rng = np.random.default_rng(seed)
    uni = Universe(rng)
    keys = [(w, r) for w in range(3) for r in range(2)]
    held: dict[tuple[int, int], list[int]] = {k: [] for k in keys}
    removed: list[int] = []
    ops: list[Op] = []
    for step in range(n_steps):
        key = keys[int(rng.integers(len(keys)))]
        mine = held[key]
        u = rng.random()
        if u < 0.45:  # store a chain under None / a held block / a removed or unknown parent
            v = rng.random()
            if v < 0.3 or not mine:
                parent: int | None = None
            elif v < 0.8:
                parent = mine[int(rng.integers(len(mine)))]
            elif v < 0.9 and removed:
                parent = removed[int(rng.integers(len(removed)))]
            else:  # a block nobody was told about
                parent = uni.child(None, 1.0)[0]
            blocks, tail = [], parent
            for _ in range(int(rng.integers(1, 6))):
                b = list(uni.child(tail, 0.5))
                blocks.append(b)
                tail = b[0]
            ops.append(["stored", key[0], key[1], parent, blocks])
            mine.extend(b[0] for b in blocks if b[0] not in mine)
        elif u < 0.7 and mine:  # remove 1-3 held blocks, interior ones included
            k = min(len(mine), int(rng.integers(1, 4)))
            gone = [mine[int(x)] for x in rng.choice(len(mine), size=k, replace=False)]
            if rng.random() < 0.2:
                gone.append(uni.child(None, 1.0)[0])  # a block this rank never held
            ops.append(["removed", key[0], key[1], gone])
            held[key] = [h for h in mine if h not in gone]
            removed.extend(gone)
        elif u < 0.85 and removed:  # re-store a removed block under its true parent
            bh = removed[int(rng.integers(len(removed)))]
            if bh in uni.meta:
                parent, th = uni.meta[bh]
                ops.append(["stored", key[0], key[1], parent, [[bh, th]]])
                if bh not in mine:
                    mine.append(bh)
        elif u < 0.93:
            ops.append(["cleared", key[0], key[1]])
            held[key] = []
        elif u < 0.96:
            ops.append(["remove_worker", key[0]])
            for other in keys:
                if other[0] == key[0]:
                    held[other] = []
        if step % 3 == 2:
            ops.extend(["query", bool(rng.random() < 0.2), uni.query()] for _ in range(queries_per))
    return ops


def to_event(op: Op, eid: int) -> KvEvent:
    kind, w, r = op[0], op[1], op[2]
    if kind == "stored":
        bhs = tuple(b[0] for b in op[4])
        return KvEvent(0.0, w, r, eid, KvStored(op[3], bhs, tuple(b[1] for b in op[4])))
    if kind == "removed":
        return KvEvent(0.0, w, r, eid, KvRemoved(tuple(op[3])))
    return KvEvent(0.0, w, r, eid, KvCleared())


def run_ours(ops: list[Op]) -> list[dict[tuple[int, int], int]]:
    """Scores of every query of `ops` from the project's index."""
    idx = PrefixIndex()
    out = []
    for eid, op in enumerate(ops):
        if op[0] == "query":
            out.append(idx.find_matches([b[0] for b in op[2]], early_exit=op[1]).scores)
        elif op[0] == "remove_worker":
            idx.remove_worker(op[1])
        else:
            idx.apply(to_event(op, eid))
    return out


def run_reference(tree_cls: Any, ops: list[Op]) -> list[dict[tuple[int, int], int]]:
    """Scores of every query of `ops` from the reference RadixTree (errors are its skips)."""
    tree = tree_cls()
    out = []
    for eid, op in enumerate(ops):
        kind = op[0]
        if kind == "query":
            res = tree.find_matches([b[1] for b in op[2]], early_exit=op[1])
            out.append({(int(w), int(r)): int(s) for (w, r), s in res.scores.items()})
            continue
        if kind == "remove_worker":
            tree.remove_worker(op[1])
            continue
        if kind == "stored":
            blocks = [{"block_hash": bh, "tokens_hash": th} for bh, th in op[4]]
            data: Any = {"stored": {"parent_hash": op[3], "blocks": blocks}}
        elif kind == "removed":
            data = {"removed": {"block_hashes": op[3]}}
        else:
            data = "cleared"
        try:
            tree.apply_event(op[1], json.dumps({"event_id": eid, "data": data, "dp_rank": op[2]}).encode())
        except RuntimeError:
            pass  # ParentBlockNotFound / BlockNotFound / InvalidBlockSequence: the reference skips
    return out


PROFILES = {"engine": engine_ops, "adversarial": adversarial_ops}
STEPS = {"engine": 40, "adversarial": 60}
"""Requests / steps per sequence: about 60 queries each at 3 per query point."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sequences", type=int, default=60, help="event sequences per profile")
    ap.add_argument("--queries", type=int, default=60, help="queries per sequence (about)")
    ap.add_argument("--record", type=Path, help="write a small set of reference answers as test data")
    ap.add_argument("--show", type=int, default=3, help="disagreements to print per profile")
    ap.add_argument("--reference-site", type=Path, default=os.environ.get("CLUSTERSIM_REFERENCE_SITE"),
                    help="site-packages of a venv with the ai-dynamo wheel (appended to sys.path; "
                    "default $CLUSTERSIM_REFERENCE_SITE)")
    args = ap.parse_args()
    if args.reference_site is not None:
        sys.path.append(str(args.reference_site))
    try:
        os.environ.setdefault("DYN_LOG", "error")  # its skip warnings are expected here
        from dynamo._core import RadixTree
    except ImportError:
        print("dynamo (the reference) is not importable here: nothing to compare (skipped)")
        return 0
    if args.record is not None:
        return record(RadixTree, args.record, args.seed)
    all_agree = True
    for name, gen in PROFILES.items():
        agree = total = shown = 0
        for k in range(args.sequences):
            seed = args.seed * 100_003 + k
            ops = trim_queries(gen(seed, STEPS[name], 3), args.queries)
            ours, ref = run_ours(ops), run_reference(RadixTree, ops)
            for q, (a, b) in enumerate(zip(ours, ref, strict=True)):
                total += 1
                agree += a == b
                if a != b and shown < args.show:
                    shown += 1
                    print(f"  {name} seed {seed} query {q}: ours {sorted(a.items())} reference {sorted(b.items())}")
        all_agree &= agree == total
        print(f"{name:<12} {agree} of {total} queries agree")
    return 0 if all_agree else 1


def trim_queries(ops: list[Op], n: int) -> list[Op]:
    """Keep the first `n` queries of a sequence (and every event before the last kept one)."""
    out, seen = [], 0
    for op in ops:
        if op[0] == "query":
            if seen == n:
                break
            seen += 1
        out.append(op)
    return out


def record(tree_cls: Any, path: Path, seed: int) -> int:
    """Reference answers for a few sequences of each profile, for tests without the reference."""
    cases = []
    for name, gen in PROFILES.items():
        for k in range(8):
            ops = trim_queries(gen(seed * 100_003 + 7_000 + k, 24, 2), 16)
            cases.append({"profile": name, "ops": ops,
                          "scores": [sorted([w, r, s] for (w, r), s in sc.items()) for sc in run_reference(tree_cls, ops)]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"reference": "dynamo 1.6.1 dynamo._core.RadixTree", "cases": cases},
                               separators=(",", ":")) + "\n")
    print(f"recorded {len(cases)} sequences, {sum(len(c['scores']) for c in cases)} queries to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
