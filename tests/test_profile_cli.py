"""``compactnas profile`` subcommands, driven through add_parser/run as the main CLI drives them."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pandas as pd
import pytest

import compactnas.hw_profiles as hw
from compactnas import cli_profile as cli
from compactnas.core.errors import CompactnasError, DataError, RegistryError
from compactnas.spaces import create_space
from compactnas.spaces.sampling import sample_archs

pytestmark = pytest.mark.usefixtures("profile_dir")


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="compactnas")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["profile", *argv])
    assert args.func is cli.run
    return args.func(args)


def test_list_and_show(capsys):
    assert _run("list") == 0
    out = capsys.readouterr().out
    for name in ("rpi4", "cortex-a76", "jetson-nano", "stm32f746"):
        assert name in out
    assert _run("show", "stm32f746") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["memory"]["sram_kb"] == 320 and "throughput.int8" in doc["sources"]


def test_user_errors_are_one_line(capsys):
    with pytest.raises(RegistryError, match="unknown device 'nope'"):
        _run("show", "nope")
    assert cli.main(["profile", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown device 'nope'") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        _run("validate", "--name", "rpi4", "--archs", "0")


def _check_validation(doc: dict, name: str, n: int) -> None:
    assert doc["profile"] == name and doc["n"] == n
    for key in ("model", "macs"):
        assert set(doc[key]) >= {"spearman", "kendall", "mape", "within_10pct"}
        assert 0.0 <= doc[key]["within_10pct"] <= 1.0 and doc[key]["mape"] >= 0
        assert -1.0 <= doc[key]["spearman"] <= 1.0
    assert "least squares" in doc["macs"]["note"]
    assert doc["backend"] in ("torch", "onnxruntime") and doc["threads"] >= 1


def test_validate_json_published_profile(capsys):
    assert (
        _run("validate", "--name", "rpi4", "--archs", "4", "--seed", "3", "--rounds", "1", "--json")
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    _check_validation(doc, "rpi4", 4)
    assert "note" in doc and "rows" not in doc


def test_build_show_validate_table_profile(capsys, tmp_path):
    assert (
        _run("build", "--name", "hosttest", "--max-archs", "2", "--fit-archs", "2", "--rounds", "1")
        == 0
    )
    out = capsys.readouterr().out
    assert "hosttest.json" in out
    profile = hw.load_profile("hosttest")
    assert profile.model == "table" and profile.measurement.threads == 1
    assert _run("show", "hosttest") == 0
    assert "entries" in json.loads(capsys.readouterr().out)["table"]
    assert _run("validate", "--name", "hosttest", "--archs", "3", "--rounds", "1", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    _check_validation(doc, "hosttest", 3)
    assert doc["measured_on_demand"] > 0  # a two-architecture table cannot cover held-out networks
    out_path = tmp_path / "elsewhere.json"
    assert _run("build", "--name", "tiny2", "--max-archs", "1", "--fit-archs", "0", "--rounds", "1",
                "--out", str(out_path)) == 0  # fmt: skip
    assert hw.load_profile(out_path).name == "tiny2"


def test_calibrate_cli(capsys, tmp_path):
    start = hw.load_profile("rpi4")
    truth = hw.create_latency_model(replace(start, layer_overhead_ms=0.012, efficiency={"conv": 0.4, "dwconv": 0.1, "linear": 0.2}))  # fmt: skip
    specs = sample_archs(create_space("mobile", image_size=8), 25, seed=5)
    csv = tmp_path / "m.csv"
    pd.DataFrame(
        {"arch": [str(s) for s in specs], "ms": [truth.predict_ms(s, (1, 8, 8)) for s in specs]}
    ).to_csv(csv, index=False)
    assert (
        _run("calibrate", "--name", "rpi4", "--measurements", str(csv), "--method", "roofline") == 0
    )
    out = capsys.readouterr().out
    assert "rpi4-v2" in out and "MAPE over 25 measurements" in out
    new = hw.load_profile("rpi4-v2")  # written to the user profile folder, found by name
    assert new.version == 2 and new.layer_overhead_ms == pytest.approx(0.012, rel=0.05)
    bad = tmp_path / "bad.csv"
    bad.write_text("arch\nx\n")
    with pytest.raises(DataError, match="lack column"):
        _run("calibrate", "--name", "rpi4", "--measurements", str(bad))
    with pytest.raises(CompactnasError, match="no measurements file"):
        _run("calibrate", "--name", "rpi4", "--measurements", str(tmp_path / "none.csv"))
