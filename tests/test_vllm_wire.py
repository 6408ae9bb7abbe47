"""The vLLM KV event wire codec: exact bytes, round trips, tolerant decoding, readable errors."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.events import KvCleared, KvEventData, KvRemoved, KvStored
from actors.engine.hashing import local_hash
from cluster.wire.vllm import (
    VllmBatch,
    WireFormatError,
    decode_vllm_batch,
    encode_vllm_batch,
    endpoint_for_rank,
    offset_endpoint,
    parse_seq,
    seq_bytes,
    should_bind,
)

U64 = 2**64 - 1
def stored(parent: int | None, hashes: tuple[int, ...], token_ids: tuple[int, ...] | None,
           token_hashes: tuple[int, ...] | None = None) -> KvStored:
    """An engine KvStored carrying token ids (token hashes default to 0: they are not on the wire)."""
    th = token_hashes if token_hashes is not None else (0,) * len(hashes)
    return KvStored(parent, hashes, th, token_ids)


def decoded_stored(parent: int | None, hashes: tuple[int, ...], token_ids: tuple[int, ...] | None,
                   block_size: int) -> KvStored:
    """What decode_vllm_batch yields for a BlockStored: local hashes iff the tokens tile the blocks."""
    n = len(hashes)
    if token_ids is not None and n and len(token_ids) == n * block_size:
        th = tuple(local_hash(list(token_ids[i * block_size:(i + 1) * block_size])) for i in range(n))
        kept: tuple[int, ...] | None = tuple(token_ids)
    else:
        th, kept = (0,) * n, None
    return KvStored(parent, hashes, th, kept)


def normalised(event: KvEventData, block_size: int) -> KvEventData:
    if isinstance(event, KvStored):
        return decoded_stored(event.parent_hash, event.block_hashes, event.token_ids, block_size)
    return event


# The fact sheet's example (msgspec 0.22, array_like everywhere), byte for byte.
EXAMPLE_HEX = (
    "93" "cb3ff8000000000000" "93"
    "98" "ab" + b"BlockStored".hex() + "920b0c" "c0" "9401020304" "02" "c0" "a3" + b"GPU".hex() + "c0"
    + "93" "ac" + b"BlockRemoved".hex() + "910b" "a3" + b"GPU".hex()
    + "91" "b0" + b"AllBlocksCleared".hex()
    + "00"
)


def test_example_bytes_exactly() -> None:
    events: list[KvEventData] = [stored(None, (11, 12), (1, 2, 3, 4)), KvRemoved((11,)), KvCleared()]
    assert encode_vllm_batch(1.5, events, 0, 2).hex() == EXAMPLE_HEX


def test_example_bytes_decode() -> None:
    batch = decode_vllm_batch(bytes.fromhex(EXAMPLE_HEX))
    assert batch == VllmBatch(
        ts_s=1.5,
        events=(decoded_stored(None, (11, 12), (1, 2, 3, 4), 2), KvRemoved((11,)), KvCleared()),
        dp_rank=0,
    )
    first = batch.events[0]
    assert isinstance(first, KvStored)
    assert first.token_hashes == (local_hash([1, 2]), local_hash([3, 4]))


def test_dp_rank_none_is_omitted_and_ts_is_float64() -> None:
    assert encode_vllm_batch(2, [], None, 4) == bytes.fromhex("92" "cb4000000000000000" "90")
    assert decode_vllm_batch(encode_vllm_batch(2, [], None, 4)) == VllmBatch(2.0, (), None)


def test_map_style_matches_the_dynamo_mocker_layout() -> None:
    events: list[KvEventData] = [stored(7, (1,), (5, 5, 5, 5)), KvRemoved((1,)), KvCleared()]
    expected = msgpack.packb([0.25, [
        {"type": "BlockStored", "block_hashes": [1], "parent_block_hash": 7, "token_ids": [5, 5, 5, 5],
         "block_size": 4, "medium": "GPU", "group_idx": 0},
        {"type": "BlockRemoved", "block_hashes": [1], "medium": "GPU", "group_idx": 0},
        {"type": "AllBlocksCleared"},
    ], 3], use_bin_type=True)
    assert encode_vllm_batch(0.25, events, 3, 4, event_style="map") == expected
    no_medium = msgpack.unpackb(encode_vllm_batch(0.25, events[1:2], 3, 4, event_style="map", medium=None))
    assert no_medium[1] == [{"type": "BlockRemoved", "block_hashes": [1], "group_idx": 0}]


def test_stored_without_token_ids_sends_an_empty_list_and_decodes_zero_token_hashes() -> None:
    payload = encode_vllm_batch(1.0, [KvStored(None, (9, 10), (123, 456))], 0, 16)
    assert msgpack.unpackb(payload)[1][0][3] == []
    assert decode_vllm_batch(payload).events == (decoded_stored(None, (9, 10), None, 16),)
    (event,) = decode_vllm_batch(payload).events
    assert isinstance(event, KvStored) and event.token_hashes == (0, 0)


def test_encode_rejects_inconsistent_token_ids_and_bad_block_size() -> None:
    with pytest.raises(ValueError, match="3 token ids for 1 blocks of 4"):
        encode_vllm_batch(0.0, [stored(None, (1,), (1, 2, 3))], 0, 4)
    with pytest.raises(ValueError, match="block_size must be positive"):
        encode_vllm_batch(0.0, [], 0, 0)
    with pytest.raises(ValueError, match="cannot encode"):
        encode_vllm_batch(0.0, [KvRemoved((2**64,))], 0, 4)


# ------------------------------------------------------------------------------------------ round trips

u64 = st.integers(0, U64)


@st.composite
def kv_events(draw: st.DrawFn, block_size: int) -> KvEventData:
    kind = draw(st.sampled_from(["stored", "removed", "cleared"]))
    if kind == "cleared":
        return KvCleared()
    hashes = tuple(draw(st.lists(u64, max_size=4)))
    if kind == "removed":
        return KvRemoved(hashes)
    tokens = draw(st.none() | st.lists(st.integers(0, 2**32 - 1), min_size=len(hashes) * block_size,
                                       max_size=len(hashes) * block_size).map(tuple))
    return stored(draw(st.none() | u64), hashes, tokens, tuple(draw(u64) for _ in hashes))


@st.composite
def batches(draw: st.DrawFn) -> tuple[float, list[KvEventData], int | None, int]:
    block_size = draw(st.integers(1, 4))
    ts = draw(st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 2**40).map(float))
    return ts, draw(st.lists(kv_events(block_size), max_size=6)), draw(st.none() | st.integers(0, 64)), block_size


@settings(max_examples=200, deadline=None)
@given(batches(), st.sampled_from(["array", "map"]), st.sampled_from(["GPU", "CPU", None]))
def test_round_trip(batch: tuple[float, list[KvEventData], int | None, int], style: Any, medium: str | None) -> None:
    """Token hashes are not on the wire: decoding recomputes them from token ids (or reports 0)."""
    ts, events, dp_rank, block_size = batch
    payload = encode_vllm_batch(ts, events, dp_rank, block_size, event_style=style, medium=medium)
    assert decode_vllm_batch(payload) == VllmBatch(ts, tuple(normalised(e, block_size) for e in events), dp_rank)


def test_damaged_payloads_decode_or_raise_one_line_wire_format_errors() -> None:
    """Truncated, byte-flipped and spliced copies of valid payloads either decode to a batch or raise
    WireFormatError (one line); no other exception escapes. Both outcomes must occur."""
    import random as stdlib_random  # a test-only, seeded generator

    rng = stdlib_random.Random(7)
    events: list[KvEventData] = [stored(None, (1, 2), tuple(range(8)), 4), KvRemoved((3,)), KvCleared()]
    valid = [encode_vllm_batch(1.5, events, 0, 4, event_style=style) for style in ("array", "map")]
    decoded = refused = 0
    for k in range(2000):
        data = bytearray(valid[k % 2])
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
        payload = bytes(data[: rng.randint(1, len(data))]) if k % 3 == 0 else bytes(data)
        try:
            batch = decode_vllm_batch(payload)
        except WireFormatError as exc:
            assert "\n" not in str(exc) and str(exc)
            refused += 1
        else:
            assert isinstance(batch, VllmBatch)
            decoded += 1
    assert decoded > 50 and refused > 50, (decoded, refused)


# ------------------------------------------------------------------------------------ tolerant decoding


def test_map_events_and_map_batch_decode() -> None:
    events = [
        {"type": "BlockStored", "block_hashes": [1, 2], "parent_block_hash": None, "token_ids": [1, 2, 3, 4],
         "block_size": 2, "medium": "GPU", "group_idx": 0, "lora_name": None},
        {"type": "BlockRemoved", "block_hashes": [2], "group_idx": 0},
        {"type": "AllBlocksCleared"},
    ]
    expected = (decoded_stored(None, (1, 2), (1, 2, 3, 4), 2), KvRemoved((2,)), KvCleared())
    as_array = msgpack.packb([3.0, events, 1], use_bin_type=True)
    assert decode_vllm_batch(as_array) == VllmBatch(3.0, expected, 1)
    as_map = msgpack.packb({"ts": 3.0, "events": events, "data_parallel_rank": 1}, use_bin_type=True)
    assert decode_vllm_batch(as_map) == VllmBatch(3.0, expected, 1)


def test_oldest_variants_decode() -> None:
    """BlockStored with 5 fields (no medium, no lora_name), BlockRemoved with 1, batch without dp_rank."""
    payload = msgpack.packb([4, [["BlockStored", [5], 4, [1, 2, 3, 4], 4, None], ["BlockRemoved", [5]]]])
    assert decode_vllm_batch(payload) == VllmBatch(4.0, (decoded_stored(4, (5,), (1, 2, 3, 4), 4),
                                                         KvRemoved((5,))), None)


def test_extra_trailing_fields_are_ignored() -> None:
    payload = msgpack.packb([0.5, [
        ["BlockStored", [5], None, [1, 2, 3, 4], 4, None, "GPU", None, [["x"]], 0, "full_attention", None],
        ["BlockRemoved", [5], "GPU", 0],
        ["AllBlocksCleared", "unexpected"],
    ], 2, "future field"])
    assert decode_vllm_batch(payload) == VllmBatch(0.5, (decoded_stored(None, (5,), (1, 2, 3, 4), 4),
                                                         KvRemoved((5,)), KvCleared()), 2)


def test_negative_and_bytes_hashes_are_normalised_to_u64() -> None:
    payload = msgpack.packb([0.0, [
        ["BlockStored", [-1, -(2**63), 7], -5, [], 4, None, "GPU", None],
        ["BlockRemoved", [-2, b"\x01" * 10], "GPU"],
    ], 0], use_bin_type=True)
    first, second = decode_vllm_batch(payload).events
    assert isinstance(first, KvStored) and isinstance(second, KvRemoved)
    assert first.block_hashes == (U64, 2**63, 7)
    assert first.parent_hash == U64 - 4
    # bytes hashes fold as vLLM's int form does: int.from_bytes(h, "big") & (2**64-1)
    assert second.block_hashes == (U64 - 1, int.from_bytes(b"\x01" * 8, "big"))


def test_token_hashes_match_the_fact_sheet_vectors() -> None:
    payload = msgpack.packb([0.0, [["BlockStored", [1, 2], None, [1, 2, 3, 4, 5, 6, 7, 8], 4, None, "GPU", None]]])
    (event,) = decode_vllm_batch(payload).events
    assert isinstance(event, KvStored)
    assert event.token_hashes == (14643705804678351452, 16777012769546811212)
    assert event.token_hashes[0] == local_hash([1, 2, 3, 4])


def test_token_count_that_does_not_tile_the_blocks_gives_zero_token_hashes() -> None:
    payload = msgpack.packb([0.0, [["BlockStored", [1, 2], None, [1, 2, 3, 4, 5], 4, None, "GPU", None]]])
    assert decode_vllm_batch(payload).events == (decoded_stored(None, (1, 2), (1, 2, 3, 4, 5), 4),)


def _pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


@pytest.mark.parametrize(("payload", "message"), [
    (b"", "not a valid msgpack message"),
    (b"\xc1", "not a valid msgpack message"),
    (bytes.fromhex(EXAMPLE_HEX)[:-4], "not a valid msgpack message"),
    (bytes.fromhex(EXAMPLE_HEX) + b"\x00", "not a valid msgpack message"),
    ("not bytes", "payload must be bytes"),
    (_pack(1.5), "batch must be a msgpack array"),
    (_pack([1.5]), r"needs at least \[ts, events\]"),
    (_pack(["x", []]), "ts must be a number"),
    (_pack([True, []]), "ts must be a number"),
    (_pack([1.0, {}]), "events must be an array"),
    (_pack([1.0, [], -1]), "dp_rank must be a non-negative integer"),
    (_pack({"ts": 1.0}), "needs keys 'ts' and 'events'"),
    (_pack([1.0, [42]]), "event 0: must be a tagged array or map"),
    (_pack([1.0, [[]]]), "event 0: a tagged array must start with the event type string"),
    (_pack([1.0, [["AllBlocksCleared"], ["Nope"]]]), "event 1: unknown event type 'Nope'"),
    (_pack([1.0, [{"type": "Nope"}]]), "unknown event type 'Nope'"),
    (_pack([1.0, [{"block_hashes": []}]]), "needs a string 'type' key"),
    (_pack([1.0, [["BlockStored", [1]]]]), r"event 0 \(BlockStored\): has 1 field\(s\), needs at least 4"),
    (_pack([1.0, [{"type": "BlockRemoved"}]]), r"missing field\(s\) block_hashes"),
    (_pack([1.0, [["BlockRemoved", "x"]]]), "block_hashes must be an array, got string"),
    (_pack([1.0, [["BlockRemoved", [1.5]]]]), "block_hashes must be an integer, got float"),
    (_pack([1.0, [["BlockRemoved", [1], 7]]]), "medium must be a string or nil"),
    (_pack([1.0, [["BlockStored", [1], "p", [], 4]]]), "parent_block_hash must be an integer"),
    (_pack([1.0, [["BlockStored", [1], None, [], 0]]]), "block_size must be a positive integer"),
    (_pack([1.0, [["BlockStored", [1], None, [-1, 0, 0, 0], 4]]]), "must hold u32 token ids, got -1"),
    (_pack([1.0, [["BlockStored", [1], None, "tok", 4]]]), "token_ids must be an array"),
])
def test_malformed_payloads_raise_one_line_wire_format_errors(payload: Any, message: str) -> None:
    with pytest.raises(WireFormatError, match=message) as info:
        decode_vllm_batch(payload)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ frames, endpoints


def test_seq_frames() -> None:
    assert seq_bytes(0) == bytes(8)
    assert seq_bytes(258) == bytes.fromhex("0000000000000102")
    assert seq_bytes(-1) == b"\xff" * 8
    assert seq_bytes(2**64 - 1) == b"\xff" * 8  # the same bytes: seqs never get near 2**63
    assert parse_seq(b"\xff" * 8) == -1
    assert all(parse_seq(seq_bytes(s)) == s for s in (0, 1, 2**40, 2**63 - 1, -1))
    with pytest.raises(ValueError):
        seq_bytes(2**64)
    with pytest.raises(WireFormatError, match="must be 8 bytes, got 3"):
        parse_seq(b"abc")


@pytest.mark.parametrize(("endpoint", "rank", "expected"), [
    ("tcp://*:5557", 0, "tcp://*:5557"),
    ("tcp://*:5557", 2, "tcp://*:5559"),
    ("tcp://[::1]:5557", 1, "tcp://[::1]:5558"),
    ("tcp://10.0.0.1:5557", 3, "tcp://10.0.0.1:5560"),
    ("ipc:///tmp/kv", 1, "ipc:///tmp/kv_dp1"),
    ("inproc://kv", 3, "inproc://kv_dp3"),
    ("inproc://kv", 0, "inproc://kv"),
])
def test_endpoint_for_rank(endpoint: str, rank: int, expected: str) -> None:
    assert endpoint_for_rank(endpoint, rank) == expected


@pytest.mark.parametrize(("endpoint", "rank"), [
    ("tcp://host", 1), ("tcp://host:*", 1), ("tcp://*:65535", 1), ("udp://x:1", 1), ("nonsense", 1), ("tcp://*:1", -1),
])
def test_endpoint_for_rank_rejects(endpoint: str, rank: int) -> None:
    with pytest.raises(ValueError):
        endpoint_for_rank(endpoint, rank)


def test_offset_endpoint_for_mirror_slots() -> None:
    assert offset_endpoint("tcp://127.0.0.1:5557", 0, "_0") == "tcp://127.0.0.1:5557"
    assert offset_endpoint("tcp://127.0.0.1:5557", 4, "_4") == "tcp://127.0.0.1:5561"
    assert offset_endpoint("ipc:///tmp/kv", 0, "_0") == "ipc:///tmp/kv_0"


@pytest.mark.parametrize(("endpoint", "binds"), [
    ("tcp://*:5557", True), ("tcp://[::]:5557", True), ("ipc:///tmp/kv", True), ("inproc://kv", True),
    ("tcp://127.0.0.1:5557", False), ("tcp://localhost:5557", False), ("tcp://[::1]:5557", False),
])
def test_should_bind(endpoint: str, binds: bool) -> None:
    assert should_bind(endpoint) is binds
