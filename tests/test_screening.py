"""--screen N: the sampler proposes N candidates, zero-cost proxies pick the one that is trained."""

import numpy as np
import optuna
import pandas as pd
import pytest

from compactnas.core.errors import ConfigError
from compactnas.search import SearchConfig, run_search
from compactnas.search.strategies import screening
from compactnas.search.strategies.screening import Screen, nondominated_first


def test_nondominated_first_keeps_the_samplers_order_unless_dominated():
    # Row 0 is beaten on vote and on cost by row 1; row 1 is the first no one dominates.
    assert nondominated_first([0.2, 0.9, 0.5], [[3.0], [1.0], [2.0]]) == 1
    # A trade-off (better vote, higher cost) does not dominate: the sampler's first stays.
    assert nondominated_first([0.2, 0.9], [[1.0], [5.0]]) == 0
    # Equal on everything: neither dominates the other.
    assert nondominated_first([0.5, 0.5], [[1.0, 2.0], [1.0, 2.0]]) == 0
    # Two costs: row 2 beats row 0 on both costs at the same vote.
    assert nondominated_first([0.4, 0.1, 0.4], [[2.0, 2.0], [1.0, 1.0], [1.0, 2.0]]) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"screen": -1}, "screen must be >= 0"),
        ({"screen": 4, "screen_batch": 1}, "screen_batch >= 2"),
        ({"screen": 4, "screen_proxies": "synflow,bogus"}, "bogus"),
        ({"screen": 4, "screen_pick": "best"}, "unknown screen_pick"),
    ],
)
def test_bad_screening_settings_are_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig(out=str(tmp_path), **kwargs)


def test_table_search_needs_images_for_the_proxies(tmp_path):
    with pytest.raises(ConfigError, match="--screen-data"):
        SearchConfig(
            out=str(tmp_path), space="nb201", data="table:t.csv", table_accuracy="a", screen=4
        )


@pytest.fixture
def scored_archs(monkeypatch):
    """The architectures whose proxies were computed (not read back from screened.csv)."""
    computed: list[str] = []
    original = screening.Screen.score

    def score(self, spec):
        if str(spec) not in self.rows:
            computed.append(str(spec))
        return original(self, spec)

    monkeypatch.setattr(screening.Screen, "score", score)
    return computed


@pytest.mark.slow  # a whole search: the full suite runs it
def test_screened_search_trains_the_proxies_pick_and_resumes(tmp_path, digits, scored_archs):
    out = tmp_path / "run"
    base = dict(
        out=str(out), epochs=1, population=4, screen=3, screen_batch=32, seed=3, device="rpi4"
    )
    first = run_search(SearchConfig(trials=4, **base), data=digits, quiet=True)
    rows = pd.read_csv(out / "screened.csv")
    assert {"arch", "synflow", "naswot", "meco", "latency_ms", "size_bytes"} <= set(rows.columns)
    assert len(set(rows.arch)) == len(scored_archs) and len(scored_archs) >= 4
    chosen = rows.dropna(subset=["chosen_for_trial"])
    trials = first.trials
    # Every trial was a screened pick, recorded beside its trial and in trials.csv.
    assert sorted(chosen.chosen_for_trial.astype(int)) == sorted(trials.trial)
    for _, t in trials.iterrows():
        assert t.arch == chosen[chosen.chosen_for_trial == t.trial].arch.item()
    assert trials.screen_vote.between(0, 1).all()
    for t in first.study.trials:
        record = t.user_attrs["screen"]
        assert 1 <= record["proposals"] <= 3 and 0 <= record["rank_in_proposals"] < 3
    assert "screen_vote" in pd.read_csv(out / "trials.csv").columns

    # A resumed search reads screened.csv back: nothing already scored is scored again.
    before = set(rows.arch)
    scored_archs.clear()
    second = run_search(SearchConfig(trials=6, resume=True, **base), data=digits, quiet=True)
    assert len(second.trials) == 6
    assert scored_archs and not set(scored_archs) & before
    again = pd.read_csv(out / "screened.csv").dropna(subset=["chosen_for_trial"])
    assert sorted(again.chosen_for_trial.astype(int)) == list(range(6))


