"""Router speed: KV event ingestion and find_matches latency at 1,000 workers.

Run: PYTHONPATH=. python benchmarks/router_speed.py [--events 1000000] [--workers 1000]

Workload (generated before timing, seeded). Each worker keeps a cache of about 512
blocks. Per request on a worker, the engine-like profile (default) emits:
  - one Stored with the request's newly cached prompt blocks: the not-yet-cached part
    of a shared system prompt (first 1..16 blocks of one of 2,000 prompts common to
    all workers) + 1..16 fresh blocks, parent = the last cached block before them;
  - 0..4 Stored events of one decode-generated block each;
  - one Removed per evicted block (leaf first, oldest request first) while over capacity,
    as engines evict block by block.
The "grouped" profile stores 1..8 fresh blocks per request, no decode blocks, and
evicts a whole request chain per Removed event (about 10 blocks per event): it shows
the per-block cost when events are large.

Batches: an engine publishes one batch of events per forward pass. A request's prefill
pass publishes its evictions and its prompt's Stored as one batch (about 12 events in
the engine profile), each decode pass its one Stored (a batch of 1); about 4.8 events
per batch on average. Batches are interleaved round-robin over workers (one pass per
worker per round), as an event plane delivers them; the events of a batch share one
`t_ms` (its index in the stream). The per-event measurements apply the same stream,
flattened. (Before batching, the stream interleaved single events round-robin; each
worker's own event sequence, and so the final index, is unchanged. Per-event rates on
that older order are lower, by roughly a quarter here: consecutive events then touch
different workers' data.)

Measured: `PrefixIndex.apply` per event and `apply_many` per batch; `KvRouter.apply_event`
per event and `apply_events` per batch (sequencing + index), each also with
`kv_event_lag_ms`; then find_matches: 64-block queries = a shared prefix + fresh tail,
against the index left by the 1M events; plus two adversarial layouts where all 1,000
workers hold the query's prefix (every worker at a different depth, and all at full depth).

Targets (issue 3): >= 300k events/s applied; < 200 us per find_matches.
"""

from __future__ import annotations

import argparse
import time
from collections import deque

import numpy as np

from actors.engine.events import KvEvent, KvRemoved, KvStored
from router.config import KvRouterConfig
from router.index import PrefixIndex
from router.router import KvRouter

CAP_BLOCKS = 512
N_PREFIXES = 2000
PREFIX_LEN = 16


def make_events(
    num_events: int, num_workers: int, seed: int, profile: str = "engine"
) -> tuple[list[list[KvEvent]], np.ndarray]:
    """Seeded synthetic KV event batches; see the module docstring for the profiles and batching."""
    rng = np.random.default_rng(seed)
    prefixes = rng.integers(1, 2**63, size=(N_PREFIXES, PREFIX_LEN), dtype=np.int64)
    fresh = iter(rng.integers(1, 2**63, size=num_events * 8, dtype=np.int64).tolist())
    chains: list[deque[list[int]]] = [deque() for _ in range(num_workers)]
    held: list[set[int]] = [set() for _ in range(num_workers)]
    todo: list[deque[tuple[bool, KvStored | KvRemoved]]] = [deque() for _ in range(num_workers)]
    """Per worker: (starts a new pass, event data), in emission order."""
    passes: list[list[list[KvStored | KvRemoved]]] = [[] for _ in range(num_workers)]
    pick_prefix = rng.integers(0, N_PREFIXES, size=num_events).tolist()
    k_prefix = rng.integers(1, PREFIX_LEN + 1, size=num_events).tolist()
    k_tail = rng.integers(1, 17 if profile == "engine" else 9, size=num_events).tolist()
    n_decode = rng.integers(0, 5, size=num_events).tolist()
    # Draw each worker's event sequence exactly as the unbatched generator did (one event
    # per worker per round), then group it into passes.
    for i in range(num_events):
        w = i % num_workers
        hw = held[w]
        q = todo[w]
        if not q:
            # Next request on this worker: evictions first if over capacity, then its stores.
            while len(hw) > CAP_BLOCKS and chains[w]:
                chain = chains[w][0]
                if profile == "engine":  # one block per Removed event, leaf first
                    gone_one = chain.pop()
                    if not chain:
                        chains[w].popleft()
                    if gone_one in hw:
                        hw.discard(gone_one)
                        q.append((not q, KvRemoved((gone_one,))))
                else:  # a whole chain per Removed event
                    chains[w].popleft()
                    gone = tuple(h for h in chain if h in hw)
                    hw.difference_update(gone)
                    if gone:
                        q.append((not q, KvRemoved(gone)))
            p = prefixes[pick_prefix[i]][: k_prefix[i]].tolist()
            j = 0
            while j < len(p) and p[j] in hw:
                j += 1
            blocks = p[j:] + [next(fresh) for _ in range(k_tail[i])]
            q.append((not q, KvStored(p[j - 1] if j else None, tuple(blocks), tuple(blocks))))
            chain = list(blocks)
            if profile == "engine":  # decode-generated blocks: one Stored per full block, one pass each
                for _ in range(n_decode[i]):
                    h = next(fresh)
                    q.append((True, KvStored(chain[-1], (h,), (h,))))
                    chain.append(h)
            hw.update(chain)
            chains[w].append(chain)
        new_pass, data = q.popleft()
        if new_pass or not passes[w]:
            passes[w].append([])
        passes[w][-1].append(data)
    batches: list[list[KvEvent]] = []
    next_id = [0] * num_workers
    for rnd in range(max(len(p) for p in passes)):
        for w in range(num_workers):
            if rnd < len(passes[w]):
                t = float(len(batches))
                batch = [KvEvent(t, w, 0, next_id[w] + k, d) for k, d in enumerate(passes[w][rnd])]
                next_id[w] += len(batch)
                batches.append(batch)
    return batches, prefixes


