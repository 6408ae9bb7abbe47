"""A plain model of the reference indexer's semantics (Dynamo 1.6.1 compressed RadixTree),
written from its rules with sets and dicts, sharing no code with `router.radix`/`router.index`.

Rules (block = sequence hash; worker = (worker_id, dp_rank)):
- The tree's edges are runs of blocks; a worker covers a prefix of an edge (all of it,
  or the first k blocks). Children hang off an edge keyed by their first block.
- Stored(parent, blocks): rejected if parent is among blocks. With a parent: the worker
  must hold it (in its lookup) at a covered position, else skipped (a held but uncovered
  parent is also forgotten). If the blocks continue the parent's edge right after the
  parent, the worker just covers more of that edge; if the edge is an unbranched leaf and
  the blocks run past its end, the leaf grows (other full coverers keep the old length).
  Otherwise the edge is split right after the parent and the blocks go below it. Below a
  node, blocks follow matching children (an edge nobody covers counts as absent and is
  replaced), split an edge where they diverge, grow the node's leaf edge when it is an
  unbranched leaf the worker fully covers, or start a new edge.
- Removed(blocks): each held block truncates the worker's coverage of its edge at its
  position (the later blocks of that edge leave the worker's lookup); runs of consecutive
  hashes on one covered edge are removed together at their lowest position. An edge that
  no worker covers fully loses its children.
- Cleared: a worker's rank forgets everything (edges it covered may lose their children).
- find_matches: walk from the root; first edge: full coverers stay active, partial ones
  score min(cutoff, matched); later edges: active workers not fully covering score the
  depth before the edge plus min(cutoff, matched) (0 if they cover nothing); the walk
  stops on a partial edge match, the query's end, no active worker, or (early exit) one.
"""

from __future__ import annotations

from typing import Any

Worker = tuple[int, int]


def node(edge: list[int], full: set[Worker]) -> dict[str, Any]:
    return {"edge": list(edge), "full": set(full), "cut": {}, "kids": {}, "internal": False}


