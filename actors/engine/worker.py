"""An engine worker: `dp_size` independent ranks sharing one config and one timing model kind.

Host protocol for each rank (what `cluster.simulation` implements with the event loop):
- `submit(req)` queues a request (or returns a rejection reason); before it, call
  `interrupt(now)` so a decode run in flight is cut after the pass in progress,
  and re-arm the finish event if it returns a new end time;
- when the rank is idle and has work, call `start(now)` at START priority; it
  returns the end time of the pass or run, or None;
- at that time call `finish(now)` at FINISH priority; it returns the requests
  that got their first token and those that completed; then `start(now)` again;
- `take_rejected()` after `start` reports requests refused at admission;
- `flush(now)` then `take_events()` publishes KV events up to `now` without
  disturbing a run.
"""

from __future__ import annotations

from actors.engine.config import EngineConfig
from actors.engine.records import GapLog
from actors.engine.timing import FixedTiming, InterpolatedTiming, PolynomialTiming, TimingModel
from actors.engine.vllm import VllmRank


def timing_from_config(config: EngineConfig) -> TimingModel:
    """The timing model an engine config asks for (the hardware issue adds roofline models)."""
    table = config.timing_table_path()
    if table is not None:
        return InterpolatedTiming.from_npz(table)
    tm = config.timing_model
    if tm.type == "fixed":
        return FixedTiming(tm.prefill_ms, tm.decode_ms)
    return PolynomialTiming(config.capacity_tokens)


class EngineWorker:
    """A mocker engine worker with DP ranks; rank r is `ranks[r]`."""

    def __init__(
        self,
        worker_id: int,
        config: EngineConfig,
        gaps: GapLog,
        timing: TimingModel | None = None,
        macro_step: bool = True,
        emit_events: bool = True,
    ) -> None:
        self.worker_id = worker_id
        self.config = config
        model = timing if timing is not None else timing_from_config(config)
        self.ranks = [
            VllmRank(config, model, gaps, worker_id=worker_id, dp_rank=r, macro_step=macro_step,
                     emit_events=emit_events)
            for r in range(config.dp_size)
        ]

    @property
    def num_passes(self) -> int:
        return sum(r.num_passes for r in self.ranks)

    @property
    def preemptions_total(self) -> int:
        return sum(r.preemptions_total for r in self.ranks)

    @property
    def committed_prefill_tokens(self) -> int:
        return sum(r.committed_prefill_tokens for r in self.ranks)
