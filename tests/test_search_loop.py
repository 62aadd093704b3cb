"""The one search loop: the same outcomes on both backends, evaluators by name, --resume without a study."""

import json

import pytest
from mlflow.tracking import MlflowClient

from compactnas.cli import main
from compactnas.search import SearchConfig, run_search
from compactnas.spaces import parse_arch, register_space, unregister_space

GOOD = (
    "stem_k3_s1_c8-ds_r1_k3_s1_e1_c8-head_c16",
    "stem_k3_s1_c8-ir_r1_k3_s2_e2_c16-head_c16",
)
BROKEN = (
    "stem_k3_s1_c8-zz_r1_k3_s1_e1_c8-head_c16"  # no block kind 'zz': the worker cannot build it
)


class _Tiny:
    """Four choices by trial number: two good strings, a sampling failure and a string that crashes."""

    name = "test-tiny"

    def sample(self, trial):
        trial.suggest_categorical("i", [0, 1, 2, 3])
        pick = trial.number % 4
        if pick == 2:
            raise RuntimeError("this space cannot propose a candidate")
        return parse_arch(GOOD[pick]) if pick < 2 else _Unbuildable()


class _Unbuildable:
    def __str__(self):
        return BROKEN


@pytest.fixture
def tiny_space():
    register_space("test-tiny")(lambda **kw: _Tiny())
    yield "test-tiny"
    unregister_space("test-tiny")


