"""The vLLM KV-cache event wire format: a pure msgpack codec plus ZMQ endpoint rules.

This module only turns values into bytes and back (it opens no socket and reads no
clock), so it is core code; `cluster.wire.zmq_publisher` is the host that moves the bytes.

Operations:
- `encode_vllm_batch(ts_s, events, dp_rank, block_size)` -> msgpack bytes of one
  vLLM `KVEventBatch`, events as msgspec tagged arrays (vLLM) or tagged maps (the
  Dynamo mocker's ZMQ mode).
- `decode_vllm_batch(payload)` -> `VllmBatch`; tolerant of every variant seen in the
  wild (arrays or maps, oldest field lists, extra trailing fields), strict about
  everything else: malformed input raises `WireFormatError` with a one-line message.
- `seq_bytes` / `parse_seq`: the 8-byte big-endian sequence frame (-1 ends a replay).
- `endpoint_for_rank`, `offset_endpoint`, `should_bind`: vLLM's endpoint conventions.

Layout of one batch (vLLM msgspec, `array_like=True, omit_defaults=True, tag=True`)::

    [ts_s: float64, [event, ...], dp_rank]          dp_rank omitted when None
    ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size,
                    lora_id, medium, lora_name]
    ["BlockRemoved", block_hashes, medium]
    ["AllBlocksCleared"]

`token_ids` is every token of the stored blocks, concatenated:
`| block 0: block_size tokens | block 1: block_size tokens | ... |`.

NOTE: vLLM's `ts` is wall-clock seconds; a simulated run sends simulated seconds
(`t_ms / 1000`), which is what the simulation means by "when".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgpack

from actors.engine.events import KvCleared, KvEventData, KvRemoved, KvStored
from actors.engine.hashing import local_hash

EventStyle = Literal["array", "map"]

REPLAY_END_SEQ = -1
"""Sequence number of the frame that ends a replay answer (8 bytes of 0xff)."""

_U64 = (1 << 64) - 1
_U32_LIMIT = 1 << 32
_I64_MIN = -(1 << 63)
_MAX_PORT = 65_535

# Positional field names per tag, in vLLM's declaration order. The first
# `_REQUIRED[tag]` of them exist in every variant (the oldest BlockStored had
# only block_hashes..lora_id, the oldest BlockRemoved only block_hashes);
# anything past the known names (group_idx, extra_keys, ...) is ignored.
_FIELDS: dict[str, tuple[str, ...]] = {
    "BlockStored": (
        "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium", "lora_name",
    ),
    "BlockRemoved": ("block_hashes", "medium"),
    "AllBlocksCleared": (),
}
_REQUIRED: dict[str, int] = {"BlockStored": 4, "BlockRemoved": 1, "AllBlocksCleared": 0}

# The engine team is adding `KvStored.token_ids`; build KvStored with it only
# when the running code base has the field, so this codec works before and after.


class WireFormatError(ValueError):
    """A payload or frame that is not a valid vLLM KV event message; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class VllmBatch:
    """One decoded `KVEventBatch`.

    Invariants: every hash is a u64 (negative i64 values were normalised);
    `dp_rank` is None only when the sender omitted it (oldest format, or rank None).
    """

    ts_s: float
    events: tuple[KvEventData, ...]
    dp_rank: int | None


# ----------------------------------------------------------------------------------------------- encode


