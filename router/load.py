"""Router-side load prediction, as the reference router does it (facts §i).

The router does not wait for engine metrics to know how loaded a worker is; it
predicts from its own decisions:
- on routing, the request's uncached prompt tokens (`isl - cached`) are added to the
  slot's active prefill tokens, and its blocks to the slot's active blocks;
- at the request's first token, its prefill tokens are released;
- at completion (or cancel), its blocks are released.

Active blocks are deduplicated by block hash when `assume_kv_reuse` is on: a slot's
active blocks = distinct full-block hashes referenced by its active requests, plus
each request's private blocks (the partial last block, and any blocks beyond the
hashed ones). A new request's *additional* blocks on a slot are its request blocks
minus the leading blocks it shares with that slot's active requests (under chained
hashes, sharing any block implies sharing the whole prefix before it).

Optionally (`load_metrics_weight` w > 0) the decode term blends the prediction with
the last `LoadMetrics.active_blocks` the slot reported: (1-w)*predicted + w*reported.

Invariants (`check_invariants`): for every slot, `active_blocks == len(refs) + private`
(or the sum of request blocks without reuse); `active_requests` equals the number of
tracked requests on the slot; prefill tokens are >= 0 and equal to the sum of the
unreleased prefill tokens of its requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from router.bitsets import IntArray, decode_runs, leading_runs

FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class TrackedRequest:
    """What the tracker charged to a slot for one request."""

    slot: int
    prefill_tokens: int
    """Unreleased prefill tokens (0 once the first token came back)."""
    hashes: tuple[int, ...]
    """Full-block hashes referenced (empty without kv reuse)."""
    private_blocks: int


class LoadTracker:
    """Per-slot predicted load: active prefill tokens, active blocks, active requests."""

    __slots__ = (
        "block_size",
        "assume_kv_reuse",
        "prefill_tokens",
        "active_blocks",
        "active_requests",
        "reported_blocks",
        "_private",
        "_refs",
        "_masks",
        "_requests",
        "_ibuf",
        "_fbuf",
    )

    def __init__(self, block_size: int, assume_kv_reuse: bool) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.block_size = block_size
        self.assume_kv_reuse = assume_kv_reuse
        self.prefill_tokens: IntArray = np.zeros(0, dtype=np.int64)
        self.active_blocks: IntArray = np.zeros(0, dtype=np.int64)
        self.active_requests: IntArray = np.zeros(0, dtype=np.int64)
        self.reported_blocks: FloatArray = np.zeros(0, dtype=np.float64)
        """Last reported `LoadMetrics.active_blocks` per slot; NaN until one arrives."""
        self._private: list[int] = []
        self._refs: list[dict[int, int]] = []
        self._masks: dict[int, int] = {}
        self._requests: dict[int, TrackedRequest] = {}
        self._ibuf: IntArray = np.zeros((3, 0), dtype=np.int64)
        self._fbuf: FloatArray = np.zeros(0, dtype=np.float64)
        """Buffers the per-slot arrays are leading views of (rows: prefill, blocks, requests)."""

    def ensure_capacity(self, num_slots: int) -> None:
        """Grow the per-slot arrays to at least `num_slots` entries.

        The arrays are leading views of buffers grown geometrically, so registering n workers
        one by one copies O(n) entries in all (growing by concatenation was quadratic)."""
        old = len(self._private)
        if num_slots <= old:
            return
        if num_slots > self._fbuf.shape[0]:
            cap = max(num_slots, 2 * self._fbuf.shape[0], 16)
            ibuf = np.zeros((3, cap), dtype=np.int64)
            ibuf[:, :old] = self._ibuf[:, :old]
            fbuf = np.full(cap, np.nan)
            fbuf[:old] = self._fbuf[:old]
            self._ibuf, self._fbuf = ibuf, fbuf
        self.prefill_tokens = self._ibuf[0, :num_slots]
        self.active_blocks = self._ibuf[1, :num_slots]
        self.active_requests = self._ibuf[2, :num_slots]
        self.reported_blocks = self._fbuf[:num_slots]
        self._private.extend([0] * (num_slots - old))
        self._refs.extend({} for _ in range(num_slots - old))

    def request_blocks(self, isl_tokens: int) -> int:
        """Blocks a prompt occupies: ceil(isl / block_size)."""
        return -(-isl_tokens // self.block_size)

    def shared_depths(self, block_hashes: Sequence[int]) -> tuple[IntArray, IntArray]:
        """`(slots, depths)`: leading blocks of the query already active on each slot."""
        if not self.assume_kv_reuse:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        dropped, depths, _ = leading_runs(self._masks, block_hashes)
        return decode_runs(dropped, depths, len(self._private))

    def add(self, request_id: int, slot: int, block_hashes: Sequence[int], isl_tokens: int, cached_tokens: int) -> None:
        """Charge a routed request to `slot`."""
        if request_id in self._requests:
            raise ValueError(f"request {request_id} is already tracked on slot {self._requests[request_id].slot}")
        n_req = max(self.request_blocks(isl_tokens), len(block_hashes))
        prefill = max(0, isl_tokens - max(0, cached_tokens))
        if self.assume_kv_reuse:
            hashes = tuple(block_hashes)
            refs = self._refs[slot]
            bit = 1 << slot
            masks = self._masks
            for h in hashes:
                c = refs.get(h, 0)
                if c == 0:
                    masks[h] = masks.get(h, 0) | bit
                refs[h] = c + 1
            private = n_req - len(hashes)
        else:
            hashes = ()
            private = n_req
        self._private[slot] += private
        self._requests[request_id] = TrackedRequest(slot, prefill, hashes, private)
        self.prefill_tokens[slot] += prefill
        self.active_requests[slot] += 1
        self._refresh_blocks(slot)

    def release_prefill(self, request_id: int) -> bool:
        """First token came back: release the prefill tokens. False if unknown or already released."""
        req = self._requests.get(request_id)
        if req is None or req.prefill_tokens == 0:
            return False
        self.prefill_tokens[req.slot] -= req.prefill_tokens
        req.prefill_tokens = 0
        return True

    def complete(self, request_id: int) -> bool:
        """Request finished (or was cancelled): release everything it holds. False if unknown."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        slot = req.slot
        self.prefill_tokens[slot] -= req.prefill_tokens
        self.active_requests[slot] -= 1
        self._private[slot] -= req.private_blocks
        refs = self._refs[slot]
        bit = 1 << slot
        masks = self._masks
        for h in req.hashes:
            c = refs[h] - 1
            if c:
                refs[h] = c
            else:
                del refs[h]
                m = masks[h] ^ bit
                if m:
                    masks[h] = m
                else:
                    del masks[h]
        self._refresh_blocks(slot)
        return True

    def drop_slot(self, slot: int) -> list[int]:
        """Forget every request on a slot (worker removed); returns their ids, ascending."""
        ids = sorted(rid for rid, r in self._requests.items() if r.slot == slot)
        for rid in ids:
            self.complete(rid)
        self.reported_blocks[slot] = np.nan
        return ids

    def slot_of(self, request_id: int) -> int | None:
        """The slot a tracked request is charged to."""
        req = self._requests.get(request_id)
        return None if req is None else req.slot

    def on_reported_blocks(self, slot: int, active_blocks: int) -> None:
        """Record a slot's reported active blocks (from `LoadMetrics`)."""
        self.reported_blocks[slot] = float(active_blocks)

    def decode_blocks(self, slots: IntArray, weight: float) -> FloatArray:
        """Active blocks of `slots`, blended with reported ones where known: (1-w)*pred + w*reported."""
        pred = self.active_blocks[slots].astype(np.float64)
        if weight <= 0.0:
            return pred
        rep = self.reported_blocks[slots]
        return np.where(np.isnan(rep), pred, (1.0 - weight) * pred + weight * rep)

    def _refresh_blocks(self, slot: int) -> None:
        self.active_blocks[slot] = len(self._refs[slot]) + self._private[slot]

    def check_invariants(self) -> None:
        """Raise AssertionError if the counters disagree with the tracked requests."""
        n = len(self._private)
        pre = [0] * n
        reqs = [0] * n
        priv = [0] * n
        refs: list[dict[int, int]] = [{} for _ in range(n)]
        for r in self._requests.values():
            pre[r.slot] += r.prefill_tokens
            reqs[r.slot] += 1
            priv[r.slot] += r.private_blocks
            for h in r.hashes:
                refs[r.slot][h] = refs[r.slot].get(h, 0) + 1
        assert self.prefill_tokens.tolist() == pre
        assert self.active_requests.tolist() == reqs
        assert self._private == priv
        assert self._refs == refs
        assert self.active_blocks.tolist() == [len(refs[s]) + priv[s] for s in range(n)]
        masks: dict[int, int] = {}
        for s in range(n):
            for h in refs[s]:
                masks[h] = masks.get(h, 0) | (1 << s)
        assert masks == self._masks
