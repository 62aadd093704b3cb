"""``compactnas retrain``: final training of the front's best models, found by ``export``."""

import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from compactnas.cli import main


@pytest.fixture(scope="module")
def search_out(tmp_path_factory, digits):
    from compactnas.search import SearchConfig, run_search

    out = tmp_path_factory.mktemp("retrain_search")
    run_search(
        SearchConfig(
            out=str(out), trials=3, epochs=1, population=2, seed=0, subset=300, val_subset=100
        ),
        data=digits,
        quiet=True,
    )
    return out


def test_retrain_writes_weights_json_and_nested_runs(search_out, capsys):
    assert (
        main(["retrain", str(search_out), "--top", "2", "--epochs", "2", "--seeds", "2", "-q"]) == 0
    )
    report = json.loads((search_out / "retrained" / "retrain.json").read_text())
    models = report["models"]
    summary = json.loads((search_out / "summary.json").read_text())
    assert 1 <= len(models) <= 2 and len(models) == min(2, len(summary["pareto"]))
    accs = [m["search_accuracy"] for m in models]
    assert accs == sorted(accs, reverse=True)  # most accurate first
    for m in models:
        assert len(m["seeds"]) == 2
        assert 0.0 <= m["test_accuracy"]["mean"] <= 1.0 and m["train_loss"]["mean"] > 0
        blob = torch.load(m["checkpoint"], weights_only=True)
        assert blob["arch"] == m["arch"] and blob["metrics"]["accuracy"] == max(
            s["accuracy"] for s in m["seeds"]
        )
    # The final budget uses the whole training split, not the search's subset.
    assert report["settings"]["train_examples"] > 300
    client = MlflowClient(report["mlflow"]["tracking_uri"])
    runs = [client.get_run(r) for r in report["mlflow"]["run_ids"]]
    assert len(runs) == len(models)
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == report["mlflow"]["parent_run_id"]
        assert run.data.tags["compactnas.kind"] == "retrain"
        assert "test_accuracy_mean" in run.data.metrics
    out = capsys.readouterr().out
    assert "test acc" in out and "retrain.json" in out

    # Same settings again: finished models are kept, not retrained.
    before = (search_out / "retrained" / "retrain.json").read_text()
    assert (
        main(["retrain", str(search_out), "--top", "2", "--epochs", "2", "--seeds", "2", "-q"]) == 0
    )
    again = json.loads((search_out / "retrained" / "retrain.json").read_text())
    assert [m["seeds"] for m in again["models"]] == [
        m["seeds"] for m in json.loads(before)["models"]
    ]

    # export prefers the retrained weights and says so in the card.
    trial = models[0]["trial"]
    dest = search_out / "exp"
    assert (
        main(["export", str(search_out), "--trial", str(trial), "--dest", str(dest), "--no-mlflow"])
        == 0
    )
    card = json.loads((dest / "card.json").read_text())
    assert card["source"]["weights"] == "retrained"
    assert "retrained from scratch" in (dest / "card.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top", "0"], "top must be >= 1"),
        (["--epochs", "0"], "epochs must be >= 1"),
    ],
)
def test_bad_settings_are_one_line_errors(search_out, capsys, args, message):
    assert main(["retrain", str(search_out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_missing_search_is_one_line_error(tmp_path, capsys):
    assert main(["retrain", str(tmp_path), "--top", "1"]) == 2
    assert "no summary.json" in capsys.readouterr().err
