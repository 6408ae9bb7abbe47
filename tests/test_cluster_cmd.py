"""`cluster show`: table output and one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cluster.commands import show as cluster_cmd
from cluster.hardware.catalog import CONFIG_DIR

ACC = CONFIG_DIR / "accelerator"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="clustersim")
    sub = parser.add_subparsers(dest="cmd", required=True)
    cluster_cmd.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_show_mig_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["cluster", "show", str(ACC / "a100-mig.toml")]) == 0
    out = capsys.readouterr().out
    assert "mode=mig" in out and "cuda.device:1g.5gb-mig=9 GPU" in out and out.count("mig-1g.5gb@") == 9


def test_show_with_virtualization_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "node.toml"
    f.write_text((ACC / "h100x8.toml").read_text()
                 + '\n[node]\nname = "gpu-a"\n[virtualization]\nmode = "hami-core"\ndevice_split_count = 4\n')
    assert _run(["cluster", "show", str(f)]) == 0
    out = capsys.readouterr().out
    assert "node gpu-a  mode=hami-core" in out and "hami-core" in out
    rows = [ln for ln in out.splitlines() if "H100" in ln]
    assert len(rows) == 8 and all(ln.split()[-5] == "4" for ln in rows)


def test_show_override_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["cluster", "show", str(ACC / "h100x8.toml"), "--mode", "mig", "--set", "profiles=7g.80gb"]) == 0
    assert "mig-7g.80gb@0" in capsys.readouterr().out
    assert _run(["cluster", "show", str(ACC / "mlu370x8.toml"), "--mode", "hami-core"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mlu370x8.toml" in err and "Traceback" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text((ACC / "h100x8.toml").read_text() + '\n[virtualization]\nmode = "mig"\nprofiles = ["9g.1gb"]\n')
    assert _run(["cluster", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "9g.1gb" in err and err.count("\n") == 1
    bad.write_text((ACC / "h100x8.toml").read_text() + '\n[virtualization]\nmode = "hami-core"\nsplit = 3\n')
    assert _run(["cluster", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: virtualization.split: unknown key" in err
    assert _run(["cluster", "show", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: cannot read" in capsys.readouterr().err
