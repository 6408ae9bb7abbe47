"""Workloads as sessions of turns: the Mooncake JSONL loader and the synthetic generator.

A `Workload` is an immutable, sorted list of `Session`s; a session is one or more
`Turn`s (requests). The first turn arrives at `Session.start_ms`; turn k > 0 is sent
`Turn.delay_ms` after turn k-1 completes (closed loop per session), so only first-turn
arrivals are known before the run. Requests carry no token strings: a turn has
`input_length`, `output_length` and `hash_ids`, one id per `trace_block_size` tokens
(facts §h: hash id h stands for trace_block_size copies of token id u32(h)).

Invariants (checked in `__post_init__`):
- sessions are sorted by `start_ms`; ties keep file (or creation) order;
- every session has at least one turn and its first turn has `delay_ms == 0.0`;
- `turn.input_length <= len(turn.hash_ids) * trace_block_size`;
- all times are finite, non-negative simulated milliseconds.
Everything here is deterministic: no dict/set iteration decides an order except
insertion-ordered dicts, and randomness comes from a seeded `numpy.random.Generator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PREFIX_HASH_TAG = 0xD00D
"""Shared-prefix hash ids of the synthetic generator are `0xD00D<<48 | group<<32 | block_idx`."""


class WorkloadError(ValueError):
    """A workload could not be loaded. The message is one line naming the file and line."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One request of a session.

    `hash_ids` has one id per trace block; `input_length` never exceeds
    `len(hash_ids) * trace_block_size`. `delay_ms` is the think time between the
    completion of the previous turn and this turn's arrival; 0.0 for the first turn.
    """

    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    delay_ms: float


@dataclass(frozen=True, slots=True)
class Session:
    """A conversation: `turns[0]` arrives at `start_ms`, the rest follow completions."""

    session_id: str
    start_ms: float
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Workload:
    """An immutable workload. See the module docstring for the invariants."""

    sessions: tuple[Session, ...]
    trace_block_size: int

    def __post_init__(self) -> None:
        if self.trace_block_size <= 0:
            raise ValueError(f"trace_block_size must be positive, got {self.trace_block_size}")
        previous = -math.inf
        for session in self.sessions:
            if not session.turns:
                raise ValueError(f"session {session.session_id!r} has no turns")
            if not (math.isfinite(session.start_ms) and session.start_ms >= 0.0):
                raise ValueError(f"session {session.session_id!r} has start_ms {session.start_ms}")
            if session.start_ms < previous:
                raise ValueError(f"sessions are not sorted by start_ms at {session.session_id!r}")
            previous = session.start_ms
            if session.turns[0].delay_ms != 0.0:
                raise ValueError(f"first turn of session {session.session_id!r} has a delay")
            for turn in session.turns:
                if turn.input_length > len(turn.hash_ids) * self.trace_block_size:
                    raise ValueError(f"session {session.session_id!r}: input_length exceeds its hash_ids")
                if not (math.isfinite(turn.delay_ms) and turn.delay_ms >= 0.0):
                    raise ValueError(f"session {session.session_id!r}: bad delay_ms {turn.delay_ms}")

    @property
    def num_sessions(self) -> int:
        return len(self.sessions)

    @cached_property
    def num_requests(self) -> int:
        """Number of turns over all sessions."""
        return sum(len(s.turns) for s in self.sessions)

    @cached_property
    def total_input_tokens(self) -> int:
        return sum(t.input_length for s in self.sessions for t in s.turns)

    @cached_property
    def total_output_tokens(self) -> int:
        return sum(t.output_length for s in self.sessions for t in s.turns)

    def scaled(self, arrival_speedup_ratio: float) -> "Workload":
        """The same workload with session starts and inter-turn delays divided by the ratio."""
        if not arrival_speedup_ratio > 0:
            raise ValueError(f"arrival_speedup_ratio must be positive, got {arrival_speedup_ratio}")
        r = arrival_speedup_ratio
        return Workload(
            sessions=tuple(
                Session(s.session_id, s.start_ms / r,
                        tuple(Turn(t.input_length, t.output_length, t.hash_ids, t.delay_ms / r) for t in s.turns))
                for s in self.sessions
            ),
            trace_block_size=self.trace_block_size,
        )

    @property
    def last_start_ms(self) -> float:
        """Arrival of the last session's first turn (0.0 for an empty workload)."""
        return self.sessions[-1].start_ms if self.sessions else 0.0


# --------------------------------------------------------------------------------------------
# Mooncake JSONL


