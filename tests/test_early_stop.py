import pandas as pd
import pytest

from compactnas.search import SearchConfig, run_search
from compactnas.search.early_stop import SuccessiveHalving


def test_rungs_and_decisions():
    sh = SuccessiveHalving(grace=2, rate=3, max_epochs=20)
    assert sh.rungs == [2, 6, 18]
    assert not sh.should_stop(1, 0.1)  # not a rung
    # Fewer than `rate` records at a rung: everyone goes on.
    assert not sh.should_stop(2, 0.50)
    assert not sh.should_stop(2, 0.40)
    # Third record: the best third (one of three) goes on, so 0.45 < 0.50 stops...
    assert sh.should_stop(2, 0.45)
    # ...and a new best goes on.
    assert not sh.should_stop(2, 0.90)


def test_history_from_earlier_trials_counts():
    sh = SuccessiveHalving(grace=1, rate=2, max_epochs=4, history={1: [0.8, 0.9]})
    assert sh.should_stop(1, 0.5)
    record = {}
    report = sh.reporter(record)
    assert report(1, 0.95) is False and record == {1: 0.95}


@pytest.mark.slow
def test_search_with_early_stopping(tmp_path, digits):
    cfg = SearchConfig(
        out=str(tmp_path),
        trials=8,
        epochs=4,
        population=4,
        early_stop=True,
        grace_epochs=1,
        halving_rate=2,
    )
    r = run_search(cfg, data=digits, quiet=True)
    s = r.summary
    assert s["n_complete"] + s["n_stopped_early"] + s["n_failed"] + s["n_infeasible"] == 8
    trials = r.study.trials
    assert len(trials) == 8
    stopped = [t for t in trials if "stopped_early" in t.user_attrs]
    # Successive halving acted: at least one candidate stopped before its last epoch...
    assert stopped and s["n_stopped_early"] == len(stopped)
    for t in stopped:
        assert t.user_attrs["stopped_early"] < 4 and t.user_attrs["rungs"]
    # ...and no stopped candidate joins the front.
    front = {f["trial"] for f in s["pareto"]}
    assert front and not front & {t.number for t in stopped}
    assert not set(pd.read_csv(tmp_path / "pareto.csv")["trial"]) & {t.number for t in stopped}
    # Every trained trial recorded its accuracy at the first rung, for later decisions and resumes.
    trained = [
        t for t in trials if t.user_attrs.get("metrics") and "duplicate_of" not in t.user_attrs
    ]
    assert trained and all("rungs" in t.user_attrs for t in trained)