@pytest.fixture
def own_ray():
    """A Ray instance of this test's own (its own GCS port); shut down without touching any other. It
    declares two logical GPUs (Ray hands them out and sets CUDA_VISIBLE_DEVICES; no CUDA is needed)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already connected in this process")
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# Trials 0..7 pick GOOD[0], GOOD[1], a sampling failure, BROKEN, then the same again: 4 and 5 repeat 0
# and 1 (their results are reused), 6 fails to sample, 7 crashes again.
EXPECTED_STATES = ["COMPLETE", "COMPLETE", "FAIL", "FAIL", "COMPLETE", "COMPLETE", "FAIL", "FAIL"]
EXPECTED_RUNS = {  # trial -> (status, duplicate_of); trials that failed to sample have no run
    "0": ("FINISHED", None), "1": ("FINISHED", None), "3": ("FAILED", None),
    "4": ("FINISHED", "0"), "5": ("FINISHED", "1"), "7": ("FAILED", None),
}  # fmt: skip
TRIAL_COLUMNS = {
    "trial", "state", "arch", "accuracy", "test_accuracy", "latency_ms", "size_bytes", "params",
    "macs", "epochs", "train_loss", "stopped_early", "train_seconds", "error", "duplicate_of",
    "duration_s",
}  # fmt: skip
SUMMARY_KEYS = {
    "n_trials", "n_complete", "n_failed", "n_infeasible", "n_stopped_early", "objectives",
    "hypervolume", "hypervolume_reference", "pareto", "config", "data", "device", "backend",
    "elapsed_s", "mlflow",
}  # fmt: skip


@pytest.mark.parametrize(
    "backend", ["local", pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])]
)
def test_both_backends_record_the_same_outcomes(backend, tmp_path, digits, tiny_space, request):
    if backend == "ray":
        request.getfixturevalue("own_ray")
    cfg = SearchConfig(
        out=str(tmp_path), space=tiny_space, trials=8, epochs=1, sampler="random", seed=0,
        backend=backend, workers=2, concurrency=2, gpus_per_trial=0.5 if backend == "ray" else 0.0,
    )  # fmt: skip
    r = run_search(cfg, data=digits, quiet=True)
    rows = r.trials.sort_values("trial")
    assert len(rows) == 8
    assert rows["state"].tolist() == EXPECTED_STATES
    assert set(rows.columns) == TRIAL_COLUMNS
    assert set(json.loads((tmp_path / "summary.json").read_text())) == SUMMARY_KEYS
    assert (r.summary["n_complete"], r.summary["n_failed"]) == (4, 4)
    errors = rows.set_index("trial")["error"]
    assert "sampling failed" in errors[2] and "sampling failed" in errors[6]
    assert "zz" in errors[3] and "zz" in errors[7]
    # A repeat reuses the first result: same values, and only the first one trained a checkpoint.
    dup = rows.set_index("trial")["duplicate_of"]
    assert (dup[4], dup[5]) == (0, 1)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["trial_0.pt", "trial_1.pt"]
    client = MlflowClient(r.summary["mlflow"]["tracking_uri"])
    runs = client.search_runs(
        [client.get_experiment_by_name("compactnas").experiment_id], max_results=100
    )
    parents = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    assert len(parents) == 1 and parents[0].info.run_id == r.summary["mlflow"]["run_id"]
    children = [x for x in runs if "mlflow.parentRunId" in x.data.tags]
    assert children
    layout = {
        c.data.params["trial"]: (c.info.status, c.data.tags.get("compactnas.duplicate_of"))
        for c in children
    }
    assert layout == EXPECTED_RUNS
    assert all("accuracy" in c.data.metrics for c in children if c.info.status == "FINISHED")
    if backend == "ray":  # each trial asked Ray for half a GPU and saw the one Ray gave it
        gpus = [c.data.tags.get("compactnas.cuda_visible_devices") for c in children
                if c.data.tags.get("compactnas.duplicate_of") is None]  # fmt: skip
        assert gpus and all(g in ("0", "1") for g in gpus), gpus


class _Lookup:
    """A one-file evaluator: it trains nothing and scores a candidate by its string."""

    name = "test-lookup"
    trains = False

    def __init__(self, *, options=None, **_):
        self.options = options or {}

    def evaluate(self, model, spec, data, *, report=None):
        return {"accuracy": 0.5 + 0.01 * (len(str(spec)) % 10), "latency_ms": 1.25}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_registered_evaluator_runs_a_search(workers, tmp_path, digits):
    cfg = SearchConfig(
        out=str(tmp_path),
        evaluator="test-lookup",
        trials=3,
        epochs=1,
        population=4,
        workers=workers,
    )
    r = run_search(cfg, data=digits, quiet=True)
    assert r.summary["n_complete"] == 3
    done = r.trials[r.trials.state == "COMPLETE"]
    assert len(done) == 3
    assert set(done["latency_ms"]) == {1.25}  # the evaluator's measured latency replaces the host's
    assert not (tmp_path / "checkpoints").exists()  # trains=False: nothing to checkpoint


class _Pause(_Lookup):
    """Scores like test-lookup, after a pause long enough for the search to propose ahead."""

    name = "test-pause"

    def evaluate(self, model, spec, data, *, report=None):
        import time

        time.sleep(0.3)
        return super().evaluate(model, spec, data, report=report)


@pytest.mark.slow
def test_a_freed_worker_gets_a_candidate_proposed_while_it_trained(tmp_path, digits, monkeypatch):
    from compactnas.search.loop import SearchLoop

    original = SearchLoop.propose
    running_at_ask: list[int] = []

    def propose(self):
        running_at_ask.append(len(self.in_flight))
        return original(self)

    monkeypatch.setattr(SearchLoop, "propose", propose)
    cfg = SearchConfig(out=str(tmp_path), evaluator="test-pause", trials=6, population=4, workers=2)
    r = run_search(cfg, data=digits, quiet=True)
    assert running_at_ask
    # Asked with both workers training: one worker alone never asks with two candidates in flight.
    assert max(running_at_ask) == 2
    assert r.summary["n_complete"] == 6
    assert set(r.trials["state"]) == {"COMPLETE"}  # every candidate proposed ahead was run


def test_unknown_evaluator_is_one_line(capsys):
    assert main(["search", "--evaluator", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown evaluator 'nope'" in err[0]


def test_resume_without_a_study_is_one_line(tmp_path, capsys):
    assert main(["search", "--resume", "--out", str(tmp_path / "none"), "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to resume" in err[0]
    assert not (tmp_path / "none" / "study.db").exists()


class _Nan:
    name = "test-nan"
    trains = False

    def __init__(self, **_):
        pass

    def evaluate(self, model, spec, data, *, report=None):
        return {"accuracy": float("nan")}


def test_evaluator_result_breaking_the_contract_fails_the_trial(tmp_path, digits):
    r = run_search(
        SearchConfig(out=str(tmp_path), evaluator="test-nan", trials=2, population=4, workers=1),
        data=digits,
        quiet=True,
    )
    assert r.summary["n_failed"] == 2
    assert len(r.trials) == 2 and all("accuracy is nan" in e for e in r.trials["error"])


def test_resume_on_another_store_says_so_and_relogs(tmp_path, digits, capfd):
    def runs(uri):
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("compactnas")
        return client.search_runs([exp.experiment_id], max_results=100)

    base = dict(out=str(tmp_path / "s"), evaluator="test-lookup", population=4, workers=1)
    first = run_search(SearchConfig(trials=2, **base), data=digits, quiet=True)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    second = run_search(
        SearchConfig(trials=3, resume=True, tracking_uri=other, **base), data=digits, quiet=True
    )
    err = capfd.readouterr().err
    assert "is not in" in err and "logged the study's trials" in err
    assert second.summary["mlflow"]["run_id"] != first.summary["mlflow"]["run_id"]
    moved = runs(other)
    parents = [r for r in moved if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in moved if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and children
    assert sorted(int(c.data.params["trial"]) for c in children) == [0, 1, 2]
    # The first store keeps its one search run: nothing was started there behind the user's back.
    assert (
        len(
            [
                r
                for r in runs(first.summary["mlflow"]["tracking_uri"])
                if "mlflow.parentRunId" not in r.data.tags
            ]
        )
        == 1
    )


def test_a_time_budget_stops_new_candidates_and_finishes_running_ones(tmp_path, digits, capsys):
    # 0.3 s per candidate: 200 would take a minute; the budget lets a few seconds' worth start.
    cfg = SearchConfig(out=str(tmp_path), evaluator="test-pause", trials=200, population=4,
                       workers=2, time_budget=0.05)  # fmt: skip
    r = run_search(cfg, data=digits, quiet=True)
    started = sorted(t.datetime_start for t in r.study.trials)
    # Every candidate started within the 3 s budget (1 s of slack for a busy machine) ...
    assert (started[-1] - started[0]).total_seconds() <= 0.05 * 60 + 1.0
    # ... so at most what two workers start in it at 0.3 s a candidate (plus one each at the edge).
    assert 1 <= r.summary["n_complete"] <= 2 * (3.0 / 0.3 + 1) + 2
    assert set(r.trials["state"]) == {"COMPLETE"}  # nothing started was left unfinished
    assert main(["search", "--time-budget", "-1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "time_budget must be a positive number" in err and len(err.splitlines()) == 1


@pytest.fixture(autouse=True)
def _evaluators(evaluator_for_test):
    """The one-file evaluators above, registered for each test and removed after it."""
    for name, factory in (("test-lookup", _Lookup), ("test-pause", _Pause), ("test-nan", _Nan)):
        evaluator_for_test(name, factory)
