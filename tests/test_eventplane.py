"""Event-plane messages survive the msgpack codec bit for bit; malformed payloads fail in one line."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.events import ForwardPass, KvCleared, KvEvent, KvRemoved, KvStored, LoadMetrics
from actors.engine.records import EngineRecord, FailureReason, TerminalStatus
from cluster.plane.codec import DecodeError, decode, encode
from cluster.plane.messages import (
    CompletionMsg,
    Envelope,
    FirstTokenMsg,
    KvBatchMsg,
    KvSnapshot,
    LoadMetricsMsg,
    ReplayReplyMsg,
    ReplayRequestMsg,
    RequestMsg,
    Topic,
    WorkerDownMsg,
    delivery_key,
)

u64 = st.integers(0, 2**64 - 1)
times = st.floats(0, 1e9, allow_nan=False, allow_infinity=False)


@st.composite
def kv_events(draw: st.DrawFn) -> KvEvent:
    kind = draw(st.sampled_from(["stored", "removed", "cleared"]))
    if kind == "stored":
        hashes = tuple(draw(st.lists(u64, min_size=1, max_size=5)))
        tokens = draw(st.one_of(st.none(), st.lists(st.integers(0, 2**32 - 1), max_size=8).map(tuple)))
        data: object = KvStored(draw(st.one_of(st.none(), u64)), hashes, tuple(draw(u64) for _ in hashes), tokens)
    elif kind == "removed":
        data = KvRemoved(tuple(draw(st.lists(u64, min_size=1, max_size=5))))
    else:
        data = KvCleared()
    return KvEvent(draw(times), draw(st.integers(0, 999)), draw(st.integers(0, 7)), draw(st.integers(0, 10**9)),
                   data)  # type: ignore[arg-type]


batches = st.builds(KvBatchMsg, st.integers(0, 999), st.integers(0, 7), st.integers(0, 10**9), times,
                    st.lists(kv_events(), max_size=4).map(tuple))
passes = st.none() | st.builds(ForwardPass, times, *[st.integers(0, 10**6)] * 4)
metrics = st.builds(LoadMetricsMsg, st.builds(LoadMetrics, times, *[st.integers(0, 10**6)] * 8, last_pass=passes),
                    st.integers(-1, 10**6))
messages = st.one_of(
    batches,
    metrics,
    st.builds(RequestMsg, st.integers(0, 10**9), st.integers(0, 999), st.integers(0, 7), st.integers(1, 10**6),
              st.integers(1, 10**5), st.lists(u64, max_size=6).map(tuple), st.integers(1, 1024), times),
    st.builds(FirstTokenMsg, st.integers(0, 10**9), st.integers(0, 999), st.integers(0, 7), times),
    st.builds(CompletionMsg, st.integers(0, 10**9), st.integers(0, 999), st.integers(0, 7),
              st.sampled_from(list(TerminalStatus)),
              st.builds(EngineRecord, st.integers(0, 10**5), *[st.one_of(st.none(), times)] * 5,
                        st.integers(0, 10**6), st.integers(0, 9), st.integers(0, 10**6), st.integers(0, 10**6),
                        st.integers(0, 9)),
              st.one_of(st.none(), st.sampled_from(list(FailureReason))), st.one_of(st.none(), st.text(max_size=20)),
              st.one_of(st.none(), st.text(max_size=10))),
    st.builds(ReplayRequestMsg, st.integers(0, 999), st.integers(0, 7), st.integers(0, 10**6), st.integers(0, 999)),
    st.builds(ReplayReplyMsg, st.integers(0, 999), st.integers(0, 7), st.integers(0, 10**6),
              st.lists(batches, max_size=3).map(tuple),
              st.one_of(st.none(), st.builds(KvSnapshot, st.lists(u64, max_size=6).map(tuple),
                                             st.integers(0, 10**6), st.integers(-1, 10**6)))),
    st.builds(WorkerDownMsg, st.integers(0, 999), st.integers(0, 7), times, st.sampled_from(list(FailureReason)),
              st.text(max_size=20)),
)
envelopes = st.builds(Envelope, times, st.integers(0, 2**62), st.integers(0, 10**6), st.sampled_from(list(Topic)),
                      messages)


@settings(max_examples=200, deadline=None)
@given(st.lists(envelopes, max_size=6))
def test_codec_round_trip_is_exact(envs: list[Envelope]) -> None:
    assert decode(encode(envs)) == envs
    assert decode(encode(envs), validate=True) == envs


def test_delivery_keys_order_by_sender_then_counter_then_copy() -> None:
    keys = [delivery_key(src, seq, copy) for src in (0, 1, 5000) for seq in (0, 1, 2**39) for copy in (0, 1)]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("payload, fragment", [
    (b"\xc1", "malformed"),
    (msgpack.packb([[1.0, 0, 0, 0, [99]]]), "unknown message kind"),
    (msgpack.packb([[1.0, 0, 0, 0, [4, 0, 0, 0, 0.0, [[0.0, 0, 0, 0, [7]]]]]]), "unknown KV event tag"),
    (msgpack.packb([[1.0, 0, 0]]), "malformed"),
])
def test_malformed_payloads_raise_one_line(payload: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment) as info:
        decode(payload)
    assert "\n" not in str(info.value)


def test_validation_rejects_wrong_types_from_outside() -> None:
    # A request whose input_length is text: accepted by the fast path, refused when validating.
    bad = msgpack.packb([[1.0, 0, 1, 0, [1, 5, 0, 0, "many", 3, [1], 64, 0.0, None, None]]])
    assert isinstance(decode(bad)[0].msg, RequestMsg)
    with pytest.raises(DecodeError, match="input_length"):
        decode(bad, validate=True)
