"""Edge exports: LiteRT fp32 and full-integer int8, ExecuTorch fp32, each run in its own runtime on the
held-out test split and compared with the PyTorch model rebuilt from the trial's checkpoint."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch", reason="needs the edge extra: pip install 'compactnas[edge]'")
pytest.importorskip("executorch", reason="needs the edge extra: pip install 'compactnas[edge]'")

import compactnas  # noqa: E402
from compactnas.cli import main  # noqa: E402
from compactnas.core.data import load_data  # noqa: E402
from compactnas.search.export import edge as export_edge  # noqa: E402
from compactnas.search.export.base import ExportError
from compactnas.search.export.formats import build_model
from compactnas.search.export.runners import torch_logits

# LiteRT and ExecuTorch conversions: about a minute.
pytestmark = [pytest.mark.slow]

FORMATS = "tflite,tflite-int8,executorch"


@pytest.fixture(scope="module")
def search(trained_search):
    """The shared trained search (conftest); this module exports from it into its own folders."""
    return trained_search


@pytest.fixture(scope="module")
def exported(search):
    return compactnas.export(
        search,
        trial=0,
        formats=FORMATS,
        dest=str(search.parent / "export_edge"),
        calibration_samples=256,
        latency_min_run_time=0.02,
    )


@pytest.fixture(scope="module")
def reference(search):
    ckpt = torch.load(search / "checkpoints" / "trial_0.pt", weights_only=True)
    model = build_model(
        ckpt["arch"], num_classes=ckpt["num_classes"], in_chans=ckpt["input_shape"][0]
    )
    model.load_state_dict(ckpt["state_dict"])
    data = load_data("digits", seed=0)
    return torch_logits(model.eval(), data.test.x), data


@pytest.mark.parametrize("fmt", ["tflite", "executorch"])
def test_float_edge_export_matches_pytorch(fmt, exported, reference):
    ref, data = reference
    loaded = compactnas.load_exported(exported.files[fmt])
    out = loaded(data.test.x)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-4
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.98
    entry = exported.card["exports"][fmt]
    assert entry["checks"]["passed"] and entry["checks"]["examples"] == len(ref)
    assert entry["max_abs_diff"] <= 1e-4
    assert entry["size_bytes"] == exported.files[fmt].stat().st_size > 0
    assert fmt.split("-")[0] in entry["runtime"].lower() or "litert" in entry["runtime"].lower()


def test_tflite_int8_is_full_integer_and_agrees(exported, reference):
    from compactnas.search.export.litert import TfliteModel

    ref, data = reference
    model = compactnas.load_exported(exported.files["tflite-int8"])
    assert isinstance(model, TfliteModel)
    assert model.input["dtype"] == np.int8 and model.output["dtype"] == np.int8
    out = model(data.test.x)
    agreement = (out.argmax(1) == ref.argmax(1)).mean()
    assert agreement >= 0.98
    entry = exported.card["exports"]["tflite-int8"]
    q = entry["quantization"]
    assert q["input"] == TfliteModel.quant_params(model.input)
    assert q["output"]["scale"] == pytest.approx(float(model.output["quantization"][0]))
    assert q["samples"] == 256 and q["split"] == "train"
    assert entry["top1_agreement"] == pytest.approx(agreement)
    # int8 weights: well under half the fp32 file.
    assert entry["size_bytes"] < 0.5 * exported.card["exports"]["tflite"]["size_bytes"]
    md = (exported.dest / "card.md").read_text()
    assert "int8 scale" in md and "TF Lite Micro" in md


def test_edge_exports_logged_to_the_trial_run(search, exported):
    from mlflow.tracking import MlflowClient

    entry = exported.card["exports"]["tflite"]
    assert "mlflow" in entry, exported.card.get("warnings")
    client = MlflowClient(entry["mlflow"]["tracking_uri"])
    run = client.get_run(entry["mlflow"]["run_id"])
    for key in ("tflite", "tflite_int8", "executorch"):
        assert run.data.metrics[f"export_{key}_top1_agreement"] >= 0.98
        assert run.data.metrics[f"export_{key}_size_bytes"] > 0
        files = [f.path for f in client.list_artifacts(run.info.run_id, f"exports/{key}")]
        assert files and files[0].endswith((".tflite", ".pte"))


def test_stm32_profile_takes_tflite_int8():
    fmt, note = export_edge.format_for_device("stm32f746")
    assert fmt == "tflite-int8"
    assert "stm32f746" in note and "tflite-int8" in note


def test_a_float_or_int8_runtime_takes_the_format_of_the_model_s_bit_widths():
    from compactnas.spaces import parse_arch

    int8 = parse_arch("stem_k3_s1_c8_wb8_ab8-ds_r1_k3_s2_e1_c16_wb8_ab8-head_c0_wb8_ab8")
    mixed = parse_arch("stem_k3_s1_c8-ds_r1_k3_s2_e1_c16_wb8_ab8-head_c0")
    assert export_edge.format_for_device("rpi4", int8)[0] == "tflite-int8"
    assert export_edge.format_for_device("rpi4", mixed)[0] == "tflite"
    assert (
        export_edge.format_for_device("rpi4", parse_arch(str(mixed.without_compression())))[0]
        == "tflite"
    )
    assert export_edge.format_for_device("stm32f746", mixed)[0] == "tflite-int8"  # int8 only


def test_device_flag_picks_the_runtime_format(search, exported, capsys):
    dest = search.parent / "by_device_edge"
    code = main(
        ["export", str(search), "--trial", "0", "--device", "stm32f746", "--dest", str(dest)]
        + ["--no-mlflow", "-q", "--calibration-samples", "64"]
    )
    assert code == 0
    assert "exporting tflite-int8" in capsys.readouterr().err
    card = json.loads((dest / "card.json").read_text())
    assert list(card["exports"]) == ["tflite-int8"]


def test_missing_extra_is_one_line(monkeypatch, search, capsys):
    real = export_edge.importlib.util.find_spec
    monkeypatch.setattr(
        export_edge.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "executorch" else real(name, *a),
    )
    with pytest.raises(ExportError, match=r"compactnas\[edge\]"):
        export_edge.require("executorch")
    code = main(["export", str(search), "--trial", "0", "--format", "executorch", "--dest",
                 str(search.parent / "nope_edge")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'compactnas[edge]'" in err


def test_low_bit_model_exports_to_litert_and_executorch(tmp_path, digits):
    """2/4/8-bit weights and 8-bit activations: the edge formats take the model with its weights on
    their grids and its activation quantizers frozen (no converter graph dump, no refusal), and run
    with the evaluated model's predictions."""
    from compactnas.evaluators.compression import CompressEvaluator
    from compactnas.evaluators.train import TrainConfig
    from compactnas.search.export.formats import deployable

    arch = "stem_k3_s1_c8_wb8_ab8-ir_r1_k3_s1_e4_c16_wb4_ab8-ir_r1_k3_s2_e4_c24_wb2-head_c32_wb8"
    torch.manual_seed(0)
    model = compactnas.create_model(arch, num_classes=10, in_chans=1)
    CompressEvaluator(train_config=TrainConfig(epochs=3)).evaluate(model, arch, digits)
    model.eval()
    x = digits.test.x[:128]
    ref = torch_logits(model, x)
    calib = export_edge.calibration_images(digits.train.x, 32, 0)
    for name, suffix in (("tflite", ".tflite"), ("executorch", ".pte")):
        path = tmp_path / f"m{suffix}"
        export_edge.write_edge(name, deployable(model), (1, 8, 8), path, calib)
        out = compactnas.load_exported(path)(x)
        assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.98, name
        assert np.abs(out - ref).max() < 0.1, name


