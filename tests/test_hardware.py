"""GPU catalog, MIG tables, sizes, mock accelerator files and their slots."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cluster.hardware.accelerator import (
    AcceleratorFile,
    PluginConfig,
    device_id,
    device_share,
    format_slot,
    load_accelerator,
    resource_slots,
    share_to_spec,
)
from cluster.hardware.catalog import default_catalog
from cluster.hardware.mig import max_instances
from cluster.hardware.sizes import NumberFormat, format_amount, format_binary_size, parse_binary_size

ACC = Path(__file__).resolve().parent.parent / "configs" / "accelerator"
GiB, MiB = 1024**3, 1024**2

# Transcribed from the facts sheet §1.4: profile -> (SMs, memory as reported, instances, DEC, JPEG, OFA, CE).
A100_40 = {
    "1g.5gb": (14, 4864, 7, 0, 0, 0, 1), "1g.5gb+me": (14, 4864, 1, 1, 1, 1, 1), "1g.10gb": (14, 9856, 4, 1, 0, 0, 1),
    "2g.10gb": (28, 9856, 3, 1, 0, 0, 2), "3g.20gb": (42, 19968, 2, 2, 0, 0, 3), "4g.20gb": (56, 19968, 1, 2, 0, 0, 4),
    "7g.40gb": (98, 40192, 1, 5, 1, 1, 7),
}
H100_80 = {  # memory in GiB as nvidia-smi prints it
    "1g.10gb": (16, 9.75, 7, 1, 1, 0, 1), "1g.10gb+me": (16, 9.75, 1, 1, 1, 1, 1), "1g.20gb": (26, 19.62, 4, 1, 1, 0, 1),
    "2g.20gb": (32, 19.62, 3, 2, 2, 0, 2), "3g.40gb": (60, 39.50, 2, 3, 3, 0, 3), "4g.40gb": (64, 39.50, 1, 4, 4, 0, 4),
    "7g.80gb": (132, 79.25, 1, 7, 7, 1, 8),
}
H100_IDS = {"1g.10gb": 19, "1g.10gb+me": 20, "1g.20gb": 15, "2g.20gb": 14, "3g.40gb": 9, "4g.40gb": 5, "7g.80gb": 0}


def test_a100_40gb_mig_table_matches_facts() -> None:
    table = default_catalog().mig["a100-40gb"]
    assert table.names() == list(A100_40)
    for p in table.profiles:
        assert (p.sms, p.memory_mib, p.max_instances, p.dec, p.jpeg, p.ofa, p.ce) == A100_40[p.name]
        assert max_instances(table, p) == p.max_instances  # placements reproduce the instance column


def test_h100_80gb_mig_table_matches_facts() -> None:
    table = default_catalog().mig["h100-80gb"]
    assert table.names() == list(H100_80)
    for p in table.profiles:
        sms, gib, inst, dec, jpeg, ofa, ce = H100_80[p.name]
        assert (p.sms, round(p.memory_mib / 1024, 2), p.max_instances, p.dec, p.jpeg, p.ofa, p.ce) == (
            sms, gib, inst, dec, jpeg, ofa, ce)
        assert p.id == H100_IDS[p.name]
        assert max_instances(table, p) == inst


def test_every_table_instance_column_agrees_with_placements() -> None:
    cat = default_catalog()
    for table in cat.mig.values():
        for p in table.profiles:
            assert max_instances(table, p) == p.max_instances, p.name


def test_catalog_lookup_and_mig_capability() -> None:
    cat = default_catalog()
    assert cat.get("NVIDIA H100 80GB HBM3").key == "h100-sxm"
    assert cat.get("h100-sxm").memory_bytes == 80 * GiB
    assert not cat.get("L40S").mig_capable and not cat.get("l4").mig_capable
    assert cat.get("a30").mig_capable and cat.get("mlu370-x8").vendor == "cambricon"
    with pytest.raises(KeyError, match="unknown GPU model"):
        cat.get("v100")


@pytest.mark.parametrize("text,expected", [
    ("80G", 80 * GiB), ("40GiB", 40 * GiB), ("512m", 512 * MiB), ("1.5g", 3 * 512 * MiB), ("1024", 1024),
    ("4_864m", 4864 * MiB), ("2 GiB", 2 * GiB), ("10kb", 10240), ("3Gbytes", 3 * GiB), ("1t", 1024**4),
])
def test_parse_binary_size(text: str, expected: int) -> None:
    assert parse_binary_size(text) == expected


@pytest.mark.parametrize("bad", ["", "G", "80X", "1.5", "-1g", "inf", "1.0000000001k", "ten", "40 GiBs", "5ib"])
def test_parse_binary_size_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_binary_size(bad)


def test_formatting() -> None:
    assert format_binary_size(40 * GiB) == "40 GiB"
    assert format_binary_size(4864 * MiB) == "4.75 GiB"
    assert format_amount(Decimal("13.5"), NumberFormat(binary=False, round_length=2), "fGPU") == "13.50 fGPU"
    assert format_amount(8, NumberFormat(), "GPU") == "8 GPU"
    assert format_amount(Decimal("10.999"), NumberFormat(round_length=2)) == "10.99"  # rounded down
    assert format_amount(1536, NumberFormat(binary=True, round_length=1), "B") == "1.5 KiB"
    assert format_amount(1500, NumberFormat(binary=False, round_length=1), "B") == "1.5 kB"


def _dev(mem: str, sms: int) -> dict[str, object]:
    return {"mother_uuid": f"u-{mem}-{sms}", "model_name": "CUDA GPU", "numa_node": 0, "subproc_count": sms,
            "memory_size": mem, "is_mig_device": False}


def test_fractional_share_arithmetic() -> None:
    acc = AcceleratorFile.model_validate({
        "slot_name": "cuda", "device_plugin_name": "CUDADevice",
        "formats": {"shares": {"human_readable_name": "GPU", "description": "d", "display_unit": "fGPU",
                               "display_icon": "gpu1", "number_format": {"binary": False, "round_length": 2}}},
        "devices": [_dev("40G", 108), _dev("10G", 108), _dev("16G", 17)],
        "plugin_config": {"allocation_mode": "fractional"},
    })
    cfg = acc.plugin_config  # defaults: unit_mem 2 GiB, unit_proc 8
    assert [device_share(d, cfg) for d in acc.devices] == [Decimal("13.50"), Decimal("5.00"), Decimal("2.12")]
    assert resource_slots(acc) == {"cuda.shares": Decimal("20.62")}
    assert format_slot(acc, "cuda.shares", Decimal("20.62")) == "20.62 fGPU"
    doc = PluginConfig(allocation_mode="fractional", unit_mem=GiB, unit_proc=10)
    assert device_share(acc.devices[0], doc) == Decimal("10.80")
    assert share_to_spec(Decimal("0.5"), doc) == (GiB // 2, 5)
    assert share_to_spec(Decimal("0.25"), doc) == (GiB // 4, 4)  # at least 4 SMs


def test_shipped_files_slots() -> None:
    assert resource_slots(load_accelerator(ACC / "h100x8.toml")) == {"cuda.device": Decimal(8)}
    mig = load_accelerator(ACC / "a100-mig.toml")
    assert resource_slots(mig) == {"cuda.device:3g.20gb-mig": 1, "cuda.device:2g.10gb-mig": 1,
                                   "cuda.device:1g.5gb-mig": 9}
    assert device_id(mig, 2) == "MIG-GPU-a100-aaaa-0000-0000-000000000000/2/0"
    assert mig.format_key == "*-mig"
    frac = load_accelerator(ACC / "a100-fractional.toml")
    assert resource_slots(frac) == {"cuda.shares": Decimal("43.20")}
    assert resource_slots(load_accelerator(ACC / "mlu370x8.toml")) == {"mlu.device": 4}
    assert resource_slots(load_accelerator(ACC / "mixed.toml")) == {"cuda.device": 4}


def test_bad_accelerator_file_names_file_and_field(tmp_path: Path) -> None:
    text = (ACC / "h100x8.toml").read_text().replace('memory_size = "80G"', 'memory_size = "80Q"', 1)
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=r"bad.toml: devices.0.memory_size"):
        load_accelerator(bad)
    bad.write_text((ACC / "h100x8.toml").read_text().replace("is_mig_device = false", "", 1))
    with pytest.raises(ValueError, match="is_mig_device is required"):
        load_accelerator(bad)
    bad.write_text((ACC / "h100x8.toml").read_text() + "\nbogus = 1\n")
    with pytest.raises(ValueError, match="bogus"):
        load_accelerator(bad)
