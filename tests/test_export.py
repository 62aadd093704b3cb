"""Export: every format matches PyTorch on held-out data, the card tells the truth, MLflow loads the
models back, and bad requests end in one line and status 2 without touching earlier exports."""

import json
import shutil

import numpy as np
import pytest
import torch

import compactnas
from compactnas.cli import main
from compactnas.core.data import load_data
from compactnas.evaluators import compression
from compactnas.search.export.base import ExportError
from compactnas.search.export.formats import build_model
from compactnas.search.export.pipeline import ExportConfig, check_formats, parse_formats
from compactnas.search.export.runners import OnnxModel, torch_logits
from compactnas.search.workflows.pick import knee_index, pick_from_front

# Trains a search, then exports and checks every format.
pytestmark = [pytest.mark.slow]

ALL = "onnx,onnx-int8,torchscript,state-dict,arch"


@pytest.fixture(scope="module")
def search(trained_search):
    """The shared trained search (conftest); this module exports from it into its own folders."""
    return trained_search


@pytest.fixture(scope="module")
def exported(search):
    return compactnas.export(
        search,
        pick="accuracy",
        formats=ALL,
        dest=str(search.parent / "export"),
        latency_min_run_time=0.05,
    )


@pytest.fixture(scope="module")
def reference(search, exported):
    """The PyTorch model rebuilt independently from the trial's checkpoint, and the test split."""
    ckpt = torch.load(search / "checkpoints" / f"trial_{exported.trial}.pt", weights_only=True)
    model = build_model(
        ckpt["arch"], num_classes=ckpt["num_classes"], in_chans=ckpt["input_shape"][0]
    )
    model.load_state_dict(ckpt["state_dict"])
    data = load_data("digits", seed=0)
    return model.eval(), data


def _err_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("compactnas: error:")
    return err


def test_onnx_fp32_matches_pytorch(exported, reference):
    model, data = reference
    onnx_model = compactnas.load_exported(exported.files["onnx"])
    assert isinstance(onnx_model, OnnxModel)
    ref = torch_logits(model, data.test.x)
    out = onnx_model(data.test.x)
    assert np.abs(out - ref).max() <= 1e-4
    assert exported.card["exports"]["onnx"]["max_abs_diff"] <= 1e-4
    assert exported.card["exports"]["onnx"]["checks"]["passed"]


def test_int8_agrees_and_keeps_accuracy(exported, reference):
    model, data = reference
    ref = torch_logits(model, data.test.x)
    out = compactnas.load_exported(exported.files["onnx-int8"])(data.test.x)
    labels = data.test.y.numpy()
    agreement = (out.argmax(1) == ref.argmax(1)).mean()
    drop = (ref.argmax(1) == labels).mean() - (out.argmax(1) == labels).mean()
    assert agreement >= 0.98
    assert drop <= 0.01
    entry = exported.card["exports"]["onnx-int8"]
    assert entry["top1_agreement"] == pytest.approx(agreement)
    assert entry["calibration"]["split"] == "train"
    # int8 weights make the file much smaller than fp32
    assert entry["size_bytes"] < 0.6 * exported.card["exports"]["onnx"]["size_bytes"]


def test_card_records_the_truth(exported):
    card = json.loads((exported.dest / "card.json").read_text())
    md = (exported.dest / "card.md").read_text()
    assert card["arch"] == exported.arch == (exported.dest / "arch.txt").read_text().strip()
    assert set(card["exports"]) == set(ALL.split(","))
    for fmt, entry in card["exports"].items():
        path = exported.dest / entry["file"]
        assert entry["size_bytes"] == path.stat().st_size, fmt
        assert f"{entry['size_bytes']:,}" in md
        if fmt != "arch":
            assert 0.0 <= entry["test_accuracy"] <= 1.0
            assert entry["latency_ms_host"] > 0
    assert card["pytorch"]["test_accuracy"] == pytest.approx(
        card["search_metrics"]["test_accuracy"]
    )
    assert card["pytorch"]["latency_ms_host"] > 0
    assert card["predicted"]["latency_ms"] > 0 and card["predicted"]["device"] == "host"
    assert card["source"]["weights"] == "trained"
    assert exported.warnings == ()
    # What a deployment must do to its inputs: the training split's statistics (digits: one channel).
    from compactnas.core.data import load_data

    norm = card["model"]["normalize"]
    data = load_data("digits", seed=0)
    assert norm["mean"] == pytest.approx(list(data.mean)) and len(norm["std"]) == 1
    assert f"{norm['mean'][0]:.4f}" in md


