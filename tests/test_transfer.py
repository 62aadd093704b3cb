"""Latency calibration for a device never seen: features, candidates chosen by leave-one-out, the
``features`` profile it writes, and the CLI round trip (nothing here reads ../shared/data)."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from compactnas.cli import main
from compactnas.core.errors import DataError
from compactnas.hw_profiles import calibrate, create_latency_model
from compactnas.hw_profiles.transfer import (
    _CELL,
    _MACS,
    FEATURES,
    calibrate_transfer,
    feature_matrix,
    features,
    load_sources,
)
from compactnas.spaces import create_space
from compactnas.spaces.layers import arch_layers
from compactnas.spaces.nb201 import OPS, nb201_spec, to_nb201_string
from compactnas.spaces.sampling import sample_archs

pytestmark = pytest.mark.usefixtures("profile_dir")
CELL_SHAPE, CELL_CLASSES = (3, 32, 32), 100


def _cells(n, seed):
    rng = np.random.default_rng(seed)
    return [nb201_spec(tuple(OPS[i] for i in rng.integers(0, len(OPS), 6))) for _ in range(n)]


def test_features_of_a_cell_network_and_of_a_mobile_one():
    cell = _cells(1, 0)[0]
    x = features(cell, CELL_SHAPE, CELL_CLASSES)
    assert x.shape == (len(FEATURES),) and x[_CELL].sum() == 6  # one operator on each edge
    live = sum(layer.macs for layer in arch_layers(cell, CELL_SHAPE, CELL_CLASSES) if layer.live)
    assert x[_MACS].sum() == pytest.approx(live)
    mobile = sample_archs(create_space("mobile"), 1, seed=0)[0]
    assert not features(mobile, (3, 32, 32), 10)[_CELL].any()


def test_a_device_like_a_known_one_is_found_and_rescaled():
    """A device that behaves like source 'b' (twice as slow, plus a constant) is predicted exactly."""
    rng = np.random.default_rng(0)
    x = feature_matrix(_cells(60, 1), CELL_SHAPE, CELL_CLASSES)
    sources = {k: rng.uniform(0, 1, len(FEATURES)) / np.maximum(x.mean(0), 1e-9) for k in "abc"}
    y = 2.0 * (x @ sources["b"]) + 0.3
    cal = calibrate_transfer(x[:20], y[:20], sources)
    assert cal.source is not None and "b" in cal.source
    assert np.allclose(cal.predict(x[20:]), y[20:], rtol=1e-3)


def test_without_sources_the_flops_fit_is_all_there_is():
    x = feature_matrix(_cells(20, 2), CELL_SHAPE, CELL_CLASSES)
    y = x[:, _MACS].sum(1) * 1e-7 + 1.0
    cal = calibrate_transfer(x, y, {})
    assert cal.method == "flops" and set(cal.scores) == {"flops"}
    with pytest.raises(ValueError, match="at least 4"):
        calibrate_transfer(x[:3], y[:3], {})


def test_packaged_sources_cover_the_23_public_devices():
    cells, generic = load_sources(cells=True), load_sources(cells=False)
    assert len(cells) == len(generic) == 23 and {"raspi4", "fpga", "titanx_256"} <= set(cells)
    assert not any(v[_CELL].any() for v in generic.values())  # layer kinds only


def _write(path, archs, ms):
    pd.DataFrame({"arch": [str(a) for a in archs], "ms": ms}).to_csv(path, index=False)


def test_cli_round_trip_on_cells_of_a_new_device(tmp_path, capsys):
    """A device no table holds (a mix of two public ones, with its own per-edge cost): calibrated from
    20 cells through the CLI, written, reloaded and validated on 200 others."""
    src = load_sources(cells=True)
    cells = _cells(220, 3)
    x = feature_matrix(cells, CELL_SHAPE, CELL_CLASSES)
    own = np.zeros(len(FEATURES))
    own[FEATURES.index("cell.e2.nor_conv_3x3")] = 0.8  # what no source has
    y = x @ (0.6 * src["raspi4"] + 0.4 * src["gold_6226"] + own)
    _write(tmp_path / "m.csv", [to_nb201_string(c) for c in cells[:20]], y[:20])
    _write(tmp_path / "v.csv", [to_nb201_string(c) for c in cells[20:]], y[20:])
    shape = ["--input", "3x32x32", "--classes", "100"]
    assert main(["profile", "calibrate", "--base", "rpi4", "--name", "newdev", "--measurements",
                 str(tmp_path / "m.csv"), "--method", "transfer", *shape]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["profile", "validate", "--name", "newdev", "--measurements", str(tmp_path / "v.csv"),
                 "--json", *shape]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    flops = stats.spearmanr(x[20:, _MACS].sum(1), y[20:]).statistic
    ours = got["model"]["spearman"]
    assert ours >= 0.95 and ours > flops and ours > got["macs"]["spearman"], (ours, flops)


def test_transfer_on_the_mobile_space_ranks_at_least_as_well_as_flops():
    """20 measured mobile candidates of a device the sources never saw (the cortex-a76 roofline as its
    truth): the calibrated profile ranks 40 others at least as well as their MACs do."""
    archs = sample_archs(create_space("mobile"), 60, seed=0)
    truth = create_latency_model("cortex-a76", num_classes=10)
    y = np.array([truth.predict_ms(a, (3, 32, 32)) for a in archs])
    prof, rep = calibrate("rpi4", pd.DataFrame({"arch": [str(a) for a in archs[:20]], "ms": y[:20]}),
                          input_shape=(3, 32, 32), num_classes=10, method="transfer")  # fmt: skip
    assert prof.model == "features" and rep["method"] == "transfer"
    model = create_latency_model(prof, num_classes=10)
    pred = [model.predict_ms(a, (3, 32, 32)) for a in archs[20:]]
    macs = feature_matrix(archs[20:], (3, 32, 32), 10)[:, _MACS].sum(1)
    ours = stats.spearmanr(pred, y[20:]).statistic
    assert ours >= stats.spearmanr(macs, y[20:]).statistic and ours > 0.9
    assert prof.memory == create_latency_model("rpi4").profile.memory  # the base's other facts kept


def test_too_few_measurements_for_transfer_is_one_line(tmp_path):
    _write(tmp_path / "m.csv", [to_nb201_string(c) for c in _cells(3, 4)], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="at least 4 measurements"):
        calibrate("rpi4", tmp_path / "m.csv", input_shape=CELL_SHAPE, num_classes=100,
                  method="transfer")  # fmt: skip


@pytest.mark.slow
def test_the_measurement_kit_round_trips_on_this_host(tmp_path, capsys):
    """profile kit -> its stand-alone runner (onnxruntime, here) -> profile calibrate -> profile validate
    on 20 other probes timed by a second kit's runner (the same runtime)."""
    import subprocess
    import sys

    shape = ["--input", "3x32x32", "--classes", "10"]
    for folder, seed in (("kit", "0"), ("check", "7")):
        assert main(["profile", "kit", "--space", "mobile", "--n", "20", "--seed", seed,
                     "--out", str(tmp_path / folder), *shape]) == 0  # fmt: skip
        assert len(list((tmp_path / folder / "models").glob("probe_*.onnx"))) == 20
        template = pd.read_csv(tmp_path / folder / "measured.csv")
        assert len(template) == 20 and template["ms"].isna().all()  # filled by the runner only
        # The runner needs nothing of compactnas: run it from its own folder with -I (isolated mode).
        subprocess.run([sys.executable, "-I", str(tmp_path / folder / "run_probes.py"), "--repeats", "15"],
                       cwd=tmp_path / folder, check=True, capture_output=True, timeout=300)  # fmt: skip
        measured = pd.read_csv(tmp_path / folder / "measured.csv")
        assert len(measured) == 20 and (measured["ms"] > 0).all()
    capsys.readouterr()
    assert main(["profile", "calibrate", "--base", "rpi4", "--name", "myboard", "--measurements",
                 str(tmp_path / "kit" / "measured.csv"), "--method", "transfer", *shape]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["profile", "validate", "--name", "myboard", "--measurements",
                 str(tmp_path / "check" / "measured.csv"), "--json", *shape]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    assert got["n"] == 20 and got["model"]["spearman"] > 0.5, got["model"]
    assert (
        main(["profile", "kit", "--out", str(tmp_path / "kit"), *shape]) == 2
    )  # a kit is never overwritten
