"""The reference mocker's default polynomial timing (facts section a), in milliseconds."""

from __future__ import annotations


def prefill_ms(isl: list[int], prefix: list[int]) -> float:
    """One pass's prefill time: B chunks batched with integer means of isl and prefix."""
    b = len(isl)
    if b == 0:
        return 0.0
    tokens = b * (sum(isl) // b - sum(prefix) // b)
    if tokens <= 0:
        return 0.0
    t = float(tokens)
    return max(0.0, 4.209989e-07 * t * t + 1.518344e-02 * t + 16.50142)


def decode_ms(active_kv_tokens: int, capacity_tokens: int) -> float:
    """One pass's decode time from the KV fill of the decoding requests (floored at 1 ms)."""
    p = 1.0 if capacity_tokens <= 0 else min(1.0, active_kv_tokens / capacity_tokens)
    return max(1.0, -25.74 * p * p + 54.01 * p + 5.74)