def test_load_exported_and_mlflow_give_the_same_predictions(exported, reference):
    import mlflow

    _, data = reference
    x = data.test.x[:64]
    folder = compactnas.load_exported(exported.dest)  # the folder: its preferred (ONNX) export
    expected = folder(x)
    for fmt in ("onnx", "onnx-int8", "torchscript", "state-dict"):
        entry = exported.card["exports"][fmt]
        loaded = compactnas.load_exported(exported.dest / entry["file"])
        ours = loaded(x) if isinstance(loaded, OnnxModel) else loaded(x).detach().numpy()
        info = entry["mlflow"]
        mlflow.set_tracking_uri(info["tracking_uri"])
        try:
            theirs = mlflow.pyfunc.load_model(info["model_uri"]).predict(x.numpy())
            run = mlflow.MlflowClient().get_run(info["run_id"])
        finally:
            mlflow.set_tracking_uri(None)
        theirs = np.asarray(theirs["logits"] if isinstance(theirs, dict) else theirs)
        assert np.abs(ours - theirs).max() <= 1e-5, fmt
        assert info["model_id"] in {o.model_id for o in run.outputs.model_outputs}
        if fmt != "onnx-int8":
            assert np.abs(ours - expected).max() <= 1e-4, fmt
    assert isinstance(
        compactnas.load_exported(exported.files["torchscript"]), torch.jit.ScriptModule
    )
    assert isinstance(compactnas.load_exported(exported.files["state-dict"]), torch.nn.Module)


def test_nothing_is_overwritten_without_force(search, exported, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in exported.dest.iterdir()}
    argv = [
        "export",
        str(search),
        "--trial",
        str(exported.trial),
        "--format",
        "onnx",
        "--dest",
        str(exported.dest),
    ]
    assert main(argv) == 2
    assert "--force" in _err_line(capsys)
    other = 1 - exported.trial
    assert (
        main(
            [
                "export",
                str(search),
                "--trial",
                str(other),
                "--format",
                "arch",
                "--dest",
                str(exported.dest),
            ]
        )
        == 2
    )
    assert f"holds the export of trial {exported.trial}" in _err_line(capsys)
    assert {p.name: p.stat().st_mtime_ns for p in exported.dest.iterdir()} == before


