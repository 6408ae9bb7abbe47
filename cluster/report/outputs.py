"""Report files: the report JSON and the per-request JSONL, both byte-deterministic (sorted keys).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from actors.engine.records import RequestRecord, TerminalStatus


def _dumps(obj: object, indent: int | None) -> str:
    return json.dumps(obj, sort_keys=True, indent=indent, allow_nan=False, ensure_ascii=False)


def write_report_json(report: Mapping[str, object], path: str | Path) -> None:
    """Write `report` as JSON: sorted keys, indent 2, trailing newline, UTF-8.

    Same dict, same bytes. Raises ValueError on NaN/inf (not valid JSON).
    """
    Path(path).write_bytes((_dumps(report, 2) + "\n").encode("utf-8"))


def _opt(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def per_request_rows(records: Sequence[RequestRecord]) -> list[dict[str, object]]:
    """One dict per record with the reference's per-request keys (facts §h) that we track.

    Ordered by (arrival_time_ms, request_id); `itl_ms` is the request's TPOT; a worker id
    of -1 (never dispatched) becomes `decode_worker_idx: null`. A request that did not complete also has
    `reason` (a `FailureReason` value, null while incomplete), `reason_detail` and `cause`; a request
    that migrated has `migrated_from` (the worker ids it left, in order). A disaggregated request also has
    the reference's prefill/transfer keys (`prefill_worker_idx` ... `source_released_ms`, worker ids as
    clustersim numbers them) and `transfer_tokens`, `transfer_bytes`, `transfer_ms`.
    """
    rows: list[dict[str, object]] = []
    for r in sorted(records, key=lambda rec: (rec.arrival_ms, rec.request_id)):
        rows.append(
            {
                "session_id": r.session_id,
                "turn_index": r.turn_index,
                "uuid": str(r.request_id),
                "arrival_time_ms": float(r.arrival_ms),
                "dispatched_at_ms": _opt(r.dispatched_ms),
                "first_admit_ms": _opt(r.first_admit_ms),
                "terminal_time_ms": _opt(r.terminal_ms),
                "first_token_ms": _opt(r.first_token_ms),
                "last_token_ms": _opt(r.last_token_ms),
                "ttft_ms": _opt(r.ttft_ms),
                "ttst_ms": _opt(r.ttst_ms),
                "e2e_latency_ms": _opt(r.e2e_latency_ms),
                "itl_ms": _opt(r.tpot_ms),
                "input_length": r.input_length,
                "requested_output_length": r.requested_output_length,
                "output_length": r.output_length,
                "reused_input_tokens": r.reused_input_tokens,
                "decode_worker_idx": r.worker_id if r.worker_id >= 0 else None,
                "dp_rank": r.dp_rank,
                "admission_count": r.admission_count,
                "readmission_count": r.readmission_count,
                "terminal_status": r.terminal_status.value,
                "routing_history": r.routing_history,
            }
        )
        if r.terminal_status is not TerminalStatus.COMPLETED:  # why, for every request that did not complete
            rows[-1].update(reason=None if r.reason is None else r.reason.value, reason_detail=r.reason_detail,
                            cause=r.cause)
        ho = r.handoff
        if ho is not None:  # disaggregated: the prefill side and the KV transfer (reference keys)
            rows[-1].update(
                prefill_worker_idx=ho.prefill_worker_id, prefill_admit_ms=_opt(ho.prefill.first_admit_ms),
                source_held_ms=ho.source_held_ms, destination_reserved_ms=_opt(ho.destination_reserved_ms),
                destination_activated_ms=_opt(r.engine.first_admit_ms), transfer_done_ms=_opt(ho.transfer_done_ms),
                decode_admit_ms=_opt(r.engine.first_admit_ms), source_released_ms=_opt(ho.source_released_ms),
                decode_reused_input_tokens=r.engine.reused_input_tokens, transfer_tokens=ho.transfer_tokens,
                transfer_bytes=ho.transfer_bytes, transfer_ms=ho.transfer_ms)
        if r.migrated_from:  # the workers it left (request migration)
            rows[-1]["migrated_from"] = list(r.migrated_from)
    return rows


def write_per_request_jsonl(records: Sequence[RequestRecord], path: str | Path) -> None:
    """One JSON object per line (sorted keys), in `per_request_rows` order."""
    text = "".join(_dumps(row, None) + "\n" for row in per_request_rows(records))
    Path(path).write_bytes(text.encode("utf-8"))


class OutputPathError(ValueError):
    """An output file that cannot be written; the message says which and why (one line)."""


def check_writable(path: str | Path) -> None:
    """Refuse, before a run, an output file that cannot be written: its directory is created (as
    writing it would) and a probe file is created and removed there; an existing directory at
    `path` is refused too. Catching this after a run would lose the run.

    Raises:
        OutputPathError: `<path>: <why>`.
    """
    import os
    import tempfile

    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{p}: is a directory, not a file")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputPathError(f"{p}: cannot create its directory {p.parent}: a file is in the way") from None
    except OSError as exc:
        raise OutputPathError(f"{p}: cannot create its directory {p.parent}: {exc.strerror}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p.parent, prefix=".clustersim-probe-")
        os.close(fd)
        os.unlink(probe)
        if p.exists() and not os.access(p, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise OutputPathError(f"{p}: cannot write there: {exc.strerror}") from None
