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
