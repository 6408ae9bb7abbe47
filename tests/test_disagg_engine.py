"""Disaggregated ranks driven directly: the facts' lone-request timeline (facts §g) and the transfer formula."""

from __future__ import annotations

import pytest

from actors.engine.config import EngineConfig
from actors.engine.hashing import PromptHashers
from actors.engine.rank import build_rank
from actors.engine.records import GapLog
from actors.engine.request import RankRequest
from actors.engine.timing.registry import timing_from_config
from actors.engine.transfer import TransferSpec, kv_bytes_per_token, transfer_ms

P1024 = 32.490712  # P(1024), facts §a
D = {1024: 5.7927, 1025: 5.792771}


def _rank(role: str, **kw: object):  # type: ignore[no-untyped-def]
    cfg = EngineConfig.model_validate({"worker_type": role, **kw})
    return build_rank(cfg, timing_from_config(cfg), GapLog(), PromptHashers(), 0, 0), cfg


def _drive(rank, until: float = 1e9) -> list:  # type: ignore[no-untyped-def]
    """Run a rank to idle, returning every output."""
    outs = [rank.begin(0.0)]
    while rank.busy:
        t = rank.next_due_ms()
        outs.append(rank.advance(t))
        if not rank.busy:
            outs.append(rank.begin(t))
    return outs


def _lone(bandwidth: float | None, bytes_per_token: int | None) -> tuple[float, float, float]:
    """(source held, activated, first token) of one 1024-token prompt with 4 output tokens."""
    prefill, pcfg = _rank("prefill", kv_transfer_bandwidth=bandwidth, kv_bytes_per_token=bytes_per_token)
    decode, _ = _rank("decode")
    req = RankRequest(1, 1024, 4, tuple(range(16)), 64)
    assert prefill.submit(req, 0.0) is None
    outs = _drive(prefill)
    handoffs = [h for o in outs for h in o.handoffs]
    assert len(handoffs) == 1 and not any(o.first_tokens for o in outs)
    held = handoffs[0].t_ms
    assert not prefill.is_idle  # the source is held
    spec = TransferSpec.of(pcfg)
    activated = held + spec.ms(spec.tokens(1024, decode.cached_prompt_tokens(req)))
    prefill.release_source(1, activated)
    assert prefill.is_idle
    decode.submit(RankRequest(1, 1024, 4, tuple(range(16)), 64, transferred=True), activated)
    out = [decode.begin(activated)]
    firsts, finished = [], []
    while decode.busy:
        t = decode.next_due_ms()
        o = decode.advance(t)
        firsts += o.first_tokens
        finished += o.finished
        if not decode.busy:
            decode.begin(t)
    assert not out[0].first_tokens
    rec = finished[0].record
    assert rec.output_length == 4
    assert decode.counters().committed_prefill_tokens == 0
    assert prefill.counters().committed_prefill_tokens == 1024
    return held, activated, firsts[0].t_ms


@pytest.mark.parametrize("bw,bpt,delay", [(64.0, 131072, 2.097152), (1.0, 1_000_000, 1024.0), (None, None, 0.0),
                                          (0.0, 131072, 0.0), (64.0, None, 0.0)])
def test_lone_request_timeline(bw: float | None, bpt: int | None, delay: float) -> None:
    held, activated, first = _lone(bw, bpt)
    assert held == pytest.approx(P1024, abs=1e-6)
    assert activated - held == pytest.approx(delay, abs=1e-9)
    assert first == pytest.approx(P1024 + delay + 5.792699, abs=1e-4)  # TTFT = P(1024) + transfer + D(1024)


def test_transfer_formula() -> None:
    assert transfer_ms(128, 1_000_000, 1.0) == pytest.approx(128.0)
    assert transfer_ms(128, 1_000_000, 0.0) == 0.0
    assert transfer_ms(128, None, 1.0) == 0.0
    assert transfer_ms(128, 1_000_000, None) == 0.0
    assert kv_bytes_per_token(28, 8, 128, 2) == 28 * 2 * 8 * 128 * 2


def test_destination_missing_sends_only_missing_tokens() -> None:
    decode, _ = _rank("decode")
    first = RankRequest(1, 1024, 2, tuple(range(16)), 64, transferred=True)
    decode.submit(first, 0.0)
    _drive(decode)
    # 512 of the next prompt's tokens (8 blocks) are cached on the destination now.
    nxt = RankRequest(2, 1024, 2, tuple(range(8)) + tuple(range(100, 108)), 64)
    cached = decode.cached_prompt_tokens(nxt)
    assert cached == 512
    missing = TransferSpec(1_000_000, 1.0, destination_missing=True)
    full = TransferSpec(1_000_000, 1.0)
    assert missing.tokens(1024, cached) == 512 and missing.ms(512) == pytest.approx(512.0)
    assert full.tokens(1024, cached) == 1024
    # the whole prompt cached: at least one token is recomputed, as at admission
    assert decode.cached_prompt_tokens(RankRequest(3, 1024, 2, tuple(range(16)), 64)) == 960
