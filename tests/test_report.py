"""benchmarks/report.py renders from whatever results exist; baselines.py's dominance verdicts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report():
    return _load("report")


@pytest.fixture(scope="module")
def baselines():
    return _load("baselines")


def _found(trial, acc, lat, size=40_000):
    return {
        "kind": "found", "name": f"trial {trial}", "trial": trial,
        "arch": "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-head_c0", "accuracy": acc, "test_accuracy": acc,
        "params": size // 4, "size_bytes": size, "macs": 12_345, "latency_ms": lat,
        "latency_p10_ms": lat * 0.9, "search_latency_ms": lat, "predicted_ms": {"rpi4": lat / 2},
        "train_loss": 0.25,
    }  # fmt: skip


def _baseline(name, acc, lat, verdict, size=1_600_000):
    return {
        "kind": "baseline", "name": name, "accuracy": acc, "test_accuracy": acc,
        "params": size // 4, "size_bytes": size, "macs": 400_000, "latency_ms": lat,
        "latency_p10_ms": lat * 0.9, "predicted_ms": {"rpi4": lat / 2}, "verdict": verdict,
        "verdict_p10": verdict, "verdict_predicted": {"rpi4": verdict}, "train_loss": 2.25,
    }  # fmt: skip


def test_dominance_on_hand_made_points(baselines):
    a = {"test_accuracy": 0.97, "latency_ms": 0.5}
    assert baselines.dominates(a, {"test_accuracy": 0.96, "latency_ms": 0.5})  # more accurate
    assert baselines.dominates(a, {"test_accuracy": 0.97, "latency_ms": 0.6})  # faster
    assert not baselines.dominates(a, {"test_accuracy": 0.97, "latency_ms": 0.5})  # equal
    assert not baselines.dominates(a, {"test_accuracy": 0.98, "latency_ms": 4.0})  # trade-off

    found = [
        {"trial": 1, "test_accuracy": 0.95, "latency_ms": 0.3},
        {"trial": 2, "test_accuracy": 0.97, "latency_ms": 0.8},
        {"trial": 3, "test_accuracy": 0.99, "latency_ms": 2.0},
    ]
    v = baselines.verdict({"test_accuracy": 0.96, "latency_ms": 3.0}, found)
    assert v["dominated"] and v["dominated_by"] == [2, 3]
    assert v["best"]["trial"] == 3
    assert v["best"]["accuracy_gain_points"] == pytest.approx(3.0)
    assert v["best"]["speedup"] == pytest.approx(1.5)

    # 0.995 at 1.0 ms: the best found model as fast (trial 2, 0.97) trails by 2.5 points, and no
    # found model is as accurate.
    v = baselines.verdict({"test_accuracy": 0.995, "latency_ms": 1.0}, found)
    assert not v["dominated"] and v["dominated_by"] == []
    assert v["accuracy_lead_points"] == pytest.approx(2.5)
    assert v["latency_lead_ratio"] is None

    # 0.9 at 0.2 ms: faster than every found model; the fastest as accurate (trial 1) is 1.5x slower.
    v = baselines.verdict({"test_accuracy": 0.90, "latency_ms": 0.2}, found)
    assert not v["dominated"]
    assert v["accuracy_lead_points"] is None
    assert v["latency_lead_ratio"] == pytest.approx(1.5)


def test_report_renders_from_synthetic_results(tmp_path, report, baselines):
    results = tmp_path / "results"
    results.mkdir()
    found = [_found(3, 0.9721, 0.412), _found(7, 0.9833, 0.871)]
    beaten = _baseline("mobilenetv2_035", 0.9499, 3.9, baselines.verdict(
        {"test_accuracy": 0.9499, "latency_ms": 3.9}, found))  # fmt: skip
    leader = _baseline("lcnet_050", 0.9944, 3.1, baselines.verdict(
        {"test_accuracy": 0.9944, "latency_ms": 3.1}, found))  # fmt: skip
    beaten["longer_training"] = {
        "epochs": 20, "test_accuracy": 0.9861, "train_loss": 0.5,
        "verdict": baselines.verdict({"test_accuracy": 0.9861, "latency_ms": 3.9}, found),
    }  # fmt: skip
    teacher = {
        "kind": "teacher", "name": "resnet10t", "params": 4_900_000, "size_bytes": 19_600_000,
        "macs": 10**8, "latency_ms": 8.25, "latency_p10_ms": 8.0, "predicted_ms": {"rpi4": 4.0},
    }  # fmt: skip
    (results / "baselines.json").write_text(json.dumps({
        "benchmark": "baselines", "mode": "quick",
        "settings": {"trials": 11, "epochs": 5, "seeds": [0]},
        "fairness_note": "same 8x8 data on both sides",
        "machine": {"cpu": "test cpu", "cores": 2, "load_avg_start": 1.0, "load_avg_end": 1.5},
        "runs": [{
            "seed": 0, "train_config": {"epochs": 5, "seed": 0}, "data": {"num_classes": 10},
            "search": {"n_trials": 11, "n_complete": 10, "hypervolume": 0.6123, "seconds": 42.0},
            "predictor_check": {"n": 2, "max_relative_difference": 0.0},
            "models": [*found, beaten, leader, teacher],
        }],
        "summary": {"mobilenetv2_035": {"seeds": 1, "dominated": 1, "dominated_p10": 1}},
        "elapsed_s": 90.0,
    }))  # fmt: skip
    (results / "search_quality.json").write_text(json.dumps({
        "settings": {"trials": 12, "epochs": 3, "seeds": 2},
        "reference_point": {"error": 1.0, "latency_ms": 2.0, "size_bytes": 1e6},
        "default_sampler": "guided",
        "samplers": {
            "guided": {"hypervolume_mean": 0.7311, "hypervolume_std": 0.01, "candidates_per_min_mean": 9.0},
            "random": {"hypervolume_mean": 0.6502, "hypervolume_std": 0.02, "candidates_per_min_mean": 9.5},
        },
        "hypervolume_ratio_default_over_random": 1.1244,
        "verdict": {"lead": 0.0809, "spread": 0.02, "ahead_by_more_than_spread": True},
        "runs": [
            {"sampler": s, "seed": k, "hypervolume": 0.7 - 0.05 * (s == "random"), "n_complete": 12,
             "best_accuracy": 0.97, "elapsed_s": 60.0}
            for s in ("guided", "random") for k in (0, 1)
        ],
    }))  # fmt: skip
    (results / "ray_scaling.json").write_text("{not json")
    out = tmp_path / "REPORT.md"

    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    text = out.read_text()

    assert "Not run (no `compression.json`)" in text
    assert "Not run (no `latency_fidelity.json`)" in text
    assert "Not run (no `ray_scaling.json`)" in text  # invalid JSON counts as not run
    assert "## Against the teacher" in text
    # Numbers come from the files.
    assert "97.21%" in text and "0.412" in text and "3.900" in text
    assert "guided (the default) / random: 1.124." in text and "0.7311 ± 0.0100" in text
    assert "Lead over random: 0.0809, more than the spread over seeds" in text
    assert "hypervolume 0.612" in text
    # Verdicts: mobilenetv2_035 is beaten by both found models; lcnet_050 leads by 1.11 points over
    # the best found model at least as fast (trial 7) and no found model is as accurate.
    assert "`mobilenetv2_035`: yes, by trial(s) 3, 7" in text
    assert "leads the best found model at least as fast by 1.11 points" in text
    assert "no found model is as accurate" in text
    assert "found models 0.250 to 0.250, baselines 2.250 to 2.250" in text
    assert "ln 10 = 2.303" in text
    # The budget check: 98.61% at 20 epochs; trial 7 (98.33%) no longer dominates, trial 3 is faster.
    assert "| `mobilenetv2_035` | 20 | 98.61% | 0.500 | no: leads" in text
    assert "Versions: python" in text and "timm" in text
    times = next(line for line in text.splitlines() if line.startswith("Recorded run times: "))
    assert "search_quality 4.0 min" in times and "baselines 1.5 min" in times
    assert "python benchmarks/run_all.py` without `--quick`" in text
    assert (results / "baselines_front.png").stat().st_size > 0
    assert (results / "search_quality_hv.png").stat().st_size > 0


def test_report_with_no_results(tmp_path, report):
    results = tmp_path / "empty"
    results.mkdir()
    out = tmp_path / "R.md"
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("Not run") == len(
        report.SECTIONS
    )  # every section; teacher reads compression.json
    assert "Present: none" in text


def test_report_missing_folder_is_one_line(tmp_path, report, capsys):
    assert report.main(["--results", str(tmp_path / "nope"), "--out", str(tmp_path / "R.md")]) == 2
    assert "no results folder" in capsys.readouterr().err


def test_results_are_on_disk_after_every_assignment(tmp_path):
    results = _load("_results")
    path = tmp_path / "sub" / "bench.json"
    res = results.Results(path, {"benchmark": "x"})
    stamp = {"commit": results.commit(), "host": json.loads(path.read_text())["host"]}
    assert json.loads(path.read_text()) == {"complete": False, "benchmark": "x", **stamp}
    assert len(stamp["commit"].split("-")[0]) == 40  # the checkout's commit, dirty or not
    res["runs"] = [1]
    assert json.loads(path.read_text())["runs"] == [1]
    res["runs"].append(2)  # a change inside a value is written on save()
    res.save()
    res.update(ratio=0.5)
    assert json.loads(path.read_text()) == {
        "complete": False, "benchmark": "x", "runs": [1, 2], "ratio": 0.5, **stamp
    }  # fmt: skip
    res.finish()
    assert json.loads(path.read_text())["complete"] is True
    assert sorted(p.name for p in path.parent.iterdir()) == ["bench.json"]  # no temporaries left
    # A resumed run starts from what the file holds (a stopped benchmark keeps its measurements).
    again = results.Results(path, {"benchmark": "x"}, resume=True)
    assert again["runs"] == [1, 2] and again["complete"] is False
    assert results.Results(path, {"benchmark": "x"}).get("runs") is None  # without resume: anew


def test_results_keep_the_benchmarks_host_and_refuse_its_own_complete(tmp_path):
    results = _load("_results")
    res = results.Results(tmp_path / "a.json", {"host": {"torch": "2"}})
    assert res["host"]["torch"] == "2" and "machine" in res["host"]  # stamp added, nothing lost
    assert results.Results(tmp_path / "b.json", {"host": "a CPU"})["host"] == "a CPU"
    with pytest.raises(KeyError):  # ray_scaling's counts once went there, and finish() ate them
        res.update(complete={"local": 16})
    res.finish()
    assert json.loads((tmp_path / "a.json").read_text())["complete"] is True


def test_ray_section_reads_completed_trials_and_the_older_complete_key(tmp_path, report):
    results = tmp_path / "r"
    results.mkdir()
    for key, value in (("completed_trials", 7), ("complete", 9)):
        doc = {"wall_s": {"local": 1.0}, key: {"local": value}}
        (results / "ray_scaling.json").write_text(json.dumps({**doc, "commit": "c"}))
        assert report.main(["--results", str(results), "--out", str(tmp_path / "R.md")]) == 0
        assert f"| local | 1.0 | {value} |" in (tmp_path / "R.md").read_text()


def test_report_sections_are_one_line_each(report):
    """Every section named in SECTIONS resolves to a function, and each results file is loaded."""
    assert report.SECTIONS
    for name, target in report.SECTIONS:
        assert name in report.BENCHMARKS
        assert callable(report._section(target))


def test_a_broken_section_costs_only_itself(tmp_path, report, monkeypatch):
    results = tmp_path / "r"
    results.mkdir()
    (results / "ray_scaling.json").write_text(json.dumps({"wall_s": "not a dict of numbers"}))
    out = tmp_path / "R.md"
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Could not render this section" in text and "ray.py line" in text
    assert "## Note: found models against hand-designed baselines on 8x8 digits" in text
