"""KV transfer between a prefill worker and a decode worker: size and time (facts §g).

A prefill worker hands a finished prompt's KV over to a decode worker. With only the engine
keys set, the time is the reference's: a flat bandwidth per transfer, no contention,

    ms = tokens * kv_bytes_per_token / (kv_transfer_bandwidth [GB/s, decimal] * 1e9) * 1000

where `tokens` is the whole prompt (`full_prompt`) or only the tokens the destination does not
already hold in its prefix cache (`destination_missing`). No transfer time when the bytes per token
or the bandwidth is unset, or the bandwidth is 0. `cluster.control.kv_links` times transfers over
modelled links instead when a scenario asks for `topology: true`.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.engine.config import EngineConfig

GB = 1e9
"""Decimal gigabyte: the reference's GB/s."""


@dataclass(frozen=True, slots=True)
class TransferSpec:
    """How a prefill worker's KV reaches a decode worker (the prefill engine's keys, as in the reference)."""

    bytes_per_token: int | None
    bandwidth_gbps: float | None
    destination_missing: bool = False

    @classmethod
    def of(cls, config: EngineConfig) -> "TransferSpec":
        return cls(config.kv_bytes_per_token, config.kv_transfer_bandwidth,
                   config.kv_transfer_timing_mode == "destination_missing")

    def tokens(self, prompt_len: int, cached_on_destination: int) -> int:
        """Tokens that cross: the whole prompt, or those the destination lacks."""
        if self.destination_missing:
            return max(0, prompt_len - cached_on_destination)
        return prompt_len

    def nbytes(self, tokens: int) -> int:
        return tokens * (self.bytes_per_token or 0)

    def ms(self, tokens: int) -> float:
        """The flat-bandwidth transfer time of `tokens` (0 when bytes or bandwidth is unset or 0)."""
        return transfer_ms(tokens, self.bytes_per_token, self.bandwidth_gbps)


def transfer_ms(tokens: int, bytes_per_token: int | None, bandwidth_gbps: float | None) -> float:
    """`tokens * bytes_per_token / (bandwidth_gbps * 1e9)` seconds, in ms; 0 when either is unset or <= 0."""
    if bytes_per_token is None or bandwidth_gbps is None or bandwidth_gbps <= 0 or tokens <= 0:
        return 0.0
    return tokens * bytes_per_token / (bandwidth_gbps * GB) * 1000.0


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """The KV bytes one token occupies: layers x 2 (K and V) x kv heads x head dim x dtype bytes."""
    return num_layers * 2 * num_kv_heads * head_dim * dtype_bytes
