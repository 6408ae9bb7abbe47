"""Device mapping in the mistral.rs style (facts §4): which layers live on which device, and the KV blocks
that fit in what is left.

Automatic map (`auto_device_map`):
- per layer: weights `layer_bytes` + plain KV `max_batch_size x max_seq_len x kv_bytes_per_token_layer`;
- activation reserve `mapped_max = max_batch_size x heads x min(max_seq_len, 1024)^2 x dtype_bytes`, on every GPU;
- usable capacity of a GPU: available - max(2% of available, 512 MiB); the CPU: all of its memory;
- the primary device (first GPU) must hold the activation reserve + non-layer weights (embeddings, lm_head,
  final norm), else error; devices are filled in order (everything remaining if it fits, else greedily),
  a device that fits no layer is skipped, the CPU takes what is left; an error when even that does not fit.
Manual map (`parse_device_map("0:10;1:20")`): unique ordinals, layers left over go to the CPU; checked against
the same capacities.

KV blocks (`num_gpu_blocks`): after weights and the activation reserve, each GPU's leftover capacity holds
KV for its own layers; a block of `block_size` tokens needs `layers_on_device x block_size x
kv_bytes_per_token_layer` there. CPU-resident layers keep their KV in host memory. The block count is the
minimum over devices holding layers. With tensor parallelism (`tp_size`) each rank holds 1/tp of every
layer, of the KV heads and of the non-layer weights, so the map is computed per rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from cluster.hardware.models import ModelArch

MIB = 1024 * 1024


class DeviceMapError(ValueError):
    """Nothing fits, or a manual map is malformed."""


@dataclass(frozen=True, slots=True)
class _Sizes:
    layer_bytes: int
    kv_layer_bytes: int  # plain KV estimate per layer for the max batch/sequence
    kv_token_layer_bytes: int
    non_mapped_bytes: int
    act_bytes: int


def _sizes(model: ModelArch, max_seq_len: int, max_batch_size: int, tp_size: int) -> _Sizes:
    kv_tok = model.kv_bytes_per_token_layer // tp_size
    act = max_batch_size * (model.num_attention_heads // tp_size) * min(max_seq_len, 1024) ** 2 * model.dtype_bytes
    return _Sizes(model.layer_bytes // tp_size, max_batch_size * max_seq_len * kv_tok, kv_tok,
                  model.non_mapped_bytes // tp_size, act)


def gpu_capacity(available_bytes: int) -> int:
    """Usable bytes of a GPU: available - max(2% of available, 512 MiB), never below 0."""
    return max(0, available_bytes - min(available_bytes, max(available_bytes // 50, 512 * MIB)))


@dataclass(frozen=True, slots=True)
class DeviceMap:
    """Layers per GPU ordinal (in order) and on the host. Invariant: sum(gpu_layers) + host_layers == layers.

    `gpu_caps` are the usable capacities the map was computed against; `base_bytes` what each GPU holds
    besides layers (activations, plus non-layer weights on the primary).
    """

    num_layers: int
    gpu_layers: tuple[tuple[int, int], ...]
    host_layers: int
    gpu_caps: tuple[int, ...]
    base_bytes: tuple[int, ...]
    tp_size: int = 1

    @property
    def layers_on_gpu(self) -> int:
        return sum(n for _, n in self.gpu_layers)

    @property
    def gpu_fraction(self) -> float:
        return self.layers_on_gpu / self.num_layers

    def to_cli_spec(self) -> str:
        return ";".join(f"{o}:{n}" for o, n in self.gpu_layers)


def auto_device_map(model: ModelArch, gpu_available_bytes: Sequence[int], cpu_available_bytes: int,
                    max_seq_len: int = 4096, max_batch_size: int = 1, tp_size: int = 1) -> DeviceMap:
    """mistral.rs automatic mapping (module docstring). Raises DeviceMapError when nothing fits."""
    if not gpu_available_bytes:
        raise DeviceMapError("no GPU to map onto")
    s = _sizes(model, max_seq_len, max_batch_size, tp_size)
    caps = [gpu_capacity(a) for a in gpu_available_bytes]
    primary_base = s.act_bytes + s.non_mapped_bytes
    if primary_base > caps[0]:
        raise DeviceMapError(
            f"primary device cannot hold non-layer weights and activations: needs {primary_base / MIB:.0f} MiB, "
            f"usable {caps[0] / MIB:.0f} MiB")
    per_layer = s.layer_bytes + s.kv_layer_bytes
    remaining = model.num_layers
    placed: list[tuple[int, int]] = []
    bases: list[int] = []
    for ordinal, cap in enumerate(caps):
        base = primary_base if ordinal == 0 else s.act_bytes
        bases.append(base)
        if remaining == 0:
            continue
        if base + remaining * per_layer <= cap:
            n = remaining
        else:
            n = max(0, (cap - base) // per_layer) if cap >= base else 0
        if n > 0:
            placed.append((ordinal, n))
            remaining -= n
    if remaining * per_layer > cpu_available_bytes:
        over = remaining * per_layer - cpu_available_bytes
        raise DeviceMapError(f"model {model.name} does not fit: exceeds total capacity by {over / 1e6:.0f} MB")
    return DeviceMap(model.num_layers, tuple(placed), remaining, tuple(caps), tuple(bases), tp_size)


def parse_device_map(spec: str, model: ModelArch, gpu_available_bytes: Sequence[int], cpu_available_bytes: int,
                     max_seq_len: int = 4096, max_batch_size: int = 1, tp_size: int = 1) -> DeviceMap:
    """A manual map "ORD:NUM;ORD:NUM" (or a bare "N" = N layers on device 0), checked against capacities."""
    entries: list[tuple[int, int]] = []
    text = spec.strip()
    if not text:
        raise DeviceMapError("empty device map")
    if text.isdigit():
        text = f"0:{text}"
    for part in text.split(";"):
        if ":" not in part:
            raise DeviceMapError(f"device map entry {part!r} lacks ':' (expected ORD:NUM)")
        o, _, n = part.partition(":")
        try:
            ordinal, num = int(o), int(n)
        except ValueError as exc:
            raise DeviceMapError(f"device map entry {part!r}: ordinal and layer count must be integers") from exc
        if ordinal < 0 or num < 0:
            raise DeviceMapError(f"device map entry {part!r}: negative value")
        if any(ordinal == e[0] for e in entries):
            raise DeviceMapError(f"device map: ordinal {ordinal} appears twice")
        if ordinal >= len(gpu_available_bytes):
            raise DeviceMapError(f"device map: ordinal {ordinal} but only {len(gpu_available_bytes)} GPU(s)")
        entries.append((ordinal, num))
    total = sum(n for _, n in entries)
    if total > model.num_layers:
        raise DeviceMapError(f"device map puts {total} layers but {model.name} has {model.num_layers}")
    s = _sizes(model, max_seq_len, max_batch_size, tp_size)
    caps = [gpu_capacity(a) for a in gpu_available_bytes]
    bases = [s.act_bytes + (s.non_mapped_bytes if i == 0 else 0) for i in range(len(caps))]
    for ordinal, num in entries:
        need = bases[ordinal] + num * (s.layer_bytes + s.kv_layer_bytes)
        if need > caps[ordinal]:
            raise DeviceMapError(f"device map: {num} layers need {need / MIB:.0f} MiB on device {ordinal}, "
                                 f"usable {caps[ordinal] / MIB:.0f} MiB")
    host = model.num_layers - total
    if host * (s.layer_bytes + s.kv_layer_bytes) > cpu_available_bytes:
        raise DeviceMapError(f"device map leaves {host} layers for the CPU, more than its memory")
    placed = tuple(sorted((o, n) for o, n in entries if n > 0))
    return DeviceMap(model.num_layers, placed, host, tuple(caps), tuple(bases), tp_size)


def num_gpu_blocks(dmap: DeviceMap, model: ModelArch, block_size: int, cpu_available_bytes: int = 0) -> int:
    """KV blocks that fit in the leftover memory of every device holding layers (module docstring)."""
    if block_size <= 0:
        raise DeviceMapError("block_size must be positive")
    kv_tok = model.kv_bytes_per_token_layer // dmap.tp_size
    layer_bytes = model.layer_bytes // dmap.tp_size
    counts: list[int] = []
    for ordinal, n in dmap.gpu_layers:
        left = dmap.gpu_caps[ordinal] - dmap.base_bytes[ordinal] - n * layer_bytes
        counts.append(max(0, left) // (n * block_size * kv_tok))
    if dmap.host_layers:
        left = cpu_available_bytes - dmap.host_layers * layer_bytes
        counts.append(max(0, left) // (dmap.host_layers * block_size * kv_tok))
    return min(counts) if counts else 0
