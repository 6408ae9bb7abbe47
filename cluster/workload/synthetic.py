"""The synthetic workload generator, as the reference replay's (facts §h).

Draw for draw the reference's (facts §h, §k): every random choice comes from a Rust
`StdRng` stream (`cluster.workload.rust_rng`), in the reference's order:
- arrivals: their own stream, `StdRng::seed_from_u64(arrival_seed)`: the first session at 0,
  session i+1 `-ln(clamp(1 - u_i)) * 1000 / rate` ms after session i (a running f64 sum);
- shape: one stream from `seed` (the reference fixes it at 42, whatever its arrival_seed):
  per session one `random_range(0..num_prefix_groups)` (only when prefix sharing is on),
  then per turn the input length and the output length (two draws each, Box-Muller, only
  when its stddev is set).
So prefix groups and length noise never move arrivals, and the same spec gives the same
workload as the reference's generator with the same arguments.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.workload.model import Session, Turn, Workload
from cluster.workload.rust_rng import RustStdRng

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
    num_prefix_groups: int = Field(default=1, ge=0, lt=1 << 16,
                                   description="Prefix groups; 0 = no shared prefix (as the reference).")
    arrival_seed: int = Field(default=42, ge=0, lt=1 << 64, description="Seed of the arrival stream.")
    seed: int = Field(default=42, ge=0, lt=1 << 64,
                      description="Seed of prefix groups and length noise (the reference fixes it at 42).")
    block_size: int = Field(default=64, ge=1, description="Tokens per hash id (engine block size).")

    @model_validator(mode="after")
    def _one_arrival_process(self) -> SyntheticSpec:
        if self.request_rate is not None and self.arrival_interval_ms is not None:
            raise ValueError("give request_rate or arrival_interval_ms, not both")
        return self

    @property
    def effective_arrival_interval_ms(self) -> float:
        return 1.0 if self.arrival_interval_ms is None else self.arrival_interval_ms


def _round_half_up(x: float) -> int:
    """Rounding as Rust's f64::round for x >= 0 (half away from zero), not banker's."""
    return math.floor(x + 0.5)


def prefix_hash_id(group: int, block_idx: int) -> int:
    """Hash id of shared block `block_idx` of prefix group `group`."""
    return (PREFIX_HASH_TAG << 48) | (group << 32) | block_idx


def arrival_times_ms(spec: SyntheticSpec) -> list[float]:
    """First-turn arrivals of the sessions, as the reference's arrival stream (module docstring).

    Constant gaps are `1000 / (1000 / interval)` ms (the reference turns an interval into a
    rate and back) summed one by one, so the i-th start is not exactly `i * interval`.
    """
    n = spec.request_count
    if spec.request_rate is not None:
        mean_gap_ms = 1000.0 / spec.request_rate
        u = RustStdRng(spec.arrival_seed).f64s(n - 1)
        gaps = -mean_gap_ms * np.log(np.clip(1.0 - u, np.finfo(np.float64).tiny, 1.0))
    else:
        interval = spec.effective_arrival_interval_ms
        gap = 0.0 if interval == 0.0 else 1000.0 / (1000.0 / interval)
        gaps = np.full(n - 1, gap)
    # np.cumsum adds left to right, as the reference's running sum does.
    return [0.0, *(float(v) for v in np.cumsum(gaps))]


def _length(rng: RustStdRng, mean: int, stddev: float | None) -> int:
    """One sampled length, as the reference's `sample_length` (min 1, Box-Muller on two draws)."""
    if not stddev:
        return max(mean, 1)
    u1 = min(max(1.0 - rng.random_f64(), np.finfo(np.float64).tiny), 1.0)
    u2 = rng.random_f64()
    z0 = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    sample = float(mean) + z0 * abs(stddev)
    return max(_round_half_up(sample) if sample >= 0 else -_round_half_up(-sample), 1)


def _shapes(spec: SyntheticSpec) -> tuple[list[int | None], list[int], list[int]]:
    """(group per session, input length per turn, output length per turn) from the shape stream."""
    rng = RustStdRng(spec.seed)
    sharing = spec.num_prefix_groups > 0 and spec.shared_prefix_ratio > 0.0
    noisy = bool(spec.input_stddev) or bool(spec.output_stddev)
    n, turns = spec.request_count, spec.turns_per_session
    if not noisy:
        groups: list[int | None] = list(rng.ranges(spec.num_prefix_groups, n)) if sharing else [None] * n
        return groups, [max(spec.input_tokens, 1)] * (n * turns), [max(spec.output_tokens, 1)] * (n * turns)
    groups, inputs, outputs = [], [], []
    for _ in range(n):
        groups.append(rng.random_range(spec.num_prefix_groups) if sharing else None)
        for _ in range(turns):
            inputs.append(_length(rng, spec.input_tokens, spec.input_stddev))
            outputs.append(_length(rng, spec.output_tokens, spec.output_stddev))
    return groups, inputs, outputs


def synthesize(spec: SyntheticSpec) -> Workload:
    """Generate the workload `spec` describes; same spec, same workload (module docstring).

    Per turn, with n = ceil(isl / block_size) blocks, the first round(n * shared_prefix_ratio)
    ids are `prefix_hash_id(group, 0..)` when the session has a group, the rest unique ids
    counting up from 1 over the run.
    """
    starts = arrival_times_ms(spec)
    groups, inputs, outputs = _shapes(spec)
    bs = spec.block_size
    next_unique = 1
    sessions: list[Session] = []
    for s in range(spec.request_count):
        turns: list[Turn] = []
        group = groups[s]
        for t in range(spec.turns_per_session):
            k = s * spec.turns_per_session + t
            isl = inputs[k]
            n_blocks = -(-isl // bs)
            n_prefix = 0 if group is None else min(n_blocks, _round_half_up(n_blocks * spec.shared_prefix_ratio))
            ids = [prefix_hash_id(group, b) for b in range(n_prefix)] if group is not None else []
            ids.extend(range(next_unique, next_unique + n_blocks - n_prefix))
            next_unique += n_blocks - n_prefix
            delay = 0.0 if t == 0 else spec.inter_turn_delay_ms
            turns.append(Turn(input_length=isl, output_length=outputs[k], hash_ids=tuple(ids), delay_ms=delay))
        sessions.append(Session(session_id=f"session_{s}", start_ms=starts[s], turns=tuple(turns)))
    return Workload(sessions=tuple(sessions), trace_block_size=bs)