def test_force_overwrites_and_new_formats_join_the_card(search, tmp_path, capsys):
    dest = tmp_path / "e"
    base = ["export", str(search), "--trial", "1", "--dest", str(dest), "--no-mlflow", "-q"]
    assert main([*base, "--format", "arch"]) == 0
    assert main([*base, "--format", "state-dict"]) == 0
    card = json.loads((dest / "card.json").read_text())
    assert set(card["exports"]) == {"arch", "state-dict"}
    assert main([*base, "--format", "arch"]) == 2
    assert main([*base, "--format", "arch", "--force"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(dest)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--trial", "7"], "has no trial 7"),
        (["--trial", "0", "--format", "coreml"], "unknown export format 'coreml'"),
        (["--pick", "beauty"], "invalid choice"),
        (["--trial", "0", "--pick", "knee"], "not allowed with argument"),
    ],
)
def test_bad_requests_are_one_line_and_status_2(search, extra, message, tmp_path, capsys):
    try:
        code = main(["export", str(search), *extra, "--dest", str(tmp_path / "x")])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_unwritable_destination(search, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert (
        main(
            [
                "export",
                str(search),
                "--trial",
                "0",
                "--format",
                "arch",
                "--dest",
                str(blocker / "sub"),
            ]
        )
        == 2
    )
    assert "cannot write to" in _err_line(capsys)


def test_a_failed_export_leaves_nothing_behind(search, tmp_path, monkeypatch, capsys):
    import compactnas.search.export.builtin as export_module

    def fail(*args, **kwargs):
        raise ExportError("TorchScript tracing failed: simulated")

    monkeypatch.setattr(export_module, "write_torchscript", fail)
    dest = tmp_path / "f"
    argv = [
        "export",
        str(search),
        "--trial",
        "1",
        "--format",
        "arch,torchscript",
        "--dest",
        str(dest),
    ]
    assert main(argv) == 2
    assert "simulated" in _err_line(capsys)
    assert not dest.exists()  # the folder the export created is gone again, as the README says


def test_a_failed_forced_export_keeps_what_was_there(search, tmp_path, monkeypatch, capsys):
    import compactnas.search.export.builtin as export_module

    dest = tmp_path / "g"
    base = ["export", str(search), "--trial", "1", "--dest", str(dest), "--no-mlflow", "-q"]
    assert main([*base, "--format", "arch,state-dict"]) == 0
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    assert {"arch.txt", "trial_1.state_dict.pt", "card.json", "card.md"} <= set(before)

    def fail(*args, **kwargs):
        raise ExportError("TorchScript tracing failed: simulated")

    monkeypatch.setattr(export_module, "write_torchscript", fail)
    # state-dict is rewritten first, then torchscript fails: the earlier files must all survive intact.
    assert main([*base, "--format", "state-dict,torchscript,arch", "--force"]) == 2
    assert "simulated" in _err_line(capsys)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before


def test_no_search_here(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--pick", "knee"]) == 2
    assert "no search results" in _err_line(capsys)


def test_int8_refused_for_low_bit_weights_and_distilled_weights_preferred(search, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(search, out, ignore=shutil.ignore_patterns("mlartifacts"))
    ckpt_path = out / "checkpoints" / "trial_1.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    # Distilled weights, when present, are what gets exported.
    distilled = dict(ckpt, state_dict={k: v.clone() for k, v in ckpt["state_dict"].items()})
    distilled["state_dict"]["classifier.bias"] += 1.0
    (out / "distilled").mkdir()
    torch.save(distilled, out / "distilled" / "trial_1.pt")
    res = compactnas.export(
        out, trial=1, formats="state-dict", dest=str(tmp_path / "d"), mlflow=False
    )
    assert res.card["source"]["weights"] == "distilled"
    blob = torch.load(res.files["state-dict"], weights_only=True)
    assert torch.equal(
        blob["state_dict"]["classifier.bias"], distilled["state_dict"]["classifier.bias"]
    )

    # A trial whose stage 2 has 2-bit weights cannot become an int8 ONNX model.
    segs = ckpt["arch"].split("-")
    segs[2] += "_wb2"
    torch.save(dict(ckpt, arch="-".join(segs)), ckpt_path)
    shutil.rmtree(out / "distilled")
    argv = [
        "export",
        str(out),
        "--trial",
        "1",
        "--format",
        "onnx-int8",
        "--dest",
        str(tmp_path / "q"),
    ]
    assert main(argv) == 2
    err = _err_line(capsys)
    assert "onnx-int8 cannot represent" in err and "stage 2 (wb2)" in err
    assert not (tmp_path / "q").exists()


def _low_bit_copy(search, tmp_path):
    """A copy of the search whose trial 1 has 4- and 2-bit weights; returns (folder, model)."""
    out = tmp_path / "copy"
    shutil.copytree(search, out, ignore=shutil.ignore_patterns("mlartifacts"))
    ckpt_path = out / "checkpoints" / "trial_1.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    segs = ckpt["arch"].split("-")
    segs[1], segs[-2] = segs[1] + "_wb4", segs[-2] + "_wb2"
    arch = "-".join(segs)
    model = compression.build_compressed_model(arch, num_classes=10, in_chans=1)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    assert not unexpected
    torch.save(dict(ckpt, arch=arch, state_dict=model.state_dict()), ckpt_path)
    return out, model


def test_a_compressed_onnx_file_that_misses_the_tolerance_fails_its_check(
    search, tmp_path, monkeypatch
):
    """A deliberately broken ONNX writer (one weight nudged by 0.01 after writing) gives a file whose
    logits miss the 1e-4 float tolerance: its check fails and the export says so."""
    import onnx
    from onnx import numpy_helper

    import compactnas.search.export.builtin as builtin

    out, _ = _low_bit_copy(search, tmp_path)
    honest = builtin.write_onnx

    def broken(model, shape, path, **kw):
        honest(model, shape, path, **kw)
        m = onnx.load(str(path))
        w = next(i for i in m.graph.initializer if numpy_helper.to_array(i).ndim == 4)
        arr = numpy_helper.to_array(w).copy()
        arr.flat[0] += 0.01
        w.CopyFrom(numpy_helper.from_array(arr, w.name))
        onnx.save(m, str(path))

    monkeypatch.setattr(builtin, "write_onnx", broken)
    res = compactnas.export(out, trial=1, formats="onnx", dest=str(tmp_path / "b"), mlflow=False)
    entry = res.card["exports"]["onnx"]
    assert entry["max_abs_diff"] > 1e-4
    assert entry["checks"] == {**entry["checks"], "rule": "max |diff| <= 0.0001", "passed": False}
    assert any("onnx: max |diff| <= 0.0001 not met" in w for w in res.warnings)


def test_compressed_trial_keeps_its_own_quantization(search, tmp_path):
    """A trial with 4- and 2-bit weights exports to ONNX and TorchScript with the same numbers."""
    out, model = _low_bit_copy(search, tmp_path)

    res = compactnas.export(
        out, trial=1, formats="onnx,torchscript,state-dict", dest=str(tmp_path / "c"), mlflow=False
    )
    for fmt in ("onnx", "torchscript", "state-dict"):
        entry = res.card["exports"][fmt]
        assert entry["max_abs_diff"] <= 1e-4, fmt
        assert entry["checks"]["passed"], fmt
    data = load_data("digits", seed=0)
    ref = torch_logits(model.eval(), data.test.x[:32])
    assert np.abs(compactnas.load_exported(res.files["onnx"])(data.test.x[:32]) - ref).max() <= 1e-4
    with pytest.raises(ExportError, match="onnx-int8 cannot represent"):
        compactnas.export(out, trial=1, formats="onnx-int8", dest=str(tmp_path / "q"), mlflow=False)


def test_check_formats_accepts_dense_and_pruned_strings():
    check_formats("stem_k3_s1_c8-ir_r1_k3_s1_e2_c8_pr0.25-head_c0", ["onnx-int8"])
    # 8-bit layers survive an int8 format's own quantization; narrower ones do not.
    check_formats("stem_k3_s1_c8-ds_r1_k3_s1_e1_c8_wb8_ab8-head_c0_ab8", ["onnx", "onnx-int8"])
    with pytest.raises(ExportError, match=r"head \(wb4 ab8\)"):
        check_formats("stem_k3_s1_c8-ds_r1_k3_s1_e1_c8_wb8-head_c0_wb4_ab8", ["onnx", "onnx-int8"])


def test_parse_formats():
    assert parse_formats(["onnx,arch", "onnx", "state_dict"]) == ("onnx", "arch", "state-dict")
    assert ExportConfig(formats="torchscript").formats == ("torchscript",)
    with pytest.raises(compactnas.CompactnasError, match="unknown export format"):
        parse_formats("onnx,coreml")
    with pytest.raises(compactnas.CompactnasError, match="unknown export option"):
        compactnas.export("/nowhere", trial=0, format="onnx")


def test_knee_on_known_fronts():
    # A convex 2-d front: the bend at (0.2, 0.2) is furthest from the line between the extremes.
    assert knee_index(np.array([[0.0, 1.0], [0.2, 0.2], [0.5, 0.1], [1.0, 0.0]])) == 1
    # Scaling an objective does not move the knee (objectives are normalised first).
    assert knee_index(np.array([[0.0, 1000.0], [0.2, 200.0], [0.5, 100.0], [1.0, 0.0]])) == 1
    # Three objectives: the point that bulges towards the ideal point.
    pts = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0], [0.2, 0.2, 0.2], [0.6, 0.6, 0.5]], dtype=float)
    assert knee_index(pts) == 3
    assert knee_index(np.array([[1.0, 2.0]])) == 0