def test_screened_pick_is_not_dominated_among_its_proposals(tmp_path, digits):
    # Replay each choice from screened.csv: at the time of a pick, the vote pool is every row
    # scored so far; the pick's vote is the one recorded on its trial, and no other proposal of
    # the same trial has a vote at least as high at costs no higher.
    out = tmp_path / "run"
    cfg = SearchConfig(
        out=str(out),
        trials=4,
        epochs=1,
        population=4,
        screen=4,
        screen_batch=32,
        device="rpi4",
        screen_pick="sampler",
    )
    result = run_search(cfg, data=digits, quiet=True)
    votes_of = dict(zip(result.trials.trial, result.trials.screen_vote, strict=True))
    rows = pd.read_csv(out / "screened.csv")
    proxies, costs = ["synflow", "naswot", "meco"], ["latency_ms", "size_bytes"]
    start, checked = 0, 0
    for end in rows.index[rows.chosen_for_trial.notna()]:
        pool = rows.loc[:end].drop_duplicates("arch", keep="first").set_index("arch")
        ranks = np.mean([pool[p].rank(method="average").to_numpy() - 1 for p in proxies], axis=0)
        vote = dict(zip(pool.index, ranks / max(len(pool) - 1, 1), strict=True))
        pick = rows.loc[end]
        assert vote[pick.arch] == pytest.approx(votes_of[int(pick.chosen_for_trial)], abs=1e-4)
        for _, o in rows.loc[start : end - 1].iterrows():
            no_worse = vote[o.arch] >= vote[pick.arch] and all(o[c] <= pick[c] for c in costs)
            better = vote[o.arch] > vote[pick.arch] or any(o[c] < pick[c] for c in costs)
            assert not (no_worse and better), (o.arch, pick.arch)
            checked += 1
        start = end + 1
    assert checked > 0  # some trial had proposals passed over


def test_screening_with_successive_halving(tmp_path, digits):
    cfg = SearchConfig(
        out=str(tmp_path), trials=3, epochs=2, population=4, screen=2, screen_batch=32,
        early_stop=True, grace_epochs=1, halving_rate=2,
    )  # fmt: skip
    r = run_search(cfg, data=digits, quiet=True)
    assert len(r.trials) == 3
    assert all("screen" in t.user_attrs for t in r.study.trials)
    assert r.summary["n_complete"] + r.summary["n_stopped_early"] == 3


def _screen_with(rows, objectives=("accuracy", "latency")):
    """A Screen over hand-made rows (one proxy), as if it had scored them itself."""
    from compactnas.search.objectives import resolve_objectives

    screen = Screen.__new__(Screen)
    screen.proxies, screen.costs, screen.rule = ["meco"], ["latency_ms"], "front"
    screen.rows = {a: {"meco": v, "latency_ms": lat} for a, (v, lat) in rows.items()}
    objs = resolve_objectives(list(objectives))
    screen.metrics = [o.metric for o in objs]
    screen.accuracy_at, screen.stand_in = 0, False
    return screen


def _trained(accuracy_of):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for arch, (acc, lat) in accuracy_of.items():
        study.add_trial(optuna.trial.create_trial(values=[acc, lat], user_attrs={"arch": arch}))
    return study


def test_front_rule_trains_the_proposal_predicted_to_grow_the_front():
    # Trained: accuracy rises with the proxy (meco); proposals: "gap" has a high proxy at a latency
    # the front has nothing good at, "slow" is predicted no better than what is already trained.
    trained = {f"t{i}": (0.5 + 0.05 * i, 10.0 + 5 * i) for i in range(6)}
    rows = {f"t{i}": (float(i), 10.0 + 5 * i) for i in range(6)}
    rows |= {"slow": (1.0, 40.0), "gap": (5.5, 12.0)}
    screen = _screen_with(rows)
    study = _trained(trained)
    votes = screen.votes(["slow", "gap"])
    assert screen._front_pick(study, ["slow", "gap"], votes) == 1
    assert screen._front_pick(study, ["gap", "slow"], votes[::-1]) == 0
    # Nothing predicted to improve the front: the sampler rule decides.
    assert screen._front_pick(study, ["slow"], votes[:1]) is None
    # Fewer than five trained: no line is fitted, the sampler rule decides.
    few = _trained(dict(list(trained.items())[:4]))
    assert screen._front_pick(few, ["slow", "gap"], votes) is None
    # Proxies that rank this search's candidates backwards give no prediction.
    backwards = _trained({f"t{i}": (0.8 - 0.05 * i, 10.0 + 5 * i) for i in range(6)})
    assert screen._front_pick(backwards, ["slow", "gap"], votes) is None


@pytest.mark.slow  # a whole search: the full suite runs it
def test_screened_search_records_which_rule_picked(tmp_path, digits):
    cfg = SearchConfig(
        out=str(tmp_path), trials=7, epochs=1, population=4, screen=3, screen_batch=32,
        device="rpi4", objectives=("accuracy", "latency"),
    )  # fmt: skip
    r = run_search(cfg, data=digits, quiet=True)
    rules = [t.user_attrs["screen"]["rule"] for t in sorted(r.study.trials, key=lambda t: t.number)]
    assert set(rules) <= {"front", "sampler"}
    assert rules[:5] == ["sampler"] * 5  # no line before five trained candidates
