"""Roofline predictions vs the published measurements in ../shared/facts/gpu-virtualization-hardware.md §6.

Usage:
    PYTHONPATH=. python benchmarks/roofline_vs_published.py          # table with the shipped RooflineParams
    PYTHONPATH=. python benchmarks/roofline_vs_published.py --fit    # grid-search the efficiency factors first

Rows and how each prediction is formed:
- "TTFT bs1": one prefill pass of ISL tokens (TensorRT-LLM batch-1 first-token latency, facts §6.2b).
- "static tput": static batching of `bs` requests: one prefill pass of bs x ISL tokens, then OSL-1 decode passes
  with active KV = bs x (ISL + j); output tokens/s = bs x OSL / total time (TensorRT-LLM perf table, §6.2b).
- "TPOT conc4": one decode pass at batch 4 with the ShareGPT mean context (ISL 232.6 + OSL 220.6 / 2) (§6.4).
- "latency bs8": vLLM CI latency test, prefill 8 x 32 then 127 decode passes (§6.5).
Target: every row within 20 %.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from cluster.hardware.catalog import default_catalog
from cluster.hardware.devicemap import auto_device_map
from cluster.hardware.models import Dtype, get_model
from cluster.hardware.roofline import RooflineParams, RooflineTiming, whole_card_vgpu
from cluster.hardware.virtualization import VGpu


@dataclass(frozen=True)
class Row:
    label: str
    source: str
    published: float
    unit: str
    predict: Callable[[RooflineParams], float]


def _timing(model: str, gpu: str, dtype: Dtype, params: RooflineParams, tp: int = 1) -> RooflineTiming:
    arch = get_model(model).with_dtype(dtype)
    vg: VGpu = whole_card_vgpu(gpu)
    dmap = auto_device_map(arch, [vg.memory_bytes], default_catalog().cpu.memory_bytes, 2048, 1, tp)
    return RooflineTiming(arch, vg, dmap, params)


def ttft(model: str, gpu: str, dtype: Dtype, isl: int, tp: int = 1) -> Callable[[RooflineParams], float]:
    return lambda p: _timing(model, gpu, dtype, p, tp).prefill_ms([isl], [0])


def static_tput(model: str, gpu: str, dtype: Dtype, bs: int, isl: int, osl: int) -> Callable[[RooflineParams], float]:
    def f(p: RooflineParams) -> float:
        t = _timing(model, gpu, dtype, p)
        total = t.prefill_ms([isl] * bs, [0] * bs)
        kv = bs * (isl + np.arange(1, osl, dtype=np.float64))
        total += float(t.decode_ms(kv, bs).sum())
        return bs * osl / (total / 1000.0)
    return f


def tpot(model: str, gpu: str, dtype: Dtype, conc: int, ctx: float) -> Callable[[RooflineParams], float]:
    return lambda p: float(_timing(model, gpu, dtype, p).decode_ms(np.array([conc * ctx]), conc)[0])


def latency(model: str, gpu: str, dtype: Dtype, bs: int, isl: int, osl: int) -> Callable[[RooflineParams], float]:
    def f(p: RooflineParams) -> float:
        t = _timing(model, gpu, dtype, p)
        kv = bs * (isl + np.arange(1, osl, dtype=np.float64))
        return t.prefill_ms([isl] * bs, [0] * bs) + float(t.decode_ms(kv, bs).sum())
    return f


TRT = "TRT-LLM perf (v0.5/0.6)"
ROWS = [
    Row("LLaMA-7B FP8 H100 TTFT bs1 ISL128", TRT, 7, "ms", ttft("llama-2-7b", "h100-sxm", "fp8", 128)),
    Row("LLaMA-7B FP8 H100 TTFT bs1 ISL2048", TRT, 36, "ms", ttft("llama-2-7b", "h100-sxm", "fp8", 2048)),
    Row("LLaMA-7B FP16 A100 TTFT bs1 ISL128", TRT, 16, "ms", ttft("llama-2-7b", "a100-80gb", "fp16", 128)),
    Row("LLaMA-7B FP16 A100 TTFT bs1 ISL2048", TRT, 133, "ms", ttft("llama-2-7b", "a100-80gb", "fp16", 2048)),
    Row("LLaMA-7B FP8 L40S TTFT bs1 ISL128", TRT, 14, "ms", ttft("llama-2-7b", "l40s", "fp8", 128)),
    Row("LLaMA-7B FP8 L40S TTFT bs1 ISL2048", TRT, 73, "ms", ttft("llama-2-7b", "l40s", "fp8", 2048)),
    Row("LLaMA-7B FP8 H100 bs768 128/128", TRT, 19694, "tok/s", static_tput("llama-2-7b", "h100-sxm", "fp8", 768, 128, 128)),
    Row("LLaMA-7B FP8 H100 bs112 128/2048", TRT, 6818, "tok/s", static_tput("llama-2-7b", "h100-sxm", "fp8", 112, 128, 2048)),
    Row("LLaMA-7B FP8 H100 bs80 2048/128", TRT, 2244, "tok/s", static_tput("llama-2-7b", "h100-sxm", "fp8", 80, 2048, 128)),
    Row("LLaMA-7B FP8 H100 bs48 2048/2048", TRT, 2740, "tok/s", static_tput("llama-2-7b", "h100-sxm", "fp8", 48, 2048, 2048)),
    Row("LLaMA-7B FP16 A100 bs384 128/128", TRT, 5586, "tok/s", static_tput("llama-2-7b", "a100-80gb", "fp16", 384, 128, 128)),
    Row("LLaMA-7B FP16 A100 bs60 128/2048", TRT, 1928, "tok/s", static_tput("llama-2-7b", "a100-80gb", "fp16", 60, 128, 2048)),
    Row("LLaMA-7B FP16 A100 bs52 2048/128", TRT, 591, "tok/s", static_tput("llama-2-7b", "a100-80gb", "fp16", 52, 2048, 128)),
    Row("LLaMA-7B FP8 L40S bs64 128/128", TRT, 3240, "tok/s", static_tput("llama-2-7b", "l40s", "fp8", 64, 128, 128)),
    Row("Qwen3-8B BF16 H100 vLLM TPOT conc4", "GPUStack lab", 7.38, "ms", tpot("qwen3-8b", "h100-sxm", "bf16", 4, 232.6 + 220.6 / 2)),
    Row("Llama-3.1-8B BF16 H200 vLLM bs8 32/128", "vLLM CI #9515", 833.4, "ms", latency("llama-3.1-8b", "h200", "bf16", 8, 32, 128)),
]
# Llama-3.1-8B BF16 on H100 SXM: the rows the issue asks for. The facts sheet carries no aiconfigurator
# figures, so these are predictions only (no reference).
TARGET_ROWS = [
    ("Llama-3.1-8B BF16 H100 TTFT ISL1024", ttft("llama-3.1-8b", "h100-sxm", "bf16", 1024), "ms"),
    ("Llama-3.1-8B BF16 H100 TTFT ISL4096", ttft("llama-3.1-8b", "h100-sxm", "bf16", 4096), "ms"),
    ("Llama-3.1-8B BF16 H100 ITL bs1 ctx1024", tpot("llama-3.1-8b", "h100-sxm", "bf16", 1, 1024), "ms"),
    ("Llama-3.1-8B BF16 H100 ITL bs32 ctx1024", tpot("llama-3.1-8b", "h100-sxm", "bf16", 32, 1024), "ms"),
    ("Llama-3.1-8B BF16 H100 ITL bs128 ctx1024", tpot("llama-3.1-8b", "h100-sxm", "bf16", 128, 1024), "ms"),
]


def worst_error(params: RooflineParams) -> float:
    return max(abs(math.log(r.predict(params) / r.published)) for r in ROWS)


def fit() -> RooflineParams:
    """Coarse grid search minimising the worst |log(pred / published)| over ROWS."""
    best, best_err = RooflineParams(), float("inf")
    grid = itertools.product([0.55, 0.62, 0.7], [0.3, 0.4, 0.5], [0.65, 0.75, 0.85],
                             [2.0, 3.0, 4.0, 5.0], [0.6, 1.2, 1.8, 2.4], [0.5, 0.6, 0.7])
    for pm, dm, bw, po, do, f8 in grid:
        cand = replace(RooflineParams(), prefill_mfu=pm, decode_mfu=dm, bw_eff=bw, prefill_overhead_ms=po,
                       decode_overhead_ms=do, fp8_compute_eff=f8)
        err = worst_error(cand)
        if err < best_err:
            best, best_err = cand, err
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="grid-search efficiency factors before printing")
    args = ap.parse_args(argv)
    params = fit() if args.fit else RooflineParams()
    print(f"params: {params}")
    print(f"| {'row (unit)':<42} | {'source':<23} | {'published':>10} | {'roofline':>10} | {'ratio':>6} | ok |")
    print(f"|{'-' * 44}|{'-' * 25}|{'-' * 12}|{'-' * 12}|{'-' * 8}|----|")
    bad = 0
    for r in ROWS:
        pred = r.predict(params)
        ratio = pred / r.published
        ok = abs(ratio - 1) <= 0.20
        bad += not ok
        print(f"| {r.label + ' (' + r.unit + ')':<42} | {r.source:<23} | {r.published:>10.1f} | {pred:>10.1f} "
              f"| {ratio:>6.2f} | {'yes' if ok else 'NO':<2} |")
    print("\nLlama-3.1-8B BF16 on H100 SXM (aiconfigurator figures are not in the facts sheet: no reference)")
    for label, f, unit in TARGET_ROWS:
        print(f"| {label:<42} | {f(params):>8.2f} {unit} |")
    print(f"\n{len(ROWS) - bad}/{len(ROWS)} rows within 20 %")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