def test_pick_from_front():
    objectives = [
        {"name": "accuracy", "metric": "accuracy", "direction": "maximize"},
        {"name": "latency", "metric": "latency_ms", "direction": "minimize"},
    ]
    front = [
        {"trial": 3, "accuracy": 0.99, "latency_ms": 10.0, "size_bytes": 900},
        {"trial": 5, "accuracy": 0.97, "latency_ms": 2.0, "size_bytes": 300},
        {"trial": 8, "accuracy": 0.80, "latency_ms": 1.0, "size_bytes": 100},
    ]
    assert pick_from_front(front, "accuracy", objectives)["trial"] == 3
    assert pick_from_front(front, "latency", objectives)["trial"] == 8
    assert pick_from_front(front, "size", objectives)["trial"] == 8
    assert pick_from_front(front, "knee", objectives)["trial"] == 5
    with pytest.raises(compactnas.CompactnasError, match="front is empty"):
        pick_from_front([], "knee", objectives)


@pytest.fixture
def traced_format():
    """A format added as a user would: one module of theirs, one registration (removed after the test)."""
    from compactnas.search.export.registry import FORMATS, ExportFormat, register_format

    def write(job, path):
        with torch.no_grad():
            traced = torch.jit.trace(job.deploy.eval(), torch.zeros(1, *job.input_shape))
        traced.save(str(path))
        return {"traced": True}

    fmt = register_format(
        ExportFormat(
            name="traced",
            file_name="trial_{trial}.traced.pt",
            write=write,
            summary="TorchScript by tracing",
        )  # fmt: skip
    )
    yield fmt
    FORMATS.pop(fmt.name)


def test_a_new_format_is_one_registration(search, tmp_path, traced_format, capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "traced" in capsys.readouterr().out
    dest = tmp_path / "t"
    argv = ["export", str(search), "--trial", "0", "--format", "traced", "--dest", str(dest)]
    assert main([*argv, "--no-mlflow", "-q"]) == 0
    card = json.loads((dest / "card.json").read_text())
    entry = card["exports"]["traced"]
    assert entry["file"] == "trial_0.traced.pt" and entry["traced"] is True
    assert entry["checks"]["passed"] and entry["max_abs_diff"] <= 1e-4  # run back, not just written
    assert compactnas.load_exported(dest / "trial_0.traced.pt") is not None
