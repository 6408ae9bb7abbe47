"""A rank driven directly, as a host drives it, keeps `RankCore.check_invariants` after every call.

Small pools force preemption, rejection and prefix reuse; integer arrival times land requests
exactly on pass ends; macro-stepped and pass-by-pass ranks both run. At the end every request
has ended exactly once and the rank is idle.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.config import EngineConfig
from actors.engine.hashing import PromptHashers
from actors.engine.protocol import RankOutput
from actors.engine.records import GapLog
from actors.engine.request import RankRequest
from actors.engine.scheduler.core import RankCore
from actors.engine.timing.models import FixedTiming

request_specs = st.lists(
    st.tuples(st.integers(0, 60), st.integers(1, 200), st.integers(1, 12), st.integers(0, 3)),
    min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(specs=request_specs, blocks=st.integers(4, 24), macro=st.booleans(), chunked=st.booleans(),
       caching=st.booleans())
def test_a_rank_keeps_its_invariants_and_ends_every_request_once(
        specs: list[tuple[int, int, int, int]], blocks: int, macro: bool, chunked: bool, caching: bool) -> None:
    config = EngineConfig(block_size=16, num_gpu_blocks=blocks, max_num_seqs=4, max_num_batched_tokens=64,
                          enable_chunked_prefill=chunked, enable_prefix_caching=caching)
    rank = RankCore(config, FixedTiming(prefill_ms=3.0, decode_ms=2.0), GapLog(), PromptHashers(),
                    macro_step=macro)
    arrivals = sorted((t, rid, isl, osl, group) for rid, (t, isl, osl, group) in enumerate(specs))
    ended: list[int] = []

    def took(out: RankOutput) -> None:
        ended.extend(f.request_id for f in out.finished)
        rank.check_invariants()

    i = 0
    while i < len(arrivals) or not rank.is_idle:
        due = rank.next_due_ms()
        t_next = arrivals[i][0] if i < len(arrivals) else None
        if due is not None and (t_next is None or due <= t_next):  # FINISH runs before DELIVER at one instant
            took(rank.advance(due))
            now = due
        else:
            assert t_next is not None, "an idle-less rank with nothing due"
            now = float(t_next)
            while i < len(arrivals) and arrivals[i][0] == t_next:
                _, rid, isl, osl, group = arrivals[i]
                hash_ids = tuple(1000 * group + k for k in range(-(-isl // 16)))  # groups share prefixes
                refused = rank.submit(RankRequest(rid, isl, osl, hash_ids, 16), now)
                if refused is not None:
                    ended.append(refused.request_id)
                rank.check_invariants()
                i += 1
        if not rank.busy:
            took(rank.begin(now))
    assert sorted(ended) == list(range(len(specs)))
