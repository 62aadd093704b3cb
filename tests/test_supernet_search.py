"""Searching inside a trained supernet: inherited weights, one front per device, show and export."""

import csv
import json
import sqlite3

import numpy as np
import pytest

from compactnas.cli import main
from compactnas.search import SearchConfig, run_search
from compactnas.search.supernet.epochs import SupernetConfig
from compactnas.search.supernet.training import train_supernet
from compactnas.spaces.elastic import ElasticSpace

# Trains a supernet, then searches it.
pytestmark = [pytest.mark.slow]

DEVICES = ("rpi4", "cortex-a76", "stm32f746")


@pytest.fixture(scope="module")
def supernet(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("supernet")
    cfg = SupernetConfig(out=str(out), epochs=1, subset=400, batch_size=100, n_random=1)
    train_supernet(cfg, data=digits, quiet=True)
    return out


@pytest.fixture(scope="module")
def searched(supernet, tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("search")
    cfg = SearchConfig(supernet=str(supernet), device=",".join(DEVICES), trials=20, workers=1,
                       out=str(out), sampler="random")  # fmt: skip
    return run_search(cfg, data=digits, quiet=True)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_one_front_per_device_inside_the_supernet(searched, supernet):
    s = searched.summary
    assert list(s["devices"]) == list(DEVICES)
    space = ElasticSpace.for_image(8)
    archs = set()
    fresh = 0
    for device, d in s["devices"].items():
        # A microcontroller can refuse a candidate that does not fit its memory (infeasible).
        assert d["n_complete"] + d["n_infeasible"] == 20 and d["n_complete"] >= 10, device
        assert d["pareto"], device
        rows = _rows(searched.out_dir / d["folder"] / "trials.csv")
        assert len(rows) == 20
        for r in (r for r in rows if r["state"] == "COMPLETE"):
            space.check(r["arch"])  # only sub-networks of the supernet are proposed
            assert 0.0 <= float(r["accuracy"]) <= 1.0
            if r["duplicate_of"] == "" and float(r["cached"]) == 0.0:
                fresh += 1
            archs.add(r["arch"])
    # Each architecture was evaluated once across all devices, the rest came from the cache.
    with sqlite3.connect(supernet / "inherited.db") as db:
        assert db.execute("SELECT COUNT(*) FROM acc").fetchone()[0] == len(archs)
    assert fresh == len(archs) < 60
    # The same architecture has the same accuracy for every device.
    by_arch = {}
    for d in s["devices"].values():
        for r in _rows(searched.out_dir / d["folder"] / "trials.csv"):
            if r["state"] != "COMPLETE":
                continue
            by_arch.setdefault(r["arch"], set()).add(r["accuracy"])
    assert all(len(v) == 1 for v in by_arch.values())
    assert json.loads((searched.out_dir / "summary.json").read_text())["devices"]


def test_show_and_export_handle_fronts_per_device(searched, capsys):
    out = str(searched.out_dir)
    capsys.readouterr()
    assert main(["show", out]) == 0
    text = capsys.readouterr().out
    assert all(f"device {d}:" in text for d in DEVICES)
    assert main(["export", out, "--pick", "accuracy", "--format", "onnx", "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device NAME" in err and len(err.splitlines()) == 1
    assert main(["export", out, "--device", "rpi4", "--pick", "accuracy", "--format", "onnx",
                 "--no-mlflow", "-q"]) == 0  # fmt: skip
    dest = capsys.readouterr().out.strip().splitlines()[-1]
    card = json.loads(open(f"{dest}/card.json").read())
    best = max(searched.summary["devices"]["rpi4"]["pareto"], key=lambda r: r["accuracy"])
    assert card["arch"] == best["arch"]
    # The exported weights are the inherited ones the search measured.
    from compactnas.evaluators.train import accuracy
    from compactnas.search.supernet.training import inherited_model_for

    model, data = inherited_model_for(searched.summary["config"], best["arch"])
    assert accuracy(model, data.val.x, data.val.y) == pytest.approx(best["accuracy"], abs=1e-9)
    assert card["pytorch"]["test_accuracy"] == pytest.approx(
        accuracy(model, data.test.x, data.test.y), abs=1e-9
    )


def test_a_supernet_for_other_data_or_space_is_refused(supernet, tmp_path, capsys):
    rng = np.random.default_rng(0)
    other = tmp_path / "other.npz"
    np.savez(other, x=rng.integers(0, 255, (300, 8, 8), dtype=np.uint8), y=np.arange(300) % 10)
    base = ["search", "--supernet", str(supernet), "--trials", "2", "--out", str(tmp_path / "s")]
    capsys.readouterr()
    for extra, message in (
        (["--data", f"npz:{other}"], "trained on other data"),
        (["--space", "squeeze"], "space 'mobile', not 'squeeze'"),
        (["--evaluator", "proxy"], "--supernet needs --evaluator supernet"),
    ):
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_retrain_starts_from_inherited_or_scratch_weights(searched, capsys):
    import torch

    from compactnas.core.errors import ConfigError
    from compactnas.search.supernet.training import inherited_model_for
    from compactnas.search.workflows.retrain import initial_weights

    out = str(searched.out_dir)
    device = searched.out_dir / "devices" / "rpi4"
    scfg = json.loads((device / "summary.json").read_text())["config"]
    best = max(searched.summary["devices"]["rpi4"]["pareto"], key=lambda r: r["accuracy"])
    init = initial_weights("inherited", scfg, best["arch"], None)
    model, _ = inherited_model_for(scfg, best["arch"])
    assert init.keys() == model.state_dict().keys()
    assert all(torch.equal(init[k], v) for k, v in model.state_dict().items())
    assert initial_weights("scratch", scfg, best["arch"], None) is None
    with pytest.raises(ConfigError, match="needs a supernet search"):
        initial_weights("inherited", {"evaluator": "proxy"}, best["arch"], None)
    for init_kind in ("inherited", "scratch"):
        argv = [
            "retrain",
            out,
            "--device",
            "rpi4",
            "--top",
            "1",
            "--epochs",
            "1",
            "--init",
            init_kind,
        ]
        assert main(argv) == 0
        report = json.loads((device / "retrained" / f"retrain-{init_kind}.json").read_text())
        assert report["settings"]["init"] == init_kind
        assert (
            report["models"][0]["init"] == init_kind and report["models"][0]["arch"] == best["arch"]
        )
    assert "scratch init" in capsys.readouterr().out


def test_init_choices_are_checked():
    from compactnas.core.errors import ConfigError
    from compactnas.search.workflows.distill import DistillConfig
    from compactnas.search.workflows.retrain import RetrainConfig

    assert DistillConfig(init="inherited").init == "inherited"
    for make in (DistillConfig, RetrainConfig):
        with pytest.raises(ConfigError, match="unknown --init 'warm'"):
            make(init="warm")


def test_distill_starts_from_the_inherited_weights(searched, tmp_path):
    teachers = tmp_path / "teachers"
    assert main(["teacher", "--data", "digits", "--out", str(teachers), "--epochs", "1"]) == 0
    (ckpt,) = teachers.glob("teacher-digits-*.pt")
    argv = ["distill", str(searched.out_dir), "--device", "rpi4", "--top", "1", "--seeds", "1",
            "--epochs", "1", "--teacher", str(ckpt), "--init", "inherited", "-q"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((searched.out_dir / "devices" / "rpi4" / "distill.json").read_text())
    (m,) = report["models"]
    best = max(searched.summary["devices"]["rpi4"]["pareto"], key=lambda r: r["accuracy"])
    assert report["settings"]["init"] == "inherited" and m["arch"] == best["arch"]
    assert (
        len(m["distilled"]["accuracy"]["values"]) == len(m["baseline"]["accuracy"]["values"]) == 1
    )


def test_pruning_ratios_map_to_hidden_width_choices():
    space = ElasticSpace.for_image(8)
    base = (
        "stem_k3_s1_c8-ir_r1_k3_s1_e{}_c8{}-ir_r1_k3_s2_e3_c16_wb4_ab8-ir_r1_k3_s2_e3_c24-head_c0"
    )
    for e, keys, mapped in ((6, "_pr0.5", 3), (6, "_pr0.25", 4), (4, "_pr0.75", 3), (6, "", 6),
                            (4, "_pr0.25_wb8", 3)):  # fmt: skip
        assert str(space.subnetwork(base.format(e, keys))) == base.format(mapped, "").replace(
            "_wb4_ab8", ""
        )


def test_a_compressed_supernet_search_scores_the_mapped_sub_network(supernet, tmp_path, digits,
                                                                    capsys):  # fmt: skip
    from compactnas.evaluators.supernet import SupernetEvaluator
    from compactnas.spaces import parse_arch

    cfg = SearchConfig(supernet=str(supernet), compress=True, device="rpi4", trials=12, workers=1,
                       out=str(tmp_path / "s"), sampler="random")  # fmt: skip
    result = run_search(cfg, data=digits, quiet=True)
    done = result.trials[result.trials.state == "COMPLETE"]
    assert len(done) == 12
    pruned = [r for r in done.itertuples() if "_pr" in r.arch]
    assert pruned
    space = ElasticSpace.for_image(8)
    ev = SupernetEvaluator(folder=str(supernet))
    for r in pruned:
        m = ev.evaluate(None, parse_arch(str(space.subnetwork(r.arch))), digits)
        assert m["cached"] == 1.0 and m["accuracy"] == pytest.approx(r.accuracy, abs=1e-12)
    out = str(tmp_path / "s")
    best = max(result.summary["pareto"], key=lambda r: r["accuracy"])
    assert str(parse_arch(best["arch"]).without_compression()) != best["arch"]
    capsys.readouterr()
    assert main(["export", out, "--trial", str(best["trial"]), "--format", "onnx",
                 "--no-mlflow"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "compressed candidate" in err and len(err.splitlines()) == 1
    assert main(["retrain", out, "--top", "1", "--epochs", "2", "--init", "inherited", "-q"]) == 0
    report = json.loads((tmp_path / "s" / "retrained" / "retrain-inherited.json").read_text())
    (m,) = report["models"]
    assert m["arch"] == best["arch"] and m["init"] == "inherited"
    # Once fine-tuned, the compressed trial exports like any other.
    assert main(["export", out, "--trial", str(best["trial"]), "--format", "onnx", "--no-mlflow",
                 "-q"]) == 0  # fmt: skip