class _TraceRow(BaseModel):
    """One Mooncake JSONL line (facts §h). Unknown keys are ignored: traces carry extras.

    Strict types: a JSON string "12" is not an int, 12.5 is not an int, true is not an int.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    timestamp: float | None = None
    input_length: Annotated[int, Field(ge=0)]
    output_length: Annotated[int, Field(ge=0)]
    hash_ids: list[Annotated[int, Field(ge=0)]]
    session_id: str | int | None = None
    delay: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    delay_ms: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _finite_timestamp(self) -> _TraceRow:
        if self.timestamp is not None and not math.isfinite(self.timestamp):
            raise ValueError("timestamp must be a finite number")
        return self


def _describe(error: ValidationError) -> str:
    """One line for the first pydantic error, naming the field."""
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    field = ".".join(str(part) for part in first["loc"])
    more = error.error_count() - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    if kind == "json_invalid":
        return f"line is not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "line is not a JSON object"
    if kind == "missing":
        return f"missing required field '{field}'{suffix}"
    if not field:
        return f"{first['msg']}{suffix}"
    got = repr(first["input"])
    got = got if len(got) <= 40 else got[:37] + "..."
    return f"field '{field}': {first['msg']} (got {got}){suffix}"


def _read_rows(path: Path) -> list[tuple[int, _TraceRow]]:
    """(1-based line number, row) for every non-blank line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WorkloadError(f"{path}: trace file not found") from None
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read trace: {exc.strerror}") from None
    rows: list[tuple[int, _TraceRow]] = []
    validate = _TraceRow.model_validate_json
    for index, raw in enumerate(data.split(b"\n")):
        if not raw.strip():
            continue
        try:
            rows.append((index + 1, validate(raw)))
        except ValidationError as exc:
            raise WorkloadError(f"{path}:{index + 1}: {_describe(exc)}") from None
    if not rows:
        raise WorkloadError(f"{path}: trace is empty")
    return rows


def load_mooncake(
    path: str | Path, trace_block_size: int = 512, arrival_speedup_ratio: float = 1.0
) -> Workload:
    """Load a Mooncake-style JSONL trace (facts §h).

    Rows with the same `session_id` are the turns of one session, in file order; a row
    without `session_id` is its own session `request_<i>` (i = 0-based line index).
    The first turn's `timestamp` is the session start; a later turn uses `delay` (or
    `delay_ms`) as its think time, else the difference of its timestamp and the previous
    turn's, floored at 0. Timestamps are shifted so the earliest session starts at 0, then
    timestamps and delays are divided by `arrival_speedup_ratio`. `input_length` is
    clamped to `len(hash_ids) * trace_block_size`.

    Raises:
        WorkloadError: one line naming the file and line: not JSON, not an object,
            a missing field, a wrong type, a negative length, an empty or missing file.
    """
    if trace_block_size <= 0:
        raise WorkloadError(f"trace_block_size must be positive, got {trace_block_size}")
    if not (math.isfinite(arrival_speedup_ratio) and arrival_speedup_ratio > 0.0):
        raise WorkloadError(f"arrival_speedup_ratio must be positive, got {arrival_speedup_ratio}")
    path = Path(path)
    grouped: dict[str, list[tuple[int, _TraceRow]]] = {}  # insertion-ordered: first appearance
    for line_no, row in _read_rows(path):
        key = f"request_{line_no - 1}" if row.session_id is None else str(row.session_id)
        grouped.setdefault(key, []).append((line_no, row))

    starts: list[float] = []
    turn_lists: list[tuple[Turn, ...]] = []
    for session_id, rows in grouped.items():
        first_line, first = rows[0]
        if first.timestamp is None:
            raise WorkloadError(f"{path}:{first_line}: missing required field 'timestamp' (first turn of {session_id!r})")
        starts.append(first.timestamp)
        turns: list[Turn] = []
        for position, (line_no, row) in enumerate(rows):
            if position == 0:
                delay = 0.0
            elif row.delay is not None:
                delay = row.delay
            elif row.delay_ms is not None:
                delay = row.delay_ms
            else:
                prev = rows[position - 1][1].timestamp
                if row.timestamp is None or prev is None:
                    raise WorkloadError(
                        f"{path}:{line_no}: turn {position} of {session_id!r} needs 'delay' or 'timestamp'"
                    )
                delay = max(0.0, row.timestamp - prev)
            ids = row.hash_ids
            turns.append(
                Turn(
                    input_length=min(row.input_length, len(ids) * trace_block_size),
                    output_length=row.output_length,
                    hash_ids=tuple(ids),
                    delay_ms=delay / arrival_speedup_ratio,
                )
            )
        turn_lists.append(tuple(turns))

    origin = min(starts)
    sessions = [
        Session(session_id=sid, start_ms=(start - origin) / arrival_speedup_ratio, turns=turns)
        for sid, start, turns in zip(grouped, starts, turn_lists)
    ]
    sessions.sort(key=lambda s: s.start_ms)  # stable: ties keep first-appearance order
    return Workload(sessions=tuple(sessions), trace_block_size=trace_block_size)


# --------------------------------------------------------------------------------------------
# Synthetic generator


class SyntheticSpec(BaseModel):
    """Synthetic workload, as the reference replay's synthetic generator (facts §h).

    `request_count` is the number of sessions; each has `turns_per_session` independent
    turns (no history carry). Session arrivals: Poisson at `request_rate` req/s
    (exponential gaps, mean 1000/rate ms), else constant `arrival_interval_ms` gaps
    (default 1.0 ms; 0 = all at once). The first session starts at 0. `block_size` is the
    tokens per hash id; the replay passes the ENGINE block size here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

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
