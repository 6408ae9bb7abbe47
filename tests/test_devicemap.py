"""mistral.rs-style device mapping and the KV blocks it leaves."""

from __future__ import annotations

import pytest

from cluster.hardware.devicemap import DeviceMapError, auto_device_map, gpu_capacity, num_gpu_blocks, parse_device_map
from cluster.hardware.models import get_model

GiB, MiB = 1024**3, 1024**2
CPU = 512 * GiB


def test_model_sizes_match_facts() -> None:
    m8 = get_model("llama-3.1-8b")
    assert m8.layer_params == 218_112_000 and m8.kv_bytes_per_token == 131_072
    assert get_model("llama-3.1-70b").kv_bytes_per_token == 327_680
    assert get_model("qwen3-0.6b").kv_bytes_per_token == 114_688
    assert get_model("qwen3-8b").kv_bytes_per_token == 147_456
    assert get_model("mixtral-8x7b").total_params == pytest.approx(46.7e9, rel=0.01)


def test_llama8b_on_80gb_all_on_gpu_with_block_count() -> None:
    m = get_model("llama-3.1-8b")
    dmap = auto_device_map(m, [80 * GiB], CPU, max_seq_len=4096, max_batch_size=1)
    assert dmap.gpu_layers == ((0, 32),) and dmap.host_layers == 0 and dmap.to_cli_spec() == "0:32"
    cap = 80 * GiB - max(80 * GiB // 50, 512 * MiB)
    act = 1 * 32 * 1024**2 * 2  # 64 MiB
    left = cap - act - m.non_mapped_bytes - 32 * m.layer_bytes
    expected = left // (32 * 16 * m.kv_bytes_per_token_layer)
    assert num_gpu_blocks(dmap, m, 16) == expected
    assert 30_000 < expected < 35_000  # ~64 GB of KV at 128 KiB/token


def test_llama70b_bf16_spills_to_cpu() -> None:
    m = get_model("llama-3.1-70b")
    dmap = auto_device_map(m, [80 * GiB], CPU, max_seq_len=4096, max_batch_size=1)
    per_layer = m.layer_bytes + 4096 * m.kv_bytes_per_token_layer
    base = 64 * 1024**2 * 2 + m.non_mapped_bytes
    n_gpu = (gpu_capacity(80 * GiB) - base) // per_layer
    assert dmap.gpu_layers == ((0, n_gpu),) and dmap.host_layers == 80 - n_gpu and 0 < n_gpu < 80
    blocks = num_gpu_blocks(dmap, m, 16, CPU)
    left = gpu_capacity(80 * GiB) - base - n_gpu * m.layer_bytes
    assert blocks == left // (n_gpu * 16 * m.kv_bytes_per_token_layer)
    # two cards hold it all
    two = auto_device_map(m, [80 * GiB, 80 * GiB], CPU)
    assert two.host_layers == 0 and sum(n for _, n in two.gpu_layers) == 80 and len(two.gpu_layers) == 2


def test_nothing_fits_errors() -> None:
    m = get_model("llama-3.1-70b")
    with pytest.raises(DeviceMapError, match="exceeds total capacity"):
        auto_device_map(m, [80 * GiB], 16 * GiB)
    with pytest.raises(DeviceMapError, match="primary device"):
        auto_device_map(m, [2 * GiB], CPU)


def test_manual_maps() -> None:
    m = get_model("llama-3.1-8b")
    d = parse_device_map("0:10;1:20", m, [80 * GiB, 80 * GiB], CPU)
    assert d.gpu_layers == ((0, 10), (1, 20)) and d.host_layers == 2
    assert parse_device_map("12", m, [80 * GiB], CPU).gpu_layers == ((0, 12),)
    for bad, msg in [("0:10;0:5", "twice"), ("0-10", "lacks ':'"), ("0:40", "has 32"), ("2:1", "only 1 GPU"),
                     ("0:x", "integers")]:
        with pytest.raises(DeviceMapError, match=msg):
            parse_device_map(bad, m, [80 * GiB], CPU)
    with pytest.raises(DeviceMapError, match="need"):
        parse_device_map("0:32", m, [10 * GiB], CPU)


def test_tensor_parallel_halves_per_rank_weights() -> None:
    m = get_model("llama-3.1-70b")
    dmap = auto_device_map(m, [80 * GiB], CPU, tp_size=2)
    assert dmap.host_layers == 0
    assert num_gpu_blocks(dmap, m, 16) > 0