def test_int8_litert_widens_a_dead_tensor_and_keeps_trained_activation_ranges(
    tmp_path, digits, monkeypatch
):
    """A w8/a8 model whose squeeze-excite reduction never fires (an all-zero tensor): calibrated,
    its empty range is widened, without which the next layer's int32 bias saturates and agreement
    with the evaluated model falls; with the trained model given, the tensors its activation
    quantizers read keep their trained scales in the file."""
    from compactnas.evaluators.compression import CompressEvaluator
    from compactnas.evaluators.quantization import StaticActQuant
    from compactnas.evaluators.train import TrainConfig
    from compactnas.search.export import litert
    from compactnas.search.export.formats import deployable, without_activation_quant

    arch = (
        "stem_k3_s1_c8_wb8_ab8-ir_r1_k3_s1_e4_c16_se0.25_wb8_ab8-ir_r1_k3_s2_e4_c24_wb8_ab8"
        "-head_c32_wb8_ab8"
    )
    torch.manual_seed(0)
    model = compactnas.create_model(arch, num_classes=10, in_chans=1)
    CompressEvaluator(train_config=TrainConfig(epochs=6)).evaluate(model, arch, digits)
    se = next(m for n, m in model.named_modules() if n.endswith("se"))
    with torch.no_grad():  # kill the reduction: its ReLU output is zero on every input
        se.conv_reduce.weight.zero_()
        se.conv_reduce.bias.fill_(-1.0)
    model.eval()
    x = digits.test.x
    ref = torch_logits(model, x).argmax(1)
    deploy = deployable(model)
    plain = without_activation_quant(deploy)
    calib = export_edge.calibration_images(digits.train.x, 128, 0)
    path = tmp_path / "m.tflite"

    def agreement(trained=None):
        info = export_edge.write_edge("tflite-int8", plain, (1, 8, 8), path, calib, trained)
        return float((compactnas.load_exported(path)(x).argmax(1) == ref).mean()), info

    widened, _ = agreement()
    with monkeypatch.context() as m:
        m.setattr(litert, "widen_degenerate_ranges", lambda r: r)
        empty, _ = agreement()
    assert widened >= 0.93 and widened >= empty + 0.03, (widened, empty)
    kept, info = agreement(deploy)
    assert kept >= 0.93 and info["quantization"]["trained_ranges"] >= 3
    trained = {round(m.scale, 9) for m in deploy.modules() if isinstance(m, StaticActQuant)}
    in_file = {
        round(float(t["quantization"][0]), 9)
        for t in litert.TfliteModel(path).interpreter.get_tensor_details()
        if t["dtype"] == np.int8
    }
    assert len(trained & in_file) >= 3


def test_an_empty_calibration_range_is_widened():
    from compactnas.search.export.litert import widen_degenerate_ranges

    ranges = {
        "dead": {
            "min": np.zeros((1, 1, 1, 1), np.float32),
            "max": np.zeros((1, 1, 1, 1), np.float32),
        },
        "live": {"min": np.full((1,), -2.0, np.float32), "max": np.full((1,), 3.0, np.float32)},
    }
    out = widen_degenerate_ranges(ranges)
    assert out["dead"]["max"].item() == 1.0 and out["dead"]["min"].item() == 0.0
    assert out["live"] is ranges["live"]