def encode_vllm_batch(
    ts_s: float,
    events: Sequence[KvEventData],
    dp_rank: int | None,
    block_size: int,
    *,
    event_style: EventStyle = "array",
    medium: str | None = "GPU",
) -> bytes:
    """Encode one batch exactly as vLLM's msgspec encoder (or the Dynamo mocker) would.

    The batch is always a positional array (Dynamo's decoder requires that); `ts_s`
    is sent as float64. With `event_style="array"` each event is a tagged array
    with every non-defaulted vLLM field (`lora_id` and `lora_name` are None); with
    `"map"` it is the Dynamo mocker's map (`"type"` tag, `group_idx` 0, `medium`
    left out when None, `{"type": "AllBlocksCleared"}` for a clear, which the
    mocker itself never sends).

    A `KvStored` without token ids (the field missing or None) is sent with an
    empty `token_ids` list: receivers that recompute content hashes from tokens
    (Dynamo) then drop the blocks, and `decode_vllm_batch` reports token hash 0.

    Args:
        ts_s: Batch timestamp in seconds.
        events: Events in emission order.
        dp_rank: Data-parallel rank; None omits the field (omit_defaults).
        block_size: Tokens per block, sent in every BlockStored.
        event_style: "array" (vLLM) or "map" (Dynamo mocker).
        medium: Storage medium tag of stored and removed blocks.

    Raises:
        ValueError: on a non-positive block size, an unknown style or event type,
            token ids whose count is not n_blocks * block_size, or values msgpack
            cannot carry (hashes outside u64, non-integers).
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    encoded: list[object]
    if event_style == "array":
        encoded = [_encode_array_event(e, block_size, medium) for e in events]
    elif event_style == "map":
        encoded = [_encode_map_event(e, block_size, medium) for e in events]
    else:
        raise ValueError(f"event_style must be 'array' or 'map', got {event_style!r}")
    body: list[object] = [float(ts_s), encoded]
    if dp_rank is not None:
        body.append(dp_rank)
    try:
        payload: bytes = msgpack.packb(body, use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot encode KV event batch: {exc}") from exc
    return payload


def _stored_token_ids(event: KvStored, block_size: int) -> list[int]:
    token_ids: Sequence[int] | None = event.token_ids
    if token_ids is None:
        return []
    expected = len(event.block_hashes) * block_size
    if len(token_ids) != expected:
        raise ValueError(
            f"KvStored has {len(token_ids)} token ids for {len(event.block_hashes)} blocks of "
            f"{block_size} tokens (expected {expected})"
        )
    return list(token_ids)


def _encode_array_event(event: KvEventData, block_size: int, medium: str | None) -> list[object]:
    if isinstance(event, KvStored):
        return [
            "BlockStored", list(event.block_hashes), event.parent_hash,
            _stored_token_ids(event, block_size), block_size, None, medium, None,
        ]
    if isinstance(event, KvRemoved):
        return ["BlockRemoved", list(event.block_hashes), medium]
    if isinstance(event, KvCleared):
        return ["AllBlocksCleared"]
    raise ValueError(f"not a KV event: {type(event).__name__}")


def _encode_map_event(event: KvEventData, block_size: int, medium: str | None) -> dict[str, object]:
    # Key order follows the mocker's serde struct, so the bytes match it too.
    out: dict[str, object]
    if isinstance(event, KvStored):
        out = {
            "type": "BlockStored", "block_hashes": list(event.block_hashes),
            "parent_block_hash": event.parent_hash,
            "token_ids": _stored_token_ids(event, block_size), "block_size": block_size,
        }
    elif isinstance(event, KvRemoved):
        out = {"type": "BlockRemoved", "block_hashes": list(event.block_hashes)}
    elif isinstance(event, KvCleared):
        return {"type": "AllBlocksCleared"}
    else:
        raise ValueError(f"not a KV event: {type(event).__name__}")
    if medium is not None:
        out["medium"] = medium
    out["group_idx"] = 0
    return out


# ----------------------------------------------------------------------------------------------- decode


def decode_vllm_batch(payload: bytes) -> VllmBatch:
    """Decode one msgpack `KVEventBatch` into engine KV events.

    Accepted: the batch as a positional array `[ts, events]` or `[ts, events,
    dp_rank, ...]` (or, for the newest vLLM snapshots, a map with keys `ts`,
    `events`, `data_parallel_rank`); each event as a tagged array or a map with
    a `"type"` key; old variants with fewer fields; extra fields (ignored).
    Hashes may be i64 or u64 integers, or bytes (vLLM's non-int hashes, folded
    with vLLM's own rule `int.from_bytes(h, "big") & (2**64-1)`); all become u64.

    BlockStored -> `KvStored` whose `token_hashes` are `local_hash` of each
    block's tokens when `len(token_ids) == n_blocks * block_size`; otherwise
    (tokens absent or inconsistent) every token hash is 0, meaning "unknown".
    Where `KvStored` has a `token_ids` field it gets the tokens in the first case
    and None in the second. `medium`, `lora_id` and `group_idx` are not kept.

    Raises:
        WireFormatError: if the payload is not msgpack, has trailing bytes, or
            any field has the wrong shape or type.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise WireFormatError(f"payload must be bytes, got {type(payload).__name__}")
    try:
        raw = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise WireFormatError(f"payload is not a valid msgpack message: {message}") from None
    if isinstance(raw, list):
        if len(raw) < 2:
            raise WireFormatError(f"batch array needs at least [ts, events], got {len(raw)} element(s)")
        ts_raw, events_raw = raw[0], raw[1]
        dp_raw = raw[2] if len(raw) > 2 else None
    elif isinstance(raw, dict):
        if "ts" not in raw or "events" not in raw:
            raise WireFormatError("batch map needs keys 'ts' and 'events'")
        ts_raw, events_raw, dp_raw = raw["ts"], raw["events"], raw.get("data_parallel_rank")
    else:
        raise WireFormatError(f"batch must be a msgpack array, got {_kind(raw)}")
    if isinstance(ts_raw, bool) or not isinstance(ts_raw, (int, float)):
        raise WireFormatError(f"batch ts must be a number, got {_kind(ts_raw)}")
    if dp_raw is not None and (isinstance(dp_raw, bool) or not isinstance(dp_raw, int) or dp_raw < 0):
        raise WireFormatError(f"batch dp_rank must be a non-negative integer or nil, got {dp_raw!r}")
    if not isinstance(events_raw, list):
        raise WireFormatError(f"batch events must be an array, got {_kind(events_raw)}")
    events = tuple(_decode_event(ev, i) for i, ev in enumerate(events_raw))
    return VllmBatch(ts_s=float(ts_raw), events=events, dp_rank=dp_raw)


def _kind(value: object) -> str:
    names = {list: "array", dict: "map", str: "string", bytes: "binary", type(None): "nil"}
    return names.get(type(value), type(value).__name__)


def _event_fields(raw: object, index: int) -> tuple[str, dict[str, object]]:
    """(tag, fields by name) of an event given as a tagged array or a tagged map."""
    if isinstance(raw, list):
        if not raw or not isinstance(raw[0], str):
            raise WireFormatError(f"event {index}: a tagged array must start with the event type string")
        tag, values = raw[0], raw[1:]
        names = _FIELDS.get(tag)
        if names is None:
            raise WireFormatError(f"event {index}: unknown event type {tag!r}")
        if len(values) < _REQUIRED[tag]:
            raise WireFormatError(
                f"event {index} ({tag}): has {len(values)} field(s), needs at least {_REQUIRED[tag]}"
            )
        return tag, dict(zip(names, values))  # zip drops unknown trailing fields
    if isinstance(raw, dict):
        map_tag = raw.get("type")
        if not isinstance(map_tag, str):
            raise WireFormatError(f"event {index}: a map event needs a string 'type' key")
        if map_tag not in _FIELDS:
            raise WireFormatError(f"event {index}: unknown event type {map_tag!r}")
        missing = [k for k in _FIELDS[map_tag][: _REQUIRED[map_tag]] if k not in raw]
        if missing:
            raise WireFormatError(f"event {index} ({map_tag}): missing field(s) {', '.join(missing)}")
        return map_tag, raw
    raise WireFormatError(f"event {index}: must be a tagged array or map, got {_kind(raw)}")


def _decode_event(raw: object, index: int) -> KvEventData:
    tag, fields = _event_fields(raw, index)
    where = f"event {index} ({tag})"
    medium = fields.get("medium")
    if medium is not None and not isinstance(medium, str):
        raise WireFormatError(f"{where}: medium must be a string or nil, got {_kind(medium)}")
    if tag == "AllBlocksCleared":
        return KvCleared()
    hashes = _hash_list(fields["block_hashes"], f"{where} block_hashes")
    if tag == "BlockRemoved":
        return KvRemoved(block_hashes=hashes)
    parent_raw = fields["parent_block_hash"]
    parent = None if parent_raw is None else _as_u64(parent_raw, f"{where} parent_block_hash")
    block_size = fields["block_size"]
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise WireFormatError(f"{where}: block_size must be a positive integer, got {block_size!r}")
    tokens = _token_list(fields["token_ids"], f"{where} token_ids")
    return _stored(parent, hashes, tokens, block_size)


def _stored(parent: int | None, hashes: tuple[int, ...], tokens: list[int], block_size: int) -> KvStored:
    n_blocks = len(hashes)
    token_ids: tuple[int, ...] | None = None
    if n_blocks and len(tokens) == n_blocks * block_size:
        token_hashes = tuple(local_hash(tokens[i * block_size:(i + 1) * block_size]) for i in range(n_blocks))
        token_ids = tuple(tokens)
    else:
        # Unknown content (no tokens, or a count that does not tile the blocks):
        # 0 is the documented "no local hash" value; Dynamo drops such blocks.
        token_hashes = (0,) * n_blocks
    return KvStored(parent, hashes, token_hashes, token_ids)


def _as_u64(value: object, what: str) -> int:
    if isinstance(value, bytes):
        return int.from_bytes(value, "big") & _U64
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireFormatError(f"{what} must be an integer, got {_kind(value)}")
    # msgpack integers lie in [-2**63, 2**64); a negative one is an i64 view of a u64.
    return value & _U64


def _hash_list(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise WireFormatError(f"{what} must be an array, got {_kind(value)}")
    return tuple(_as_u64(h, what) for h in value)


def _token_list(value: object, what: str) -> list[int]:
    if not isinstance(value, list):
        raise WireFormatError(f"{what} must be an array, got {_kind(value)}")
    for token in value:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < _U32_LIMIT:
            raise WireFormatError(f"{what} must hold u32 token ids, got {token!r}")
    return value


# ------------------------------------------------------------------------------------- frames, endpoints


def seq_bytes(seq: int) -> bytes:
    """The 8-byte big-endian sequence frame: unsigned for seq >= 0, two's complement below (-1 -> ff*8).

    Raises:
        ValueError: if seq is outside [-2**63, 2**64).
    """
    if 0 <= seq <= _U64:
        return seq.to_bytes(8, "big")
    if _I64_MIN <= seq < 0:
        return seq.to_bytes(8, "big", signed=True)
    raise ValueError(f"sequence number {seq} does not fit in 8 bytes")


def parse_seq(frame: bytes) -> int:
    """Read an 8-byte big-endian sequence frame as a signed integer (so the end marker reads -1).

    Raises:
        WireFormatError: if the frame is not exactly 8 bytes.
    """
    if len(frame) != 8:
        raise WireFormatError(f"sequence frame must be 8 bytes, got {len(frame)}")
    return int.from_bytes(frame, "big", signed=True)


def _split_endpoint(endpoint: str) -> tuple[str, str]:
    scheme, sep, address = endpoint.partition("://")
    if not sep or not scheme or not address:
        raise ValueError(f"endpoint must look like scheme://address, got {endpoint!r}")
    return scheme, address


def offset_endpoint(endpoint: str, offset: int, suffix: str) -> str:
    """`endpoint` moved to its `offset`-th sibling: tcp port + offset, or ipc/inproc name + suffix.

    Raises:
        ValueError: for another scheme, a tcp endpoint without a numeric port,
            or a resulting port above 65535.
    """
    scheme, address = _split_endpoint(endpoint)
    if scheme in ("ipc", "inproc"):
        return endpoint + suffix
    if scheme != "tcp":
        raise ValueError(f"unsupported endpoint scheme {scheme!r} in {endpoint!r} (use tcp, ipc or inproc)")
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"tcp endpoint needs a numeric port to offset: {endpoint!r}")
    port = int(port_text) + offset
    if port > _MAX_PORT:
        raise ValueError(f"offsetting {endpoint!r} by {offset} gives port {port} > {_MAX_PORT}")
    return f"tcp://{host}:{port}"


def endpoint_for_rank(endpoint: str, dp_rank: int) -> str:
    """vLLM's per-DP-rank endpoint: rank 0 keeps `endpoint`; rank r adds r to the tcp port or `_dp<r>` to ipc/inproc.

    NOTE: vLLM itself only suffixes inproc (an ipc endpoint raises there); we treat
    ipc like inproc, the same rule as newer Dynamo/SGLang publishers.

    Raises:
        ValueError: for a negative rank, or an endpoint `offset_endpoint` rejects.
    """
    if dp_rank < 0:
        raise ValueError(f"dp_rank must be >= 0, got {dp_rank}")
    if dp_rank == 0:
        return endpoint
    return offset_endpoint(endpoint, dp_rank, f"_dp{dp_rank}")


def should_bind(endpoint: str) -> bool:
    """vLLM's publisher rule: bind for a wildcard tcp host ('*' or '::') or any ipc/inproc endpoint, else connect."""
    scheme, address = _split_endpoint(endpoint)
    if scheme in ("ipc", "inproc"):
        return True
    host = address.rpartition(":")[0] if ":" in address else address
    return host.strip("[]") in ("*", "::")
