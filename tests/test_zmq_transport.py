"""ZMQ transport over real loopback sockets: frames, ordering, gap repair through replay, resync, mirror.

PUB/SUB has no handshake: a SUB that has just connected misses whatever is published
before its subscription reaches the publisher (the "slow joiner"). Tests therefore
`prime` a stream (publish marker batches until one arrives) or use a raw XPUB,
which reports the subscription, before they publish what they check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.engine.events import KvCleared, KvEvent, KvEventData, KvRemoved, KvStored
from actors.engine.hashing import local_hash
from cluster.wire.mirror import KvZmqMirror, group_kv_events
from cluster.wire.vllm import REPLAY_END_SEQ, decode_vllm_batch, encode_vllm_batch, parse_seq, seq_bytes
from cluster.wire.zmq_publisher import ZmqKvPublisher
from cluster.wire.zmq_subscriber import ReceivedBatch, ZmqKvSubscriber

LOOPBACK = "tcp://127.0.0.1:0"
DEADLINE_S = 30.0
"""Only a failing test waits this long: every wait ends as soon as its condition holds (a loaded CI
machine can take seconds to deliver a loopback frame; a 2 s deadline flaked)."""
def stored_with_tokens(hashes: tuple[int, ...], token_ids: tuple[int, ...]) -> KvStored:
    return KvStored(None, hashes, (0,) * len(hashes), token_ids)


def payload_for(seq: int) -> bytes:
    """A batch whose content names its seq, so every delivery can be checked against what was sent."""
    return encode_vllm_batch(float(seq), [KvRemoved((seq,))], 0, 4)


def publish_numbered(pub: ZmqKvPublisher, count: int) -> None:
    for _ in range(count):
        pub.publish(payload_for(pub.next_seq))


def prime(pub: ZmqKvPublisher, sub: ZmqKvSubscriber) -> list[ReceivedBatch]:
    """Publish numbered batches until the subscriber receives something; returns what it got."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert time.monotonic() < deadline, "subscriber never received a batch"
        publish_numbered(pub, 1)
        got = sub.poll(20)
        if got:
            return got


