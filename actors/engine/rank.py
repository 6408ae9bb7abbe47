"""Building an engine rank: the one way hosts get an `EngineRank`."""

from __future__ import annotations

from actors.engine.config import EngineConfig
from actors.engine.hashing import PromptHashers
from actors.engine.protocol import EngineRank
from actors.engine.records import GapLog
from actors.engine.scheduler.core import RankCore
from actors.engine.timing.models import TimingModel


def build_rank(config: EngineConfig, timing: TimingModel, gaps: GapLog, hashers: PromptHashers, worker_id: int,
               dp_rank: int, *, macro_step: bool = True, emit_events: bool = True,
               publish_ticks: bool = False) -> EngineRank:
    """A rank of `config.backend`'s scheduling policy over a paged KV cache (see `RankCore`).

    `gaps` collects the rank's inter-token gaps; `hashers` is shared by the ranks of a host.
    `emit_events`: stamp KV events (someone publishes or collects them); `publish_ticks`:
    stop decode runs at the passes whose KV events a subscriber must see when they happen.
    """
    return RankCore(config, timing, gaps, hashers, worker_id, dp_rank, macro_step=macro_step,
                    emit_events=emit_events, publish_ticks=publish_ticks)
