"""The few-parameter calibration, and calibrate / validate / predict from CSV files of arch,ms rows."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import compactnas.core.errors as hw_errors
import compactnas.hw_profiles as hw
from compactnas import cli_profile
from compactnas.spaces.nb201 import OPS, nb201_spec, to_nb201_string

SHAPE = (3, 32, 32)


pytestmark = pytest.mark.usefixtures("profile_dir")


def _cells(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [to_nb201_string(nb201_spec(tuple(rng.choice(OPS, 6)))) for _ in range(n)]


def _truth() -> hw.DeviceProfile:
    start = hw.load_profile("rpi4")
    return replace(
        start,
        combine="sum",
        dead_code=True,
        # What NAS-Bench-201 networks vary: 3x3 and 1x1 convolutions, pooling, additions (the classifier
        # and last batch norm are the same in every network, indistinguishable from the network overhead).
        efficiency={"conv": 0.3, "pwconv": 0.12, "linear": 0.3, "pool": 0.05, "add": 0.4},
        layer_overhead_ms=0.03,
        network_overhead_ms=0.4,
    )


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="compactnas")
    cli_profile.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["profile", *argv])
    return args.func(args)


def test_linear_calibration_recovers_its_own_parameters():
    truth = hw.create_latency_model(_truth(), num_classes=100)
    archs = _cells(40, seed=1)
    df = pd.DataFrame({"arch": archs, "ms": [truth.predict_ms(a, SHAPE) for a in archs]})
    new, report = hw.calibrate("rpi4", df, input_shape=SHAPE, num_classes=100)
    assert report["method"] == "linear" and report["dead_code"] is True and new.combine == "sum"
    assert report["mape_before"] > 10 and report["mape_after"] < 0.5
    # The weak pull towards the base profile leaves a few percent on the smaller terms.
    for kind, rel in (("conv", 0.03), ("pwconv", 0.05), ("pool", 0.1)):
        assert new.efficiency[kind] == pytest.approx(_truth().efficiency[kind], rel=rel), kind
    # Per-layer dispatch trades off against the cost of additions (their counts move together on this
    # space): the pair is right in what it predicts for networks the fit never saw.
    model = hw.create_latency_model(new, num_classes=100)
    held = _cells(30, seed=7)
    err = [abs(model.predict_ms(a, SHAPE) / truth.predict_ms(a, SHAPE) - 1) for a in held]
    assert max(err) < 0.01
    assert 0.01 < new.layer_overhead_ms < 0.06 and new.network_overhead_ms > 0.1
    hw.profile_from_dict(json.loads(new.to_json()), label="new")  # a valid profile file


def test_dead_code_kept_from_the_base_unless_asked():
    # A device that runs every operator, dead or not, calibrated from rpi4 (which states that its
    # runtime drops dead operators).
    truth = hw.create_latency_model(replace(_truth(), dead_code=False), num_classes=100)
    archs = _cells(30, seed=4)
    df = pd.DataFrame({"arch": archs, "ms": [truth.predict_ms(a, SHAPE) for a in archs]})
    kept, report = hw.calibrate("rpi4", df, input_shape=SHAPE, num_classes=100)
    assert report["dead_code"] is True and kept.dead_code is True
    auto, report = hw.calibrate("rpi4", df, input_shape=SHAPE, num_classes=100, dead_code="auto")
    assert report["dead_code"] is False and report["mape_after"] < 1
    off, _ = hw.calibrate("rpi4", df, input_shape=SHAPE, num_classes=100, dead_code="off")
    assert off.dead_code is False
    with pytest.raises(hw_errors.ConfigError, match="dead_code"):
        hw.calibrate("rpi4", df, input_shape=SHAPE, num_classes=100, dead_code="maybe")
    df.to_csv(Path(os.environ["COMPACTNAS_PROFILE_DIR"]).parent / "m.csv", index=False)
    assert _run("calibrate", "--base", "rpi4", "--name", "mydev", "--dead-code", "off", "--input", "3x32x32",
                "--classes", "100", "--measurements",
                str(Path(os.environ["COMPACTNAS_PROFILE_DIR"]).parent / "m.csv")) == 0  # fmt: skip
    assert hw.load_profile("mydev").dead_code is False


def test_calibrate_validate_predict_cli(tmp_path, capsys):
    truth = hw.create_latency_model(_truth(), num_classes=100)
    fit, held = _cells(15, seed=2), _cells(30, seed=3)
    for name, archs in (("fit.csv", fit), ("held.csv", held)):
        ms = [truth.predict_ms(a, SHAPE) for a in archs]
        pd.DataFrame({"arch": archs, "ms": ms}).to_csv(tmp_path / name, index=False)
    assert _run("calibrate", "--base", "rpi4", "--name", "mypi", "--measurements", str(tmp_path / "fit.csv"),
                "--input", "3x32x32", "--classes", "100") == 0  # fmt: skip
    assert "mypi" in capsys.readouterr().out
    assert hw.load_profile("mypi").calibrated_from.startswith("rpi4")
    assert _run("validate", "--name", "mypi", "--measurements", str(tmp_path / "held.csv"),
                "--input", "3x32x32", "--classes", "100", "--json") == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == 30 and doc["model"]["spearman"] > 0.98 and doc["model"]["mape"] < 5
    assert set(doc["macs"]) >= {"spearman", "kendall", "mape", "within_10pct"}
    assert (
        _run(
            "predict",
            "--name",
            "mypi",
            "--arch",
            held[0],
            "--input",
            "3x32x32",
            "--classes",
            "100",
            "--json",
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["latency_ms"] == pytest.approx(truth.predict_ms(held[0], SHAPE), rel=0.05)
    assert (
        _run("predict", "--name", "stm32f746", "--arch", "stem_k3_s1_c8-ds_r1_k3_s1_e1_c8-head_c0")
        == 0
    )
    assert "KB peak SRAM" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _run("predict", "--name", "rpi4", "--arch", held[0], "--input", "32x32")


def test_mcu_profiles_by_board_and_runtime():
    names = [f"stm32h743-{rt}" for rt in ("tflm", "cmsisnn", "cubeai", "tinyengine")]
    names += ["stm32h747-cubeai", "stm32f769-cubeai", "stm32f746-tflm", "stm32f746-tinyengine"]
    assert set(names) <= set(hw.list_devices())
    board = hw.load_profile("stm32f746")
    assert (
        board.name == "stm32f746"
        and board.throughput == hw.load_profile("stm32f746-tflm").throughput
    )
    spec = "stem_k3_s2_c16_wb8_ab8-ir_r2_k3_s2_e4_c24_wb8_ab8-head_c0_wb8_ab8"
    tflm = hw.create_latency_model("stm32h743-tflm").predict_ms(spec, (3, 64, 64))
    tiny = hw.create_latency_model("stm32h743-tinyengine").predict_ms(spec, (3, 64, 64))
    assert tflm > 5 * tiny  # the same board is many times faster under TinyEngine
    for name in names:
        assert hw.load_profile(name).memory is not None