def timeit(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", choices=["engine", "grouped"], default="engine")
    args = ap.parse_args()
    W = args.workers

    t0 = time.perf_counter()
    batches, prefixes = make_events(args.events, W, args.seed, args.profile)
    events = [e for b in batches for e in b]
    n_blocks = sum(len(e.data.block_hashes) for e in events if isinstance(e.data, (KvStored, KvRemoved)))
    n_stored = sum(isinstance(e.data, KvStored) for e in events)
    print(f"generated {len(events):,} events ({n_stored:,} stored, {len(events) - n_stored:,} removed, "
          f"{n_blocks:,} block ops) in {len(batches):,} batches ({len(events) / len(batches):.1f} events/batch) "
          f"over {W} workers, profile {args.profile}, in {time.perf_counter() - t0:.1f}s")

    def rate(label: str, dt: float) -> None:
        print(f"{label:<32} {len(events) / dt:>10,.0f} events/s  {n_blocks / dt:>10,.0f} blocks/s  ({dt:.2f}s)")

    idx = PrefixIndex()
    for w in range(W):
        idx.slot(w, 0)
    apply = idx.apply
    t0 = time.perf_counter()
    for e in events:
        apply(e)
    rate("PrefixIndex.apply (per event)", time.perf_counter() - t0)
    print(f"  index: {idx.num_blocks():,} (slot, block) entries, {idx.num_unique_blocks():,} unique blocks, "
          f"skipped stored {idx.num_skipped_stored}, ignored removed {idx.num_ignored_removed}")
    idx2 = PrefixIndex()
    for w in range(W):
        idx2.slot(w, 0)
    apply_many = idx2.apply_many
    t0 = time.perf_counter()
    for b in batches:
        apply_many(b)
    rate("PrefixIndex.apply_many (batch)", time.perf_counter() - t0)
    assert idx2.num_blocks() == idx.num_blocks()
    del idx2

    for lag in (None, 50.0):
        for batched in (False, True):
            r = KvRouter(KvRouterConfig(kv_event_lag_ms=lag), block_size=64, seed=args.seed)
            for w in range(W):
                r.add_worker(w)
            t0 = time.perf_counter()
            if batched:
                apply_events = r.apply_events
                for b in batches:
                    apply_events(b, b[0].t_ms)
            else:
                apply_event = r.apply_event
                for e in events:
                    apply_event(e, e.t_ms)
            r.advance(float("inf"))
            dt = time.perf_counter() - t0
            if lag is None:
                rate("KvRouter.apply_events (batch)" if batched else "KvRouter.apply_event (per event)", dt)
            else:
                rate(f"  {'batch' if batched else 'per event'}, kv_event_lag_ms={lag:g}", dt)
            assert r.stats().events_applied == len(events) and r.index.num_blocks() == idx.num_blocks()
            if lag is None and batched:
                router = r

    rng = np.random.default_rng(1)
    queries = []
    for q in range(200):
        p = prefixes[rng.integers(N_PREFIXES)].tolist()
        queries.append(p + rng.integers(1, 2**63, size=64 - PREFIX_LEN, dtype=np.int64).tolist())
    holders = [len(idx.find_matches(q).scores) for q in queries]
    it = iter(range(10**9))
    us = timeit(lambda: idx.find_matches(queries[next(it) % 200]), 2000) * 1e6
    print(f"find_matches, 64 blocks, trace-like state: {us:7.1f} us  (mean {np.mean(holders):.0f} matching workers)")
    us = timeit(lambda: idx.match_depths(queries[next(it) % 200]), 2000) * 1e6
    print(f"match_depths (router path), same:          {us:7.1f} us")

    chain = rng.integers(1, 2**63, size=64, dtype=np.int64).tolist()
    for name, depth_of in [("every worker at a different depth", lambda w: 1 + w % 64), ("all workers at full depth", lambda w: 64)]:
        adv = PrefixIndex()
        for w in range(W):
            adv.apply_stored(w, 0, None, chain[: depth_of(w)])
        us = timeit(lambda: adv.find_matches(chain), 500) * 1e6
        us2 = timeit(lambda: adv.match_depths(chain), 500) * 1e6
        print(f"find_matches, 64 blocks, {name}: {us:7.1f} us  (match_depths {us2:.1f} us)")

    rid = iter(range(10**9))

    def route_one() -> None:
        r = next(rid)
        q = queries[r % 200]
        router.route(r, q, 64 * 64, float(r))
        router.on_complete(r, float(r))

    us = timeit(route_one, 1000) * 1e6
    print(f"KvRouter.route + on_complete, kv mode, {W} workers: {us:7.1f} us per request")


if __name__ == "__main__":
    main()
