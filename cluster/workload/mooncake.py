"""The Mooncake JSONL trace loader (facts §h).

Everything here is deterministic: sessions keep first-appearance order (insertion-ordered
dicts), and every error is one line naming the file and line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cluster.workload.model import Session, Turn, Workload, WorkloadError


MAX_TIME_MS = 1e12
"""Largest accepted timestamp or delay: a float has ~16 digits, so at 1e12 ms latencies keep ~0.1 us."""


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
        for name, value in (("timestamp", self.timestamp), ("delay", self.delay), ("delay_ms", self.delay_ms)):
            if value is not None and abs(value) > MAX_TIME_MS:
                raise ValueError(f"{name} {value:g} ms is beyond {MAX_TIME_MS:g} ms (~30 years): simulated "
                                 "times that large lose sub-millisecond precision")
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
        return f"{str(first['msg']).removeprefix('Value error, ')}{suffix}"
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
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark (editors on Windows write one)
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
    `delay_ms`) as its think time, else the difference of its timestamp and the session's
    last timestamp so far, floored at 0, else 0 (as the reference). Timestamps are shifted
    so the earliest session starts at 0, then timestamps and delays are divided by
    `arrival_speedup_ratio`. `input_length` is clamped to `len(hash_ids) * trace_block_size`
    (NOTE: the 1.6.1 reference refuses such a row instead). Sessions are sorted by start;
    `Workload.trace_order` keeps their file order.

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
        last_timestamp = first.timestamp
        for position, (line_no, row) in enumerate(rows):
            if position == 0:
                delay = 0.0
            elif row.delay is not None:
                delay = row.delay
            elif row.delay_ms is not None:
                delay = row.delay_ms
            elif row.timestamp is not None:
                # as the reference: against the session's last timestamp, whichever turn had it
                assert last_timestamp is not None
                delay = max(0.0, row.timestamp - last_timestamp)
            else:
                delay = 0.0
            if row.timestamp is not None:
                last_timestamp = row.timestamp
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
    by_start = sorted(range(len(sessions)), key=lambda i: sessions[i].start_ms)  # stable: ties keep file order
    sorted_index = {file_idx: k for k, file_idx in enumerate(by_start)}
    order = tuple(sorted_index[i] for i in range(len(sessions)))
    return Workload(sessions=tuple(sessions[i] for i in by_start), trace_block_size=trace_block_size,
                    trace_order=None if order == tuple(range(len(sessions))) else order)
