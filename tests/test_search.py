"""End-to-end searches with a real Optuna SQLite storage and a real MLflow SQLite store."""

import json

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from compactnas.core.data import Dataset, Split
from compactnas.core.errors import ConfigError
from compactnas.search import SearchConfig, run_search
from compactnas.search.results import hypervolume, non_dominated
from compactnas.spaces import register_space, unregister_space
from compactnas.spaces.mobile import MobileSpace

SMALL = dict(trials=5, epochs=2, population=4, seed=0)


def _mlflow_runs(summary):
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    exp = client.get_experiment_by_name("compactnas")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [
        r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary["mlflow"]["run_id"]
    ]
    return parents, children


@pytest.fixture(scope="module")
def small_search(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("search")
    return run_search(SearchConfig(out=str(out), **SMALL), data=digits, quiet=True)


def test_outputs_written(small_search):
    out = small_search.out_dir
    for name in ("study.db", "mlflow.db", "pareto.csv", "pareto.png", "summary.json", "trials.csv"):
        assert (out / name).is_file(), name
    s = json.loads((out / "summary.json").read_text())
    for key in ("n_trials", "n_complete", "n_failed", "objectives", "hypervolume", "pareto"):
        assert key in s
    assert s["n_trials"] == 5 and s["n_complete"] + s["n_failed"] + s["n_infeasible"] == 5
    assert 0 < s["hypervolume"] <= 1
    assert [o["name"] for o in s["objectives"]] == ["accuracy", "latency", "size"]
    assert s["pareto"], "a search with completed trials has a front"
    row = s["pareto"][0]
    for key in (
        "trial",
        "arch",
        "accuracy",
        "test_accuracy",
        "latency_ms",
        "size_bytes",
        "params",
        "macs",
    ):
        assert key in row
    csv = pd.read_csv(out / "pareto.csv")
    assert list(csv["arch"]) == [r["arch"] for r in s["pareto"]]
    # Each front model's weights are kept for export and distillation.
    for r in s["pareto"]:
        ckpt = torch.load(out / "checkpoints" / f"trial_{r['trial']}.pt", weights_only=True)
        assert ckpt["arch"] == r["arch"]


def test_front_is_mutually_non_dominated(small_search):
    s = small_search.summary
    pts = np.array([[1 - r["accuracy"], r["latency_ms"], r["size_bytes"]] for r in s["pareto"]])
    assert len(pts) and non_dominated(pts).all()
    # ...and every completed trial is on the front or dominated by a front member.
    t = small_search.trials[small_search.trials.state == "COMPLETE"]
    assert len(t) >= len(pts)
    front_archs = {r["arch"] for r in s["pareto"]}
    for _, row in t.iterrows():
        p = np.array([1 - row.accuracy, row.latency_ms, row.size_bytes])
        assert row.arch in front_archs or any(np.all(f <= p) and np.any(f < p) for f in pts)


def test_mlflow_has_one_parent_and_a_child_per_trial(small_search):
    parents, children = _mlflow_runs(small_search.summary)
    assert len(parents) == 1
    assert len(children) == small_search.summary["n_trials"]
    assert {c.data.params["arch"] for c in children} >= {
        r["arch"] for r in small_search.summary["pareto"]
    }
    done = [c for c in children if "accuracy" in c.data.metrics]
    assert done and all(c.info.status == "FINISHED" for c in done)
    assert parents[0].data.params["space"] == "mobile"
    assert "hypervolume" in parents[0].data.metrics


def test_study_holds_every_trial(small_search):
    out = small_search.out_dir
    study = optuna.load_study(study_name="compactnas", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 5
    assert all(t.user_attrs.get("arch") for t in study.trials)


@pytest.mark.slow
def test_rerun_without_resume_refuses_and_resume_extends(tmp_path, digits):
    # A search of its own: resuming extends it, which the shared search's other tests must not see.
    out = tmp_path / "search"
    first = run_search(SearchConfig(out=str(out), **SMALL), data=digits, quiet=True)
    with pytest.raises(ConfigError, match="--resume"):
        run_search(SearchConfig(out=str(out), **SMALL), data=digits, quiet=True)
    before = {t.number: t.values for t in first.study.trials if t.values}
    assert before
    more = run_search(
        SearchConfig(out=str(out), resume=True, **{**SMALL, "trials": 7}), data=digits, quiet=True
    )
    assert more.summary["n_trials"] == 7
    after = {t.number: t.values for t in more.study.trials if t.values}
    assert all(after[k] == v for k, v in before.items())
    parents, children = _mlflow_runs(more.summary)
    assert len(parents) == 1 and len(children) == 7


@pytest.mark.parametrize(
    "key,value",
    [("space", "squeeze"), ("evaluator", "compress"), ("lr", 0.05), ("optimizer", "sgd"),
     ("subset", 100), ("label_smoothing", 0.0)],
)  # fmt: skip
def test_resume_with_other_settings_is_refused(small_search, digits, key, value):
    # Accuracies of two evaluators, recipes or subsets would be mixed in one study.
    cfg = SearchConfig(out=str(small_search.out_dir), resume=True, **{**SMALL, key: value})
    with pytest.raises(ConfigError, match=f"different settings \\({key}: .* -> {value!r}\\)$"):
        run_search(cfg, data=digits, quiet=True)


def test_infeasible_candidates_are_not_trained(tmp_path, digits):
    r = run_search(
        SearchConfig(out=str(tmp_path), max_size_kb=1.0, **SMALL), data=digits, quiet=True
    )
    assert r.summary["n_infeasible"] == 5 and r.summary["n_complete"] == 0
    assert not (tmp_path / "checkpoints").exists()
    t = r.study.trials[0]
    assert t.state == optuna.trial.TrialState.PRUNED and "size" in t.user_attrs["infeasible"]
    assert t.system_attrs  # the constraint is recorded for the sampler


def test_diverging_trials_fail_and_the_search_survives(tmp_path, digits):
    x = digits.train.x.clone()
    x[0] = float("nan")
    bad = Dataset(
        name="nan-digits",
        train=Split(x, digits.train.y),
        val=digits.val,
        test=digits.test,
        num_classes=10,
        classes=digits.classes,
    )
    r = run_search(SearchConfig(out=str(tmp_path), **{**SMALL, "trials": 3}), data=bad, quiet=True)
    assert r.summary["n_failed"] == 3 and r.summary["pareto"] == []
    errors = r.trials["error"].tolist()
    assert len(errors) == 3 and all("TrialDiverged" in e for e in errors)
    parents, children = _mlflow_runs(r.summary)
    assert {c.info.status for c in children} == {"FAILED"}


class _Flaky(MobileSpace):
    def sample(self, trial):
        spec = super().sample(trial)
        if trial.number % 2 == 1:
            raise RuntimeError("this candidate cannot be built")
        return spec


@pytest.fixture
def flaky_space():
    # Registered only while the test runs: the contract tests over every registered space must not see it.
    register_space("test-flaky")(lambda **kw: _Flaky(**kw))
    yield "test-flaky"
    unregister_space("test-flaky")


def test_crashing_trials_fail_and_others_complete(tmp_path, digits, flaky_space):
    r = run_search(
        SearchConfig(out=str(tmp_path), space="test-flaky", **SMALL), data=digits, quiet=True
    )
    assert r.summary["n_failed"] == 2 and r.summary["n_complete"] == 3
    assert len(r.summary["pareto"]) >= 1


def test_hypervolume_known_values():
    ref = np.array([1.0, 1.0])
    assert hypervolume(np.array([[0.5, 0.5]]), ref) == pytest.approx(0.25)
    assert hypervolume(np.array([[0.0, 0.5], [0.5, 0.0]]), ref) == pytest.approx(0.75)
    assert hypervolume(np.array([[2.0, 0.5]]), ref) == 0.0
    assert hypervolume(np.array([[0.5, 0.5, 0.5]]), np.array([2.0, 2.0, 2.0])) == pytest.approx(
        27 / 64
    )


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_other_samplers(tmp_path, digits, sampler):
    r = run_search(
        SearchConfig(out=str(tmp_path), sampler=sampler, **{**SMALL, "trials": 3}),
        data=digits,
        quiet=True,
    )
    assert r.summary["n_complete"] == 3
    names = {"tpe": "TPESampler", "random": "RandomSampler"}
    assert type(r.study.sampler).__name__ == names[sampler]  # the study ran the sampler asked for


def test_search_for_a_microcontroller_keeps_only_what_fits(tmp_path, digits):
    from compactnas.hw_profiles import create_latency_model, load_profile

    cfg = SearchConfig(
        out=str(tmp_path), device="stm32f746", objectives=("accuracy", "latency", "sram"), **SMALL
    )
    r = run_search(cfg, data=digits, quiet=True)
    limits = load_profile("stm32f746").memory
    model = create_latency_model("stm32f746")
    complete = r.trials[r.trials.state == "COMPLETE"]
    assert len(complete) >= 1
    for arch in complete.arch:
        assert model.fits(arch, digits.input_shape, num_classes=10) is None
        assert model.peak_sram_kb(arch, digits.input_shape) <= limits.sram_kb
        assert model.flash_kb(arch, digits.input_shape) <= limits.flash_kb
    assert len(r.trials) == 5
    for _, row in r.trials.iterrows():  # those that do not fit say why and were never trained
        if row.state == "INFEASIBLE":
            assert "KB" in row.error
            assert not (tmp_path / "checkpoints" / f"trial_{row.trial}.pt").exists()
    assert r.summary["device"] == "stm32f746"
    assert r.summary["pareto"] and all(
        "peak_sram_kb" in f and "energy_mj" in f for f in r.summary["pareto"]
    )


def test_objectives_a_device_cannot_score_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no figures for objective"):
        run_search(
            SearchConfig(out=str(tmp_path), device="rpi4", objectives=("accuracy", "sram")),
            quiet=True,
        )
