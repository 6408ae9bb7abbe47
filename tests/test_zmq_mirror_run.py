"""A real ZMQ subscriber can follow a simulated cluster: `run_local` with a KV mirror publishes
every rank's KV batches in the vLLM wire format, and a subscriber (with replay for whatever it
missed while joining) ends with exactly each rank's cache."""

from __future__ import annotations

import time
from pathlib import Path

from actors.engine.events import KvCleared, KvRemoved, KvStored
from cluster.plane.messages import KvBatchMsg
from cluster.runtime.local import run_local
from cluster.scenario.load import load_scenario
from cluster.scenario.world import build_world
from cluster.wire.mirror import KvZmqMirror
from cluster.wire.zmq_subscriber import ZmqKvSubscriber

ROOT = Path(__file__).resolve().parent.parent


def test_subscribers_of_a_mirrored_run_rebuild_every_rank_cache(tmp_path: Path) -> None:
    world = build_world(load_scenario(ROOT / "configs" / "scenarios" / "smoke.yaml"), mirror_kv=True)
    slots = [(r.worker_id, r.dp_rank) for r in world.setup.ranks]
    mirror = KvZmqMirror(f"ipc://{tmp_path}/kv", slots, world.setup.block_size,
                         replay_endpoint=f"ipc://{tmp_path}/replay", bind=True)
    engine_batches: list[KvBatchMsg] = []
    with mirror:
        subs = {slot: ZmqKvSubscriber(mirror.endpoints()[slot], replay_endpoint=mirror.replay_endpoints()[slot],
                                      start_seq=0)
                for slot in slots}
        try:
            def tap(batch: KvBatchMsg) -> None:
                engine_batches.append(batch)
                mirror.publish(batch.events)

            result, _ = run_local(world.setup, kv_tap=tap)
            published = {slot: mirror.publisher(slot).next_seq for slot in slots}
            caches: dict[tuple[int, int], set[int]] = {slot: set() for slot in slots}
            wire_stored: list[KvStored] = []
            deadline = time.monotonic() + 60.0  # only a failing run waits this long
            for slot, sub in subs.items():
                # Late joiners miss the first batches: a later batch reveals the gap and replay fills it.
                while sub.next_seq < published[slot] and time.monotonic() < deadline:
                    for got in sub.poll(50):
                        for data in got.batch.events:
                            if isinstance(data, KvStored):
                                caches[slot].update(data.block_hashes)
                                wire_stored.append(data)
                            elif isinstance(data, KvRemoved):
                                caches[slot].difference_update(data.block_hashes)
                            elif isinstance(data, KvCleared):
                                caches[slot].clear()
                assert sub.next_seq == published[slot], slot
                assert sub.num_missing == 0 and not sub.needs_resync
        finally:
            for sub in subs.values():
                sub.close()
    for rank in result.ranks:
        assert caches[(rank.worker_id, rank.dp_rank)] == set(rank.cached_blocks)
    # The token ids on the wire are the ones the engine hashed: the decoder's local hashes match.
    engine_stored = [e.data for b in engine_batches for e in b.events if isinstance(e.data, KvStored)]
    assert len(wire_stored) == len(engine_stored) > 0
    by_hashes = {d.block_hashes: d.token_hashes for d in engine_stored}
    assert all(by_hashes[d.block_hashes] == d.token_hashes for d in wire_stored)
    assert all(d.token_ids is not None and len(d.token_ids) == 64 * len(d.block_hashes) for d in engine_stored)
