"""`KvRouterConfig`: the router's settings, with the reference (Dynamo 1.6.1) field names and defaults.

Reference fields keep their names and defaults (facts §i). A few reference fields
describe tiers the simulator does not model (host/disk cache hits, the shared
cache); they are accepted so reference configs validate, and have no effect.
Fields marked "clustersim" are extensions and do not exist in the reference.

`overlap_score_weight` is the reference's deprecated alias of `prefill_load_scale`;
as in the reference, setting it to 0 also sets `overlap_score_credit` to 0.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

RouterMode = Literal["kv", "round_robin", "random", "least_loaded"]
QueuePolicy = Literal["fcfs", "lcfs", "wspt"]

_MODE_ALIASES: dict[str, RouterMode] = {
    "kv": "kv",
    "kv_router": "kv",
    "kv-router": "kv",
    "round_robin": "round_robin",
    "round-robin": "round_robin",
    "roundrobin": "round_robin",
    "random": "random",
    "least_loaded": "least_loaded",
    "least-loaded": "least_loaded",
}


def parse_router_mode(name: str) -> RouterMode:
    """Map a CLI spelling (`kv_router`, `round-robin`, ...) to a `RouterMode`."""
    try:
        return _MODE_ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown router mode {name!r}; expected one of {sorted(_MODE_ALIASES)}") from None


class KvRouterConfig(BaseModel):
    """Validated, immutable router settings. Unknown keys are rejected, naming the key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- cost function (reference) ---
    overlap_score_credit: float = Field(1.0, ge=0.0, description="Credit per device-cached overlap block.")
    overlap_score_credit_decay: float = Field(
        0.0, ge=0.0, description="Rational decay of the credit with excess prefill load; 0 = no decay."
    )
    prefill_load_scale: float = Field(
        1.0, ge=0.0, description="Weight of the prefill term (alias: overlap_score_weight)."
    )
    decode_active_request_weight: float = Field(0.0, ge=0.0, description="Cost per active request, in blocks.")
    host_cache_hit_weight: float = Field(0.75, ge=0.0, description="Accepted; no host tier is simulated.")
    disk_cache_hit_weight: float = Field(0.25, ge=0.0, description="Accepted; no disk tier is simulated.")
    shared_cache_multiplier: float = Field(0.5, ge=0.0, description="Accepted; no shared cache is simulated.")
    router_temperature: float = Field(
        0.0, ge=0.0, description="0 = argmin with seeded tie-break; > 0 = softmax over min-max normalized costs."
    )
    # --- indexer and load tracking (reference) ---
    use_kv_events: bool = Field(
        True, description="False = approximate mode: index the routed blocks, expire after router_ttl_secs."
    )
    router_ttl_secs: float = Field(120.0, gt=0.0, description="Approximate-mode block lifetime, seconds.")
    router_track_active_blocks: bool = Field(True, description="Charge the decode term with predicted active blocks.")
    router_track_output_blocks: bool = Field(
        False, description="Reference option; only False is supported (output blocks are not tracked)."
    )
    router_assume_kv_reuse: bool = Field(
        True, description="Deduplicate a request's blocks against the worker's active blocks."
    )
    router_track_prefill_tokens: bool = Field(True, description="Track and charge active prefill tokens.")
    router_prefill_load_model: Literal["none"] = Field("none", description="Only 'none' is supported.")
    # --- queueing (reference) ---
    router_queue_threshold: float | None = Field(
        None,
        ge=0.0,
        description="Queue when every worker's active prefill tokens exceed this x max_num_batched_tokens; "
        "None = never queue.",
    )
    router_queue_policy: QueuePolicy = Field("fcfs", description="Release order of queued requests.")
    # --- offline replay (reference) ---
    kv_event_lag_ms: float | None = Field(
        None, ge=0.0, description="Extra delay before KV events reach the index; None/0 = synchronous."
    )
    # --- clustersim extensions ---
    router_mode: RouterMode = Field("kv", description="clustersim: kv | round_robin | random | least_loaded.")
    router_queue_max_size: int | None = Field(
        None, ge=0, description="clustersim: reject arrivals when this many requests are queued; None = unbounded."
    )
    max_num_batched_tokens: int = Field(
        8192, gt=0, description="clustersim: the workers' token budget, scale of router_queue_threshold."
    )
    load_metrics_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="clustersim: blend of the decode term, (1-w)*predicted + w*reported active_blocks.",
    )

    @model_validator(mode="before")
    @classmethod
    def _map_overlap_score_weight(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "overlap_score_weight" not in data:
            return data
        data = dict(data)
        weight = data.pop("overlap_score_weight")
        if "prefill_load_scale" in data and data["prefill_load_scale"] != weight:
            raise ValueError("overlap_score_weight is an alias of prefill_load_scale; give only one")
        data["prefill_load_scale"] = weight
        if weight == 0 and "overlap_score_credit" not in data:
            data["overlap_score_credit"] = 0.0
        return data

    @model_validator(mode="after")
    def _check_supported(self) -> KvRouterConfig:
        if self.router_track_output_blocks:
            raise ValueError("router_track_output_blocks=True is not supported by clustersim yet")
        return self

    @property
    def event_lag_ms(self) -> float:
        """`kv_event_lag_ms` with None mapped to 0."""
        return self.kv_event_lag_ms or 0.0

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> KvRouterConfig:
        """Validate a mapping; raise ValueError whose message names each bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "router config"
                if err["type"] == "extra_forbidden":
                    problems.append(f"unknown router config field {loc!r}")
                else:
                    problems.append(f"router config field {loc!r}: {err['msg']}")
            raise ValueError("; ".join(problems)) from None

    @classmethod
    def from_json(cls, text: str) -> KvRouterConfig:
        """Parse `--router-config` JSON (an object); errors name the field."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--router-config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("--router-config must be a JSON object")
        return cls.from_mapping(data)