class RadixModel:
    def __init__(self) -> None:
        self.root = node([], set())
        self.root["internal"] = True
        self.lookup: dict[Worker, dict[int, dict[str, Any]]] = {}

    # ------------------------------------------------------------------ coverage helpers
    @staticmethod
    def cutoff(n: dict[str, Any], w: Worker) -> int:
        return len(n["edge"]) if w in n["full"] else n["cut"].get(w, 0)

    def covers(self, n: dict[str, Any], w: Worker, p: int) -> bool:
        return p < self.cutoff(n, w)

    @staticmethod
    def index_of(n: dict[str, Any], h: int) -> int | None:
        found = [i for i, x in enumerate(n["edge"]) if x == h]
        return found[-1] if found else None

    def set_full(self, n: dict[str, Any], w: Worker) -> None:
        n["cut"].pop(w, None)
        n["full"].add(w)

    def cover(self, n: dict[str, Any], w: Worker, k: int) -> None:
        if k <= 0:
            return
        if k >= len(n["edge"]):
            self.set_full(n, w)
        elif w not in n["full"] and n["cut"].get(w, 0) < k:
            n["cut"][w] = k

    def grow(self, n: dict[str, Any], w: Worker, blocks: list[int]) -> None:
        for other in list(n["full"]):
            if other != w:
                n["full"].discard(other)
                n["cut"][other] = len(n["edge"])
        self.set_full(n, w)
        n["edge"].extend(blocks)

    def split(self, n: dict[str, Any], p: int) -> None:
        tail = node(n["edge"][p:], n["full"])
        del n["edge"][p:]
        for w, c in list(n["cut"].items()):
            if c >= p:
                del n["cut"][w]
                n["full"].add(w)
                if c > p:
                    tail["cut"][w] = c - p
        tail["kids"], tail["internal"] = n["kids"], n["internal"]
        n["kids"], n["internal"] = {tail["edge"][0]: tail}, True
        for w in tail["full"]:
            for h in tail["edge"]:
                self.lookup.setdefault(w, {})[h] = tail
        for w, c in tail["cut"].items():
            for h in tail["edge"][:c]:
                self.lookup.setdefault(w, {})[h] = tail

    # -------------------------------------------------------------------------- events
    def stored(self, w: Worker, parent: int | None, blocks: list[int]) -> bool:
        if parent is not None and parent in blocks:
            return False
        mine = self.lookup.setdefault(w, {})
        if parent is None:
            cur = self.root
        else:
            n = mine.get(parent)
            p = None if n is None else self.index_of(n, parent)
            if n is None or p is None:
                return False
            if not self.covers(n, w, p):
                del mine[parent]
                return False
            after = n["edge"][p + 1 :]
            if len(blocks) <= len(after) and after[: len(blocks)] == blocks:
                self.cover(n, w, p + 1 + len(blocks))
                mine.update(dict.fromkeys(blocks, n))
                return True
            if len(blocks) > len(after) and not n["internal"] and blocks[: len(after)] == after:
                self.grow(n, w, blocks[len(after) :])
                mine.update(dict.fromkeys(blocks, n))
                return True
            if n["edge"][-1] != parent:
                self.split(n, p + 1)
            cur = n
        rest = list(blocks)
        while rest:
            child = cur["kids"].get(rest[0])
            if child is None or not (child["full"] or child["cut"]):
                if cur["edge"] and not cur["internal"] and self.covers(cur, w, len(cur["edge"]) - 1):
                    self.grow(cur, w, rest)
                    mine.update(dict.fromkeys(rest, cur))
                else:
                    fresh = node(rest, {w})
                    cur["internal"] = True
                    cur["kids"][rest[0]] = fresh
                    mine.update(dict.fromkeys(rest, fresh))
                return True
            edge = child["edge"]
            m = 0
            while m < len(edge) and m < len(rest) and edge[m] == rest[m]:
                m += 1
            if m < len(edge):
                if m == len(rest):
                    self.cover(child, w, m)
                    mine.update(dict.fromkeys(rest, child))
                    return True
                self.split(child, m)
                self.set_full(child, w)
                mine.update(dict.fromkeys(rest[:m], child))
                fresh = node(rest[m:], {w})
                child["internal"] = True
                child["kids"][rest[m]] = fresh
                mine.update(dict.fromkeys(rest[m:], fresh))
                return True
            self.set_full(child, w)
            mine.update(dict.fromkeys(edge, child))
            rest = rest[len(edge) :]
            cur = child
        return True

    def removed(self, w: Worker, blocks: list[int]) -> None:
        mine = self.lookup.setdefault(w, {})
        i = 0
        while i < len(blocks):
            h = blocks[i]
            i += 1
            n = mine.pop(h, None)
            if n is None:
                continue
            p = self.index_of(n, h)
            assert p is not None
            low = p
            if self.covers(n, w, p):
                while i < len(blocks) and mine.get(blocks[i]) is n:
                    q = self.index_of(n, blocks[i])
                    if q is None or not self.covers(n, w, q):
                        break
                    low = min(low, q)
                    i += 1
            if low < self.cutoff(n, w):
                gone = n["edge"][low:]
                n["full"].discard(w)
                n["cut"].pop(w, None)
                if low > 0:
                    n["cut"][w] = low
            else:
                gone = [h]
            if not n["full"]:
                n["kids"] = {}
            for g in gone:
                mine.pop(g, None)

    def cleared(self, w: Worker) -> None:
        for n in list(self.lookup.pop(w, {}).values()):
            n["full"].discard(w)
            n["cut"].pop(w, None)
            if not n["full"]:
                n["kids"] = {}

    def remove_worker(self, worker_id: int) -> None:
        for w in [k for k in self.lookup if k[0] == worker_id]:
            self.cleared(w)

    # -------------------------------------------------------------------------- queries
    def find_matches(self, query: list[int], early_exit: bool = False) -> dict[Worker, int]:
        scores: dict[Worker, int] = {}
        active: set[Worker] = set()
        depth = 0
        first = True
        n = self.root["kids"].get(query[0]) if query else None
        while n is not None:
            edge = n["edge"]
            m = 0
            while m < len(edge) and depth + m < len(query) and edge[m] == query[depth + m]:
                m += 1
            if m == 0:
                break
            if first:
                active = set(n["full"])
                for w, c in n["cut"].items():
                    scores[w] = min(c, m)
                first = False
            else:
                for w in sorted(active - n["full"]):
                    scores[w] = depth + min(n["cut"].get(w, 0), m)
                active &= n["full"]
            depth += m
            if not active or m < len(edge) or depth == len(query) or (early_exit and len(active) == 1):
                break
            n = n["kids"].get(query[depth])
        for w in active:
            scores[w] = depth
        return scores

    def held(self, w: Worker) -> set[int]:
        return set(self.lookup.get(w, {}))