def collect_through(sub: ZmqKvSubscriber, last_seq: int, got: list[ReceivedBatch]) -> list[ReceivedBatch]:
    """Poll until the batch `last_seq` has been delivered (or fail at the deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    while not got or got[-1].seq < last_seq:
        assert time.monotonic() < deadline, f"stream stopped at {got[-1].seq if got else None}, wanted {last_seq}"
        got.extend(sub.poll(20))
    return got


def assert_complete_stream(got: list[ReceivedBatch], first: int, last: int) -> None:
    assert [b.seq for b in got] == list(range(first, last + 1))
    for b in got:
        assert b.batch.events == (KvRemoved((b.seq,)),) and b.batch.ts_s == float(b.seq)


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """Registers publishers/subscribers/sockets and closes them after the test, even when it fails."""
    things: list[Any] = []

    def register(thing: Any) -> Any:
        things.append(thing)
        return thing

    yield register
    for thing in reversed(things):
        if isinstance(thing, zmq.Context):
            thing.term()  # after its sockets, which were registered later and closed first
        else:
            thing.close()


def test_frames_are_topic_seq_payload(closing: Callable[[Any], Any]) -> None:
    pub: ZmqKvPublisher = closing(ZmqKvPublisher(LOOPBACK, topic=b"kv", bind=True))
    ctx: zmq.Context[zmq.Socket[bytes]] = closing(zmq.Context())
    raw = closing(ctx.socket(zmq.SUB))
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.SUBSCRIBE, b"kv")
    raw.connect(pub.endpoint)
    assert pub.publish(b"first") == 0
    deadline = time.monotonic() + DEADLINE_S
    while not raw.poll(20):
        assert time.monotonic() < deadline
        pub.publish(b"warm-up")
    seqs = [pub.publish(payload_for(pub.next_seq)) for _ in range(3)]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    received: list[list[bytes]] = []
    while len(received) < 3:
        assert raw.poll(int(DEADLINE_S * 1000))
        frames = raw.recv_multipart()
        if int.from_bytes(frames[1], "big") >= seqs[0]:  # skip warm-up batches still in flight
            received.append(frames)
    assert received == [[b"kv", seq.to_bytes(8, "big"), payload_for(seq)] for seq in seqs]


def test_subscriber_receives_batches_in_order(closing: Callable[[Any], Any]) -> None:
    pub: ZmqKvPublisher = closing(ZmqKvPublisher(LOOPBACK, bind=True))
    sub: ZmqKvSubscriber = closing(ZmqKvSubscriber(pub.endpoint))
    got = prime(pub, sub)
    publish_numbered(pub, 20)
    collect_through(sub, pub.next_seq - 1, got)
    assert_complete_stream(got, got[0].seq, pub.next_seq - 1)
    assert not any(b.replayed for b in got)
    assert (sub.num_gaps, sub.num_missing, sub.needs_resync) == (0, 0, False)


def test_lost_batches_are_recovered_through_replay(closing: Callable[[Any], Any]) -> None:
    pub: ZmqKvPublisher = closing(ZmqKvPublisher(LOOPBACK, replay_endpoint=LOOPBACK, bind=True))
    pub.start()
    assert pub.replay_endpoint is not None
    sub: ZmqKvSubscriber = closing(ZmqKvSubscriber(pub.endpoint, replay_endpoint=pub.replay_endpoint))
    got = prime(pub, sub)
    got = collect_through(sub, pub.next_seq - 1, got)
    base = pub.next_seq
    sub.drop_seqs = {base + 1, base + 2, base + 4}  # "the network" loses these on the PUB stream
    publish_numbered(pub, 7)
    collect_through(sub, base + 6, got)
    assert_complete_stream(got, got[0].seq, base + 6)
    assert [b.seq for b in got if b.replayed] == [base + 1, base + 2, base + 4]
    assert (sub.num_gaps, sub.num_replayed, sub.num_dropped) == (2, 3, 3)
    assert (sub.num_missing, sub.num_duplicates, sub.needs_resync) == (0, 0, False)


def test_late_joiner_replays_the_history(closing: Callable[[Any], Any]) -> None:
    pub: ZmqKvPublisher = closing(ZmqKvPublisher(LOOPBACK, replay_endpoint=LOOPBACK, bind=True))
    pub.start()
    publish_numbered(pub, 5)  # nobody listens yet: PUB drops these
    assert pub.replay_endpoint is not None
    sub: ZmqKvSubscriber = closing(ZmqKvSubscriber(pub.endpoint, replay_endpoint=pub.replay_endpoint, start_seq=0))
    got = collect_through(sub, pub.next_seq - 1, prime(pub, sub))
    assert_complete_stream(got, 0, pub.next_seq - 1)
    assert all(b.replayed for b in got[:5]) and not got[-1].replayed
    assert (sub.num_gaps, sub.num_missing, sub.needs_resync) == (1, 0, False)


def test_replay_older_than_the_ring_buffer_needs_resync(closing: Callable[[Any], Any]) -> None:
    pub: ZmqKvPublisher = closing(ZmqKvPublisher(LOOPBACK, replay_endpoint=LOOPBACK, bind=True, buffer_steps=3))
    pub.start()
    publish_numbered(pub, 10)
    assert pub.replay_endpoint is not None
    sub: ZmqKvSubscriber = closing(ZmqKvSubscriber(pub.endpoint, replay_endpoint=pub.replay_endpoint, start_seq=0))
    got = collect_through(sub, pub.next_seq - 1, prime(pub, sub))
    # The first live batch L revealed the gap from 0; the buffer held only its last 3 seqs.
    assert_complete_stream(got, got[0].seq, pub.next_seq - 1)
    assert got[0].seq >= 8 and got[0].replayed and not got[-1].replayed
    assert sub.needs_resync and sub.num_missing == got[0].seq  # seqs 0 .. first-1 are gone for good
    assert sub.num_gaps == 1


def test_unanswered_replay_times_out_and_needs_resync(closing: Callable[[Any], Any]) -> None:
    # Replay socket bound but never served: the subscriber gives up after its timeout.
    pub: ZmqKvPublisher = closing(ZmqKvPublisher(LOOPBACK, replay_endpoint=LOOPBACK, bind=True))
    publish_numbered(pub, 3)
    assert pub.replay_endpoint is not None
    sub: ZmqKvSubscriber = closing(ZmqKvSubscriber(
        pub.endpoint, replay_endpoint=pub.replay_endpoint, start_seq=0, replay_timeout_ms=100))
    got = prime(pub, sub)
    assert_complete_stream(got, got[0].seq, pub.next_seq - 1)
    assert not any(b.replayed for b in got) and got[0].seq >= 3
    assert sub.needs_resync and sub.num_missing == got[0].seq and sub.num_replayed == 0


def test_serve_replay_from_the_host_loop_ends_with_seq_minus_one(closing: Callable[[Any], Any]) -> None:
    pub: ZmqKvPublisher = closing(ZmqKvPublisher(LOOPBACK, replay_endpoint=LOOPBACK, bind=True))
    publish_numbered(pub, 3)
    ctx: zmq.Context[zmq.Socket[bytes]] = closing(zmq.Context())
    dealer = closing(ctx.socket(zmq.DEALER))
    dealer.setsockopt(zmq.LINGER, 0)
    assert pub.replay_endpoint is not None
    dealer.connect(pub.replay_endpoint)
    dealer.send_multipart([b"", b"short"])  # malformed: logged and ignored
    dealer.send_multipart([b"", seq_bytes(1)])
    served = 0
    deadline = time.monotonic() + DEADLINE_S
    while served < 1:
        assert time.monotonic() < deadline
        served += pub.serve_replay(timeout_ms=20)
    answers = []
    while dealer.poll(int(DEADLINE_S * 1000)):
        answers.append(dealer.recv_multipart())
        if answers[-1][1] == seq_bytes(REPLAY_END_SEQ):
            break
    assert answers == [
        [b"", seq_bytes(1), payload_for(1)],
        [b"", seq_bytes(2), payload_for(2)],
        [b"", b"\xff" * 8, b""],
    ]
    assert parse_seq(answers[-1][1]) == -1 and pub.num_replays_served == 1
    pub.start()
    with pytest.raises(RuntimeError, match="background thread"):
        pub.serve_replay()


def test_duplicates_and_malformed_messages_are_dropped_and_counted(closing: Callable[[Any], Any]) -> None:
    # A raw XPUB sees the subscription arrive, so nothing is lost to the slow joiner here.
    ctx: zmq.Context[zmq.Socket[bytes]] = closing(zmq.Context())
    xpub = closing(ctx.socket(zmq.XPUB))
    xpub.setsockopt(zmq.LINGER, 0)
    xpub.bind(LOOPBACK)
    sub: ZmqKvSubscriber = closing(ZmqKvSubscriber(xpub.getsockopt_string(zmq.LAST_ENDPOINT)))
    assert xpub.poll(int(DEADLINE_S * 1000)) and xpub.recv() == b"\x01"  # subscribe to topic b""
    for frames in ([b"", seq_bytes(0), payload_for(0)], [b"", seq_bytes(1), payload_for(1)],
                   [b"", seq_bytes(1), payload_for(1)], [b"", seq_bytes(0), payload_for(0)],
                   [b"", b"bad", b""], [b"", seq_bytes(2), b"\xc1 not msgpack"],
                   [b"", seq_bytes(3), payload_for(3)]):
        xpub.send_multipart(frames)
    got = collect_through(sub, 3, [])
    assert [b.seq for b in got] == [0, 1, 3]
    assert (sub.num_received, sub.num_duplicates, sub.num_malformed, sub.num_missing) == (6, 2, 2, 0)
    assert sub.needs_resync  # seq 2 arrived but could not be decoded


def test_close_is_idempotent_and_stops_the_replay_thread(closing: Callable[[Any], Any]) -> None:
    with ZmqKvPublisher(LOOPBACK, replay_endpoint=LOOPBACK, bind=True) as pub:
        pub.start()
        pub.start()  # idempotent while running
        thread = pub._thread
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()
    pub.close()
    with pytest.raises(RuntimeError, match="closed"):
        pub.publish(b"x")
    with ZmqKvSubscriber("tcp://127.0.0.1:1") as sub:
        assert sub.poll(0) == []
    sub.close()
    with pytest.raises(RuntimeError, match="closed"):
        sub.poll(0)


def test_inproc_with_a_shared_context(closing: Callable[[Any], Any]) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub: ZmqKvPublisher = ZmqKvPublisher("inproc://kv", replay_endpoint="inproc://kv-replay", context=ctx)
    sub: ZmqKvSubscriber = ZmqKvSubscriber("inproc://kv", replay_endpoint="inproc://kv-replay", start_seq=0,
                                           context=ctx)
    try:
        pub.start()
        got = collect_through(sub, pub.next_seq - 1, prime(pub, sub))
        assert_complete_stream(got, 0, pub.next_seq - 1)
    finally:
        sub.close()
        pub.close()
        ctx.term()


def test_group_kv_events_batches_consecutive_same_slot_same_time() -> None:
    a, b, c = KvRemoved((1,)), KvRemoved((2,)), KvCleared()
    events = [KvEvent(1.0, 0, 0, 0, a), KvEvent(1.0, 0, 0, 1, b), KvEvent(1.0, 0, 1, 0, c),
              KvEvent(1.0, 0, 0, 2, a), KvEvent(2.0, 0, 0, 3, b)]
    assert group_kv_events(events) == [((0, 0), 1.0, [a, b]), ((0, 1), 1.0, [c]), ((0, 0), 1.0, [a]),
                                       ((0, 0), 2.0, [b])]


def test_mirror_publishes_each_slot_on_its_own_endpoint(tmp_path: Path, closing: Callable[[Any], Any]) -> None:
    slots = [(0, 0), (0, 1), (3, 0)]
    mirror: KvZmqMirror = closing(KvZmqMirror(f"ipc://{tmp_path}/kv", slots, 4,
                                              replay_endpoint=f"ipc://{tmp_path}/replay"))
    endpoints = mirror.endpoints()
    assert endpoints == {slot: f"ipc://{tmp_path}/kv_{k}" for k, slot in enumerate(slots)}
    replay = mirror.replay_endpoints()
    subs = {slot: closing(ZmqKvSubscriber(endpoints[slot], replay_endpoint=replay[slot], start_seq=0))
            for slot in slots}
    got: dict[tuple[int, int], list[ReceivedBatch]] = {slot: [] for slot in slots}
    sent: list[KvEvent] = []
    deadline = time.monotonic() + DEADLINE_S
    while not all(got.values()):  # prime every slot (the first batches may be replayed)
        assert time.monotonic() < deadline
        probes = [KvEvent(0.0, w, r, 0, KvCleared()) for (w, r) in slots]
        mirror.publish(probes)
        sent.extend(probes)
        for slot in slots:
            got[slot].extend(subs[slot].poll(5))
    stored = stored_with_tokens((101, 102), (1, 2, 3, 4, 5, 6, 7, 8))
    events = [KvEvent(1.5, 0, 0, 0, stored), KvEvent(1.5, 0, 0, 1, KvRemoved((7,))),
              KvEvent(1.5, 0, 1, 0, KvRemoved((8,))), KvEvent(2.0, 3, 0, 0, KvRemoved((9,))),
              KvEvent(2.5, 0, 0, 2, KvCleared())]
    assert mirror.publish(events) == 4
    sent.extend(events)
    for slot in slots:
        collect_through(subs[slot], mirror.publisher(slot).next_seq - 1, got[slot])
        expected = [(t_ms / 1000.0, tuple(data), slot[1]) for s, t_ms, data in group_kv_events(sent) if s == slot]
        assert [(b.batch.ts_s, b.batch.events, b.batch.dp_rank) for b in got[slot]] == [
            (ts, tuple(_as_decoded(e) for e in data), dp) for ts, data, dp in expected]
    first = got[(0, 0)][-2].batch.events[0]
    assert isinstance(first, KvStored)
    assert first.token_hashes == (local_hash([1, 2, 3, 4]), local_hash([5, 6, 7, 8]))
    with pytest.raises(ValueError, match=r"slots \[\(9, 9\)\]"):
        mirror.publish([KvEvent(3.0, 9, 9, 0, KvCleared())])


def _as_decoded(event: KvEventData) -> KvEventData:
    """An event as the subscriber sees it (stored blocks get token hashes recomputed from the tokens)."""
    if not isinstance(event, KvStored):
        return event
    (decoded,) = decode_vllm_batch(encode_vllm_batch(0.0, [event], 0, 4)).events
    return decoded
