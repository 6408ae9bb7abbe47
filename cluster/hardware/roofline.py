"""Roofline timing: forward-pass milliseconds from model architecture, device map, vGPU share and contention.

Implements the engine's `TimingModel` protocol (actors/engine/timing.py): results are before speedup
scaling and decode is floored at `RooflineParams.decode_floor_ms`.

Per pass, for the layers on the GPU (fraction g of all layers) and the non-layer weights on the primary:
- prefill: FLOP = 2 x active params x new tokens + attention 4 x layers x heads x head_dim x
  sum_i new_i x (prefix_i + (new_i + 1) / 2) + lm_head for one token per sequence; bytes = weights + cached
  prefix KV read. time = max(FLOP / (peak x sm_fraction x prefill_mfu), bytes / (BW x bw_fraction x bw_eff)).
- decode (batch B, active KV tokens K): bytes = weights (MoE: expected distinct experts touched) + K x
  kv_bytes_per_token; FLOP = 2 x active params x B + 4 x layers x heads x head_dim x K; the same max() with
  `decode_mfu`, + `decode_overhead_ms`.
- CPU-resident layers run at CPU speed (f32: twice the bytes), added serially.
- tensor parallelism: work / tp plus two ring all-reduces of the activations per layer over the card link.
- contention: GPU time is divided by `ContentionModel.throughput_fraction(busy co-tenant limits)`.

Contention hook for the runtime: call `set_busy_cotenants(limits)` (core limits of the OTHER time-sliced
vGPUs on the same physical card that are busy now; `Node.cotenants(vgpu_id)` lists candidates) whenever
that set changes; a pass uses the value current when it is computed. `set_busy_cotenant_count(n)` assumes
co-tenants with this vGPU's own limit. MIG and whole-card vGPUs ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from actors.engine.timing.models import FloatArray
from cluster.hardware.catalog import CpuSpec, default_catalog
from cluster.hardware.devicemap import DeviceMap, auto_device_map, num_gpu_blocks
from cluster.hardware.models import ModelArch, get_model
from cluster.hardware.virtualization import ContentionModel, VGpu

ALLREDUCE_LATENCY_MS = 0.008


@dataclass(frozen=True, slots=True)
class RooflineParams:
    """Efficiency factors, calibrated by `benchmarks/roofline_vs_published.py` against published figures."""

    prefill_mfu: float = 0.70
    decode_mfu: float = 0.30
    bw_eff: float = 0.75
    prefill_overhead_ms: float = 5.0
    decode_overhead_ms: float = 1.8
    decode_floor_ms: float = 1.0
    fp8_compute_eff: float = 0.7  # FP8 tensor-core efficiency relative to BF16 (FP8 GEMMs reach less of peak)
    switch_overhead: float = 0.03


@dataclass
class RooflineTiming:
    """`TimingModel` for one engine worker (one DP rank) on `vgpu` (x `tp_size` identical vGPUs)."""

    model: ModelArch
    vgpu: VGpu
    device_map: DeviceMap
    params: RooflineParams = RooflineParams()
    cpu: CpuSpec | None = None
    _contention: ContentionModel = field(init=False)
    _busy_limits: tuple[float, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self._contention = self.vgpu.contention(self.params.switch_overhead)
        if self.cpu is None:
            self.cpu = default_catalog().cpu
        m, tp = self.model, self.device_map.tp_size
        self._g = self.device_map.gpu_fraction
        self._host = self.device_map.host_layers
        gpu = self.vgpu.gpu
        fp8 = self.params.fp8_compute_eff if m.dtype == "fp8" and gpu.fp8_tflops > 0 else 1.0
        self._flops_ms = gpu.flops_per_ms(m.dtype) * fp8 * self.vgpu.sm_fraction * tp
        self._bw_ms = gpu.bandwidth_bytes_per_ms * self.vgpu.bandwidth_fraction * self.params.bw_eff * tp
        self._attn_flop = 4.0 * m.num_layers * m.num_attention_heads * m.head_dim  # per (query, key) pair
        self._lin_flop_tok = 2.0 * m.num_layers * m.active_layer_params  # per token
        self._head_flop = 2.0 * m.hidden_size * m.vocab_size
        self._head_bytes = float(m.non_mapped_bytes) / (1 if m.tie_word_embeddings else 2)
        self._kv_tok = float(m.kv_bytes_per_token)
        self._link_ms = gpu.interconnect.gbps * 1e6  # bytes per ms
        assert self.cpu is not None
        self._cpu_flops_ms = self.cpu.f32_tflops * 1e9
        self._cpu_bw_ms = self.cpu.bandwidth_tbps * 1e9

    # -------------------------------------------------------------- contention hook
    def set_busy_cotenants(self, limits: Sequence[float]) -> None:
        """Core limits of the other busy time-sliced vGPUs on this card (empty = alone)."""
        self._busy_limits = tuple(limits)

    def set_busy_cotenant_count(self, n: int) -> None:
        self._busy_limits = (self.vgpu.core_limit,) * n

    @property
    def slowdown(self) -> float:
        """Current GPU-time multiplier from contention (1.0 alone for work-conserving shares)."""
        return 1.0 / self._contention.throughput_fraction(self._busy_limits)

    # -------------------------------------------------------------- helpers
    def _weight_bytes(self, batch: float) -> float:
        """Layer weights read by one pass of `batch` tokens (MoE: expected distinct experts)."""
        m = self.model
        if m.num_experts == 1:
            return float(m.layer_bytes * m.num_layers)
        e, k = m.num_experts, m.experts_per_token
        touched = e * (1.0 - (1.0 - k / e) ** max(batch, 1.0))
        dense = m.active_layer_params - m.experts_per_token * 3 * m.hidden_size * m.intermediate_size
        per_layer = (dense + touched * 3 * m.hidden_size * m.intermediate_size) * m.dtype_bytes
        return float(per_layer * m.num_layers)

    def _tp_comm_ms(self, tokens: float) -> float:
        tp = self.device_map.tp_size
        if tp == 1:
            return 0.0
        msg = tokens * self.model.hidden_size * self.model.dtype_bytes
        per = 2.0 * (tp - 1) / tp * msg / self._link_ms + ALLREDUCE_LATENCY_MS
        return 2.0 * self.model.num_layers * self._g * per

    def _cpu_ms(self, flop: float, weight_bytes: float, kv_bytes: float) -> float:
        if self._host == 0:
            return 0.0
        h = self._host / self.model.num_layers
        return max(h * flop / self._cpu_flops_ms, h * (2.0 * weight_bytes + kv_bytes) / self._cpu_bw_ms)

    # -------------------------------------------------------------- TimingModel
    def prefill_ms(self, isl: Sequence[int], prefix: Sequence[int]) -> float:
        new = [max(0, a - b) for a, b in zip(isl, prefix)]
        tokens = float(sum(new))
        if tokens <= 0:
            return 0.0
        pairs = sum(n * (p + (n + 1) / 2.0) for n, p in zip(new, prefix))
        seqs = sum(1 for n in new if n > 0)
        layer_flop = self._lin_flop_tok * tokens + self._attn_flop * pairs
        kv_read = self._kv_tok * float(sum(prefix))
        weights = self._weight_bytes(tokens)
        g = self._g
        p = self.params
        compute = (g * layer_flop + self._head_flop * seqs) / (self._flops_ms * p.prefill_mfu)
        memory = (g * (weights + kv_read) + self._head_bytes) / self._bw_ms
        gpu = max(compute, memory) + self._tp_comm_ms(tokens)
        return gpu * self.slowdown + self._cpu_ms(layer_flop, weights, kv_read) + p.prefill_overhead_ms

    def decode_ms(self, active_kv_tokens: FloatArray, batch_size: int) -> FloatArray:
        b = float(max(1, batch_size))
        k = np.asarray(active_kv_tokens, dtype=np.float64)
        g, p = self._g, self.params
        weights = self._weight_bytes(b)
        memory = (g * (weights + self._kv_tok * k) + self._head_bytes) / self._bw_ms
        compute = (g * (self._lin_flop_tok * b + self._attn_flop * k) + self._head_flop * b) / (
            self._flops_ms * p.decode_mfu)
        gpu = np.maximum(memory, compute) + self._tp_comm_ms(b)
        total = gpu * self.slowdown + p.decode_overhead_ms
        if self._host:
            hf = self._host / self.model.num_layers
            cpu = np.maximum(hf * (self._lin_flop_tok * b + self._attn_flop * k) / self._cpu_flops_ms,
                             hf * (2.0 * weights + self._kv_tok * k) / self._cpu_bw_ms)
            total = total + cpu
        return np.maximum(p.decode_floor_ms, total)


def timing_and_blocks_for(model_name: str | ModelArch, vgpu: VGpu, block_size: int, max_seq_len: int = 4096,
                          max_batch_size: int = 1, tp_size: int = 1, params: RooflineParams | None = None,
                          device_map: str | None = None) -> tuple[RooflineTiming, int]:
    """Timing model and `num_gpu_blocks` for an engine worker on `vgpu` (one of `tp_size` identical vGPUs).

    The device map is automatic (mistral.rs rules) unless `device_map` gives a manual "ORD:NUM;..." spec
    for ordinal 0. Raises DeviceMapError when the model cannot be placed.
    """
    from cluster.hardware.devicemap import parse_device_map

    model = get_model(model_name) if isinstance(model_name, str) else model_name
    cpu = default_catalog().cpu
    if device_map is None:
        dmap = auto_device_map(model, [vgpu.memory_bytes], cpu.memory_bytes, max_seq_len, max_batch_size, tp_size)
    else:
        dmap = parse_device_map(device_map, model, [vgpu.memory_bytes], cpu.memory_bytes, max_seq_len,
                                max_batch_size, tp_size)
    timing = RooflineTiming(model, vgpu, dmap, params or RooflineParams(), cpu)
    return timing, num_gpu_blocks(dmap, model, block_size, cpu.memory_bytes)


def whole_card_vgpu(gpu_key: str, node: str = "bench") -> VGpu:
    """A whole, exclusive card of catalog model `gpu_key` (roofline timing on abstract GPUs, benchmarks)."""
    spec = default_catalog().get(gpu_key)
    return VGpu(f"{node}/0", node, 0, spec, spec.memory_bytes, 1.0, 1.0, "exclusive")

