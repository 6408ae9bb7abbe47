"""Worker selection by router mode, a registry: which live slot a request goes to.

`SELECTORS[mode](context)` builds the selector of a `RouterMode`. A selector sees the request
and arrays aligned with the router's live slots (sorted by (worker_id, dp_rank)) and returns
the index of the chosen slot and its cost (NaN for modes without a cost). Every random draw
comes from the router's one seeded generator, over that fixed order.

- `kv`: the reference cost (`router.policies.kv_costs`: prefill load minus overlap credit plus
  decode blocks), picked at the configured temperature;
- `round_robin`: the next live slot in order;
- `random`: uniform;
- `least_loaded`: fewest active requests, then fewest active prefill tokens, ties at random.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from router.config import KvRouterConfig, RouterMode
from router.load import LoadTracker
from router.policies import CostWeights, IntArray, kv_costs, pick, pick_min


@dataclass(frozen=True, slots=True)
class Candidates:
    """One request and the live slots it may go to."""

    live: IntArray
    """Slot ids of the live (routable) slots."""
    overlap: IntArray
    """Matched leading blocks of the request per live slot."""
    block_hashes: Sequence[int]
    isl_tokens: int


@dataclass(frozen=True, slots=True)
class SelectorContext:
    """What a selector may use: the router's settings, load tracker and generator."""

    config: KvRouterConfig
    block_size: int
    load: LoadTracker
    rng: np.random.Generator


class Selector(Protocol):
    reads_kv_state: ClassVar[bool]
    """Whether the mode reads the prefix index and active blocks (so KV events, per-block load
    and routing history are worth keeping)."""

    def __init__(self, ctx: SelectorContext) -> None: ...

    def choose(self, c: Candidates) -> tuple[int, float]:
        """(index into `c.live`, cost)."""
        ...


class KvSelector:
    reads_kv_state: ClassVar[bool] = True

    def __init__(self, ctx: SelectorContext) -> None:
        cfg = ctx.config
        self._ctx = ctx
        self._weights = CostWeights(cfg.overlap_score_credit, cfg.overlap_score_credit_decay, cfg.prefill_load_scale,
                                    cfg.decode_active_request_weight, cfg.router_track_prefill_tokens,
                                    cfg.router_track_active_blocks)

    def choose(self, c: Candidates) -> tuple[int, float]:
        ctx = self._ctx
        load = ctx.load
        sh_all = np.zeros(len(load.prefill_tokens), dtype=np.int64)
        s2, d2 = load.shared_depths(c.block_hashes)
        sh_all[s2] = d2
        costs = kv_costs(self._weights, ctx.block_size, c.isl_tokens, c.overlap, load.prefill_tokens[c.live],
                         load.decode_blocks(c.live, ctx.config.load_metrics_weight), sh_all[c.live],
                         load.active_requests[c.live])
        i = pick(costs, ctx.config.router_temperature, ctx.rng)
        return i, float(costs[i])


class RoundRobinSelector:
    reads_kv_state: ClassVar[bool] = False

    def __init__(self, ctx: SelectorContext) -> None:
        self._next = 0

    def choose(self, c: Candidates) -> tuple[int, float]:
        i = self._next % len(c.live)
        self._next = i + 1
        return i, math.nan


class RandomSelector:
    reads_kv_state: ClassVar[bool] = False

    def __init__(self, ctx: SelectorContext) -> None:
        self._rng = ctx.rng

    def choose(self, c: Candidates) -> tuple[int, float]:
        return int(self._rng.integers(len(c.live))), math.nan


class LeastLoadedSelector:
    reads_kv_state: ClassVar[bool] = False

    def __init__(self, ctx: SelectorContext) -> None:
        self._ctx = ctx

    def choose(self, c: Candidates) -> tuple[int, float]:
        load = self._ctx.load
        key = load.active_requests[c.live].astype(np.float64) * 1e12 + load.prefill_tokens[c.live]
        return pick_min(key, self._ctx.rng), math.nan


SELECTORS: dict[RouterMode, type[Selector]] = {
    "kv": KvSelector,
    "round_robin": RoundRobinSelector,
    "random": RandomSelector,
    "least_loaded": LeastLoadedSelector,
}
"""Router mode -> selector class."""
