"""What `clustersim run` and `clustersim replay` share around a run (a host module).

- `check_outputs`: every output file is checked before the run (a path that cannot be written
  would otherwise fail after the whole run).
- `Interrupt`: Ctrl-C during a Local run stops the event loop at the next event boundary; the run
  ends with what it simulated, the report is marked `"partial": true`, and the command exits 130.
  A second Ctrl-C (or one on the Ray runtime, or outside the run) raises KeyboardInterrupt, which
  `cluster.cli.main` turns into one line and exit 130.
- `outcome_warning`: one line when requests did not complete (counts by reason), and exit status 3
  when none did.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.engine.records import RequestRecord
    from cluster.sim.clock import EventLoop
    from cluster.workload.synthetic import SyntheticSpec

EXIT_NOTHING_COMPLETED = 3
EXIT_INTERRUPTED = 130


def check_outputs(paths: Iterable[tuple[str, Path | None]]) -> None:
    """Refuse before the run any (flag or field, path) whose file cannot be written.

    Raises:
        ValueError: `<flag or field>: <path>: <why>`.
    """
    from cluster.report.outputs import OutputPathError, check_writable

    for what, path in paths:
        if path is None:
            continue
        try:
            check_writable(path)
        except OutputPathError as exc:
            raise ValueError(f"{what}: {exc}") from None


class Interrupt:
    """SIGINT while a run is in progress (see the module docstring). Use as a context manager
    around the run and pass `attach` as the runtime's `on_loop`."""

    def __init__(self) -> None:
        self.loop: EventLoop | None = None
        self.requested = False
        self._previous: Any = None

    def attach(self, loop: EventLoop) -> None:
        self.loop = loop

    @property
    def partial(self) -> bool:
        """The run was stopped early: its results hold what was simulated until then."""
        return self.requested and self.loop is not None and self.loop.stopped

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested or self.loop is None:
            raise KeyboardInterrupt
        self.requested = True
        self.loop.request_stop()

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def outcome_warning(records: Sequence[RequestRecord], end_ms: float) -> tuple[str | None, int]:
    """(a warning line or None, exit status) for the requests' outcomes: 0 when every request
    completed; a warning with the counts of the others by reason (and the time the last request
    ended, which the table's completion-based duration does not show); 3 when none completed."""
    from actors.engine.records import TerminalStatus

    done = sum(1 for r in records if r.terminal_status is TerminalStatus.COMPLETED)
    others = [r for r in records if r.terminal_status is not TerminalStatus.COMPLETED]
    if not others:
        return None, 0
    reasons = Counter(r.reason.value if r.reason is not None else r.terminal_status.value for r in others)
    counts = ", ".join(f"{reason} {n:,}" for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    last = max((r.terminal_ms for r in others if r.terminal_ms is not None), default=end_ms)
    line = (f"warning: {len(others):,} of {len(records):,} requests did not complete ({counts}); "
            f"the last ended at {last:,.2f} ms simulated")
    return line, (EXIT_NOTHING_COMPLETED if done == 0 else 0)


RANK_BYTES = 24 * 1024
"""Memory of one idle engine rank with its worker, router slot and host state (measured: 100,000
one-rank workers take 2.2 GB of RSS; KV blocks are allocated as they are used, and their total is
bounded by the workload's tokens, so the fleet size is what can exhaust memory before a run)."""


def available_memory_bytes() -> int | None:
    """MemAvailable of this machine (Linux), else physical memory; None when unknown."""
    import os

    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


REQUEST_BYTES = 2048
HASH_ID_BYTES = 48
"""Memory of one request of a synthetic workload, and of each of its prompt's hash ids (measured:
~340 B + 42 B per id for the workload; the run's records roughly double it)."""


def ranks_need(knob: str, ranks: int) -> tuple[str, int, str]:
    """What `ranks` engine ranks need (a `check_memory` entry)."""
    return knob, ranks * RANK_BYTES, f"{ranks:,} engine ranks"


def synthetic_need(count_knob: str, input_knob: str, spec: SyntheticSpec) -> tuple[str, int, str]:
    """What a synthetic workload needs before its run starts (a `check_memory` entry), named by
    its request count or, when the prompts' hash ids dominate, by its input length."""
    requests = spec.request_count * spec.turns_per_session
    ids = -(-(spec.input_tokens + 4 * int(spec.input_stddev or 0)) // spec.block_size)
    knob = input_knob if HASH_ID_BYTES * ids > REQUEST_BYTES else count_knob
    return knob, requests * (REQUEST_BYTES + HASH_ID_BYTES * ids), f"{requests:,} requests of ~{ids:,} blocks"


def check_memory(needs: Sequence[tuple[str, int, str]], available: int | None = None) -> None:
    """Refuse before anything is built a run whose fleet or workload cannot fit in memory.

    `needs`: (the flag or field that sets it, bytes, what) per deployment or workload. The
    message names the knob of the largest need.

    Raises:
        ValueError: one line with the estimate, what is available, and the knob.
    """
    available = available_memory_bytes() if available is None else available
    total = sum(n for _, n, _ in needs)
    if available is None or total <= available or not needs:
        return
    knob, need, what = max(needs, key=lambda kv: kv[1])
    gib = 1024 ** 3
    raise ValueError(f"{knob}: the run needs about {total / gib:,.1f} GiB of memory ({what}: {need / gib:,.1f} GiB) "
                     f"but {available / gib:,.1f} GiB is available; lower {knob}")
