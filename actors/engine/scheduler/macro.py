"""Macro-stepping: k all-decode passes of a fixed batch computed at once (DESIGN §5).

A run is planned when every running request decodes one token per pass and
nothing inside the rank can change the batch: the waiting head cannot be
admitted (and cannot become admissible, since a decode run only consumes
blocks), no request finishes before the last pass, and the blocks the run will
allocate (known in advance: request r needs a new block in pass j exactly when
`(c_r + j - 1) % block_size == 0`, where c_r is its computed tokens at the start)
fit in free plus evictable capacity.

Pass j (1-based) has `active_kv = S0 + (j - 1) * n` and ends at
`T_j = T_{j-1} + d_j`, accumulated sequentially (`np.cumsum`) exactly as
pass-by-pass execution adds them, so every timestamp is bit-identical.

The run is materialised lazily (`RankCore._materialize(m)` applies passes up to m: block
allocations and their KV events only at the passes where some request crosses a
block boundary), and a run can be truncated at any pass boundary when a message
reaches the rank. Neither changes the outcome relative to pass-by-pass execution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from actors.engine.request import EngineRequest
from actors.engine.scheduler.state import RankState
from actors.engine.timing.scaled import PassTiming

if TYPE_CHECKING:
    from actors.engine.scheduler.policy import SchedulerPolicy


@dataclass(slots=True)
class DecodeRun:
    """A planned run of `num_passes` decode passes over `reqs` (in running order)."""

    reqs: list[EngineRequest]
    computed0: list[int]
    ends_ms: npt.NDArray[np.float64]
    """ends_ms[0] is the run start; ends_ms[j] the end of pass j."""
    num_passes: int
    done: int = 0
    """Passes already materialised."""

    @property
    def end_ms(self) -> float:
        return float(self.ends_ms[self.num_passes])

    def passes_ended_by(self, t_ms: float, inclusive: bool = True) -> int:
        """Number of passes whose end is <= t_ms (< t_ms when not `inclusive`), capped at the run length."""
        side: Literal["left", "right"] = "right" if inclusive else "left"
        return min(self.num_passes, int(np.searchsorted(self.ends_ms[1:self.num_passes + 1], t_ms, side=side)))

    def passes_started_before(self, t_ms: float) -> int:
        """Number of passes whose start is < t_ms: those a message at t_ms cannot change.

        Pass 1 started when the run was planned, so at least one pass is kept.
        """
        started = int(np.searchsorted(self.ends_ms[:self.num_passes], t_ms, side="left"))
        return max(1, min(self.num_passes, started))


def new_blocks_per_pass(computed0: list[int], block_size: int, num_passes: int) -> npt.NDArray[np.int64]:
    """How many new physical blocks pass j (index j-1) needs across the batch."""
    offsets = (-np.asarray(computed0, dtype=np.int64)) % block_size
    per_offset = np.bincount(offsets, minlength=block_size)
    return np.resize(per_offset, num_passes).astype(np.int64)


def boundary_crossings(
    computed0: list[int], block_size: int, first_pass: int, last_pass: int
) -> list[tuple[int, int]]:
    """(pass j, request index) pairs in [first_pass, last_pass] where a request starts or fills a block.

    Those are the only passes in which allocation can change pool state or emit
    events; sorted by pass, then running order (the pass-by-pass event order).
    """
    out: list[tuple[int, int]] = []
    for idx, c in enumerate(computed0):
        # new block when (c + j - 1) % bs == 0; block full when (c + j) % bs == 0
        for target in ((-(c - 1)) % block_size, (-c) % block_size):
            j = target if target >= 1 else block_size
            j0 = j
            # smallest j >= first_pass with j == j0 (mod bs)
            if j0 < first_pass:
                j0 += ((first_pass - j0 + block_size - 1) // block_size) * block_size
            while j0 <= last_pass:
                out.append((j0, idx))
                j0 += block_size
    out = sorted(set(out))
    return out


def crossing_passes(computed0: list[int], block_size: int, first_pass: int, last_pass: int) -> npt.NDArray[np.int64]:
    """The distinct passes in [first_pass, last_pass] of `boundary_crossings`, ascending.

    These are the only passes of a run that can emit KV events, so a host that publishes
    events pass by pass only needs to look at them.
    """
    if last_pass < first_pass:
        return np.zeros(0, dtype=np.int64)
    c = np.asarray(computed0, dtype=np.int64)
    crossing = np.zeros(block_size, dtype=bool)  # by pass residue mod block_size (cheaper than np.isin)
    crossing[(1 - c) % block_size] = True
    crossing[(-c) % block_size] = True
    passes = np.arange(first_pass, last_pass + 1, dtype=np.int64)
    return passes[crossing[passes % block_size]]


def plan_decode_run(st: RankState, policy: SchedulerPolicy, timing: PassTiming, now: float) -> DecodeRun | None:
    """The decode run the rank can start at `now`, or None when the next pass must run alone.

    Every running request must be decoding (one token per pass), the policy must report
    admission blocked for the whole run, and the run needs at least 2 passes: it ends
    before the first request finishes or reaches `max_model_len`, and before the blocks it
    allocates exceed free plus evictable capacity.
    """
    running = st.running
    n = len(running)
    if n == 0 or n > st.budget:
        return None
    for req in running:
        if not req.in_decode or req.computed != req.prompt_len + req.generated - 1:
            return None
    if not policy.admission_blocked(st, st.budget - n):
        return None
    max_len = st.config.max_model_len
    k = min(r.max_output - r.generated for r in running)
    if max_len is not None:
        k = min(k, min(max_len - r.seq_len for r in running))
    if k < 2:
        return None
    computed0 = [r.computed for r in running]
    # Every block_size passes each request needs one new block, so a run longer than this cannot
    # fit; capping first keeps the arrays below proportional to the KV cache, not to the outputs.
    k = min(k, (st.kv.num_allocatable // n + 1) * st.block_size)
    cum = np.cumsum(new_blocks_per_pass(computed0, st.block_size, k))
    k = min(k, int(np.searchsorted(cum, st.kv.num_allocatable, side="right")))
    if k < 2:
        return None
    s0 = float(sum(r.prompt_len + r.generated for r in running))
    active = s0 + np.arange(k, dtype=np.float64) * n
    steps = np.empty(k + 1)
    steps[0] = now
    steps[1:] = timing.decode_ms(active, n)
    return DecodeRun(list(running), computed0, np.cumsum(steps), k)
