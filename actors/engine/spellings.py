"""The spellings of engine settings users already have, lowered onto `EngineConfig`'s keys.

Three spellings reach the engine model (`EngineConfig`, a `mode="before"` step):

- clustersim's own keys (facts §0 names, flat);
- the flat `MockEngineArgs` JSON of the reference's 1.4/1.5 CLI (`--extra-engine-args`):
  `engine_type` (= `backend`), `is_prefill` / `is_decode` (= `worker_type`), `kv_bytes_per_token`,
  `kv_transfer_bandwidth`, `startup_time`, ...;
- the nested launch config of the 1.6.1 Python API, `{"engine": {...}, "dp_size": ..,
  "tensor_parallel_size": .., "startup_time": .., ...}`, whose engine section names the KV transfer
  size `kv_transfer_bytes_per_token` (lowered onto `kv_bytes_per_token`).

Lowering is idempotent (a lowered dict lowers to itself), so a config dumped into a scenario and read
back is unchanged. Keys the reference has but whose feature clustersim has not built are refused
here with `not built yet: <feature>` (a `PydanticCustomError` of type `not_built`, so the message
reaches the user without pydantic's prefix), never as "unknown key": the table `NOT_BUILT` names them.
A null value means "unset" in the reference, so a not-built key set to null is accepted and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import PydanticCustomError

AIC = "KV capacity derived from GPU memory (AIC sizing)"
KV_TIERS = "KV offload tiers (host, disk, shared cache)"

NOT_BUILT: dict[str, str] = {
    "gpu_memory_utilization": AIC,
    "mem_fraction_static": AIC,
    "free_gpu_memory_fraction": AIC,
    "cuda_graph_reserved_bytes": AIC,
    "kv_cache_bytes_per_token": AIC,
    "kv_cache_capacity_bytes": AIC,
    "kv_cache_groups": AIC,
    "num_g2_blocks": KV_TIERS,
    "num_g3_blocks": KV_TIERS,
    "enable_g4_storage": KV_TIERS,
    "native_host_offload": KV_TIERS,
    "g3_offload": KV_TIERS,
    "state_cache": "state caches of hybrid models",
    "prefix_match_unit": "prefix matching in units other than a block",
    "sglang": "the SGLang scheduling policy (backend 'sglang')",
    "trtllm": "the TensorRT-LLM scheduling policy (backend 'trtllm')",
    "dynamo": "the mocker's Dynamo runtime settings (local indexer, ZMQ ports, bootstrap)",
    "enable_local_indexer": "the mocker's Dynamo runtime settings (local indexer, ZMQ ports, bootstrap)",
    "bootstrap_port": "the mocker's Dynamo runtime settings (local indexer, ZMQ ports, bootstrap)",
}
"""Reference engine keys whose feature clustersim has not built, and that feature."""

NOT_BUILT_PREFIXES: dict[str, str] = {"aic_": "AIC (AI Configurator) timing and sizing"}

NOT_BUILT_VALUES: dict[tuple[str, str], str] = {
    ("backend", "sglang"): "the SGLang scheduling policy (backend 'sglang')",
    ("backend", "trtllm"): "the TensorRT-LLM scheduling policy (backend 'trtllm')",
}
"""Values of known keys whose feature is not built yet."""

LAUNCH_KEYS = ("dp_size", "tensor_parallel_size", "startup_time")
"""Top-level keys of the nested (1.6.1) launch config that clustersim keeps, flat."""

IGNORED_LAUNCH_KEYS = ("num_gpu_blocks_is_explicit",)
"""Top-level bookkeeping of the 1.6.1 normaliser: whether num_gpu_blocks was given; no effect here."""

ALIASES: dict[str, str] = {"engine_type": "backend", "kv_transfer_bytes_per_token": "kv_bytes_per_token"}
"""Flat `MockEngineArgs` names -> clustersim keys."""

NULLABLE = ("kv_transfer_bytes_per_token",)
"""Reference keys whose null (unset) clustersim drops before lowering (their clustersim key may be set too)."""

FLAG_ROLES: dict[str, str] = {"is_prefill": "prefill", "is_decode": "decode"}
"""`MockEngineArgs`' boolean role flags -> `worker_type`."""


def not_built(key: str, feature: str) -> PydanticCustomError:
    return PydanticCustomError("not_built", "{key}: not built yet: {feature}", {"key": key, "feature": feature})


def _flatten_nested(data: Mapping[str, Any]) -> dict[str, Any]:
    """The 1.6.1 launch config `{engine: {...}, dp_size, ...}` as one flat dict."""
    engine = data["engine"]
    if not isinstance(engine, Mapping):
        raise PydanticCustomError("dict_type", "engine: must be an object (the 1.6.1 nested form)")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "engine" or key in IGNORED_LAUNCH_KEYS:
            continue
        if key not in LAUNCH_KEYS and key not in NOT_BUILT:
            raise PydanticCustomError(
                "unknown_launch_key", "{key}: unknown key beside engine (the nested form's top level has {allowed})",
                {"key": key, "allowed": ", ".join(("engine", *LAUNCH_KEYS, *IGNORED_LAUNCH_KEYS))})
        flat[key] = value
    for key, value in engine.items():
        if key in flat:
            raise PydanticCustomError("conflict", "{key}: given both in engine and beside it", {"key": key})
        flat[key] = value
    return flat


def lower_engine_keys(data: Any) -> Any:
    """`data` (any of the three spellings) with clustersim's keys; non-dicts pass through untouched."""
    if not isinstance(data, Mapping):
        return data
    flat = _flatten_nested(data) if "engine" in data else dict(data)
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in flat.items():
        if value is None and (key in NOT_BUILT or key in FLAG_ROLES or key in NULLABLE):
            continue  # null = unset in the reference
        feature = NOT_BUILT.get(key) or next((f for p, f in NOT_BUILT_PREFIXES.items() if key.startswith(p)), None)
        if feature is not None:
            raise not_built(key, feature)
        if key in FLAG_ROLES:
            if value is True:
                _put(out, spelled, "worker_type", FLAG_ROLES[key], key)
            elif value is not False:
                raise PydanticCustomError("bool_type", "{key}: must be true or false", {"key": key})
            continue
        _put(out, spelled, ALIASES.get(key, key), value, key)
    for (key, bad), feature in NOT_BUILT_VALUES.items():
        if out.get(key) == bad:
            raise not_built(f"{key} {bad!r}", feature)
    return out


def _put(out: dict[str, Any], spelled: dict[str, str], key: str, value: Any, name: str) -> None:
    """Set `key` (spelled `name` by the user); two spellings of one key must agree."""
    if key in out and out[key] != value:
        raise PydanticCustomError("conflict", "{name}: conflicts with {other} given too",
                                  {"name": name, "other": spelled[key]})
    out[key] = value
    spelled[key] = name
