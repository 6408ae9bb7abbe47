"""The synthetic workload generator, as the reference replay's (facts §h).

Deterministic: same spec, same workload; randomness comes from `numpy.random.Generator`s
spawned from the spec's seed.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.workload.model import Session, Turn, Workload

PREFIX_HASH_TAG = 0xD00D
"""Shared-prefix hash ids of the synthetic generator are `0xD00D<<48 | group<<32 | block_idx`."""


class SyntheticSpec(BaseModel):
    """Synthetic workload, as the reference replay's synthetic generator (facts §h).

    `request_count` is the number of sessions; each has `turns_per_session` independent
    turns (no history carry). Session arrivals: Poisson at `request_rate` req/s
    (exponential gaps, mean 1000/rate ms), else constant `arrival_interval_ms` gaps
    (default 1.0 ms; 0 = all at once). The first session starts at 0. `block_size` is the
    tokens per hash id; the replay passes the ENGINE block size here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    input_tokens: int = Field(ge=1, description="Mean input length (tokens).")
    output_tokens: int = Field(ge=1, description="Mean output length (tokens).")
    request_count: int = Field(ge=1, description="Number of sessions.")
    input_stddev: float | None = Field(default=None, ge=0.0, description="Normal stddev of input length; min 1.")
    output_stddev: float | None = Field(default=None, ge=0.0, description="Normal stddev of output length; min 1.")
    request_rate: float | None = Field(default=None, gt=0.0, description="Poisson session arrival rate (1/s).")
    arrival_interval_ms: float | None = Field(
        default=None, ge=0.0, description="Constant gap between sessions; 1.0 when neither is set."
    )
    turns_per_session: int = Field(default=1, ge=1)
    inter_turn_delay_ms: float = Field(default=0.0, ge=0.0)
    shared_prefix_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    num_prefix_groups: int = Field(default=1, ge=1, lt=1 << 16)
    seed: int = Field(default=42, ge=0, description="Seed of all draws (the reference's arrival_seed).")
    block_size: int = Field(default=64, ge=1, description="Tokens per hash id (engine block size).")

    @model_validator(mode="after")
    def _one_arrival_process(self) -> SyntheticSpec:
        if self.request_rate is not None and self.arrival_interval_ms is not None:
            raise ValueError("give request_rate or arrival_interval_ms, not both")
        return self

    @property
    def effective_arrival_interval_ms(self) -> float:
        return 1.0 if self.arrival_interval_ms is None else self.arrival_interval_ms


def _lengths(rng: np.random.Generator, mean: int, stddev: float | None, n: int) -> list[int]:
    if not stddev:
        return [mean] * n
    draws = np.rint(rng.normal(float(mean), stddev, size=n))
    return [int(v) for v in np.maximum(draws, 1.0)]


def _round_half_up(x: float) -> int:
    """Rounding as Rust's f64::round for x >= 0 (half away from zero), not banker's."""
    return math.floor(x + 0.5)


def prefix_hash_id(group: int, block_idx: int) -> int:
    """Hash id of shared block `block_idx` of prefix group `group`."""
    return (PREFIX_HASH_TAG << 48) | (group << 32) | block_idx


def synthesize(spec: SyntheticSpec) -> Workload:
    """Generate the workload `spec` describes; same spec, same workload.

    Independent streams (spawned from `spec.seed`) feed arrivals, lengths and prefix
    groups, so enabling stddevs does not move arrivals. Per turn, with
    n = ceil(isl / block_size) blocks, the first round(n * shared_prefix_ratio) ids are
    `prefix_hash_id(group, 0..)`, the rest unique ids counting up from 1 over the run.
    """
    arrivals_rng, inputs_rng, outputs_rng, groups_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(4)
    )
    n_sessions = spec.request_count
    n_turns = n_sessions * spec.turns_per_session
    if spec.request_rate is not None:
        gaps = arrivals_rng.exponential(1000.0 / spec.request_rate, size=n_sessions - 1)
        starts = [0.0] + [float(v) for v in np.cumsum(gaps)]
    else:
        starts = [i * spec.effective_arrival_interval_ms for i in range(n_sessions)]
    inputs = _lengths(inputs_rng, spec.input_tokens, spec.input_stddev, n_turns)
    outputs = _lengths(outputs_rng, spec.output_tokens, spec.output_stddev, n_turns)
    groups = [int(g) for g in groups_rng.integers(0, spec.num_prefix_groups, size=n_sessions)]

    bs = spec.block_size
    next_unique = 1
    sessions: list[Session] = []
    for s in range(n_sessions):
        turns: list[Turn] = []
        for t in range(spec.turns_per_session):
            k = s * spec.turns_per_session + t
            isl = inputs[k]
            n_blocks = -(-isl // bs)
            n_prefix = min(n_blocks, _round_half_up(n_blocks * spec.shared_prefix_ratio))
            ids = [prefix_hash_id(groups[s], b) for b in range(n_prefix)]
            ids.extend(range(next_unique, next_unique + n_blocks - n_prefix))
            next_unique += n_blocks - n_prefix
            delay = 0.0 if t == 0 else spec.inter_turn_delay_ms
            turns.append(Turn(input_length=isl, output_length=outputs[k], hash_ids=tuple(ids), delay_ms=delay))
        sessions.append(Session(session_id=f"session_{s}", start_ms=starts[s], turns=tuple(turns)))
    return Workload(sessions=tuple(sessions), trace_block_size=bs)
