"""What the MLflow UI shows of a search, read back through a real ``mlflow server``'s REST API, and
optuna-dashboard served on a search's study and answering over HTTP."""

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from ports import free_port

import compactnas
from compactnas.search.tracking import TRIAL_COLUMNS, runs_view_key, search_ui_url

# A real MLflow server and optuna-dashboard.
pytestmark = [pytest.mark.slow]

BIN = Path(sys.executable).parent


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.status, r.read()


def _wait(url, proc, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the server exited with {proc.returncode}")
        try:
            return _get(url, timeout=3)
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {seconds} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait(uri + "/health", proc)
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def search(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("ui") / "tiny"
    compactnas.run_search(
        {"trials": 2, "epochs": 1, "seed": 0, "out": str(out), "tracking_uri": server,
         "experiment": "ui-test"},
        quiet=True,
    )  # fmt: skip
    return out, json.loads((out / "summary.json").read_text())


def _api(server, path, **query):
    status, body = _get(f"{server}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}")
    assert status == 200
    return json.loads(body)


def test_experiment_is_a_model_training_experiment(server, search):
    exp = _api(server, "experiments/get-by-name", experiment_name="ui-test")["experiment"]
    tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    _, summary = search
    view = json.loads(tags[f"mlflow.sharedViewState.{runs_view_key(summary['mlflow']['run_id'])}"])
    assert "metrics.`accuracy`" in view["selectedColumns"]
    assert all(f"metrics.`{m}`" in view["selectedColumns"] for m in TRIAL_COLUMNS)
    assert summary["mlflow"]["run_id"] in view["searchFilter"]


def test_search_run_is_named_and_carries_the_front(server, search):
    out, summary = search
    run = _api(server, "runs/get", run_id=summary["mlflow"]["run_id"])["run"]
    assert run["info"]["run_name"] == f"mobile · host · {out.name}"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["front_size"] == len(summary["pareto"]) >= 1
    assert metrics["best_accuracy"] == pytest.approx(max(p["accuracy"] for p in summary["pareto"]))
    assert metrics["hypervolume"] == pytest.approx(summary["hypervolume"])


def test_trials_have_the_table_columns(server, search):
    _, summary = search
    exp = _api(server, "experiments/get-by-name", experiment_name="ui-test")["experiment"]
    body = json.dumps(
        {
            "experiment_ids": [exp["experiment_id"]],
            "filter": f"tags.`mlflow.parentRunId` = '{summary['mlflow']['run_id']}'",
        }
    ).encode()
    req = urllib.request.Request(
        f"{server}/api/2.0/mlflow/runs/search",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
        runs = json.loads(r.read())["runs"]
    assert len(runs) == 2
    for run in runs:
        keys = {m["key"] for m in run["data"]["metrics"]}
        assert {"accuracy", "size_bytes"} <= keys


def test_ui_url_opens_the_runs_table_of_the_search(server, search):
    out, summary = search
    exp = _api(server, "experiments/get-by-name", experiment_name="ui-test")["experiment"]
    url = search_ui_url(out, server)
    assert url == (
        f"{server}/#/experiments/{exp['experiment_id']}/runs"
        f"?viewStateShareKey={runs_view_key(summary['mlflow']['run_id'])}"
    )
    assert _get(url.split("#")[0])[0] == 200


def test_dashboard_serves_the_study(search):
    out, _ = search
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "compactnas", "dashboard", str(out), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status, body = _wait(f"http://127.0.0.1:{port}/api/studies", proc, seconds=120)
        assert status == 200
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["compactnas"]
        sid = studies[0]["study_id"]
        status, body = _get(f"http://127.0.0.1:{port}/api/studies/{sid}?after=0")
        assert status == 200 and len(json.loads(body)["trials"]) == 2
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"/dashboard/studies/{sid}" in err


def test_dashboard_on_a_folder_without_search_is_one_line(tmp_path, capsys):
    from compactnas.cli import main

    assert main(["dashboard", str(tmp_path), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no study.db" in err


def _post(url, body, timeout=10):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())


def test_a_copied_search_folder_works_alone_once_the_original_is_gone(trained_search, tmp_path):
    """Copy a search folder, delete the original: `compactnas ui` on the copy lists the search's
    artifacts, and `export` logs its MLflow model into the copy (nothing reappears at the original)."""
    import shutil

    original, copy = tmp_path / "original", tmp_path / "copy"
    shutil.copytree(trained_search, original)
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    before = {p for p in (copy / "mlartifacts").rglob("*") if p.is_file()}
    compactnas.export(copy, trial=0, formats="onnx", dest=str(copy / "export"))
    assert not original.exists()
    written = {p for p in (copy / "mlartifacts").rglob("*") if p.is_file()} - before
    assert any(p.name == "MLmodel" for p in written), sorted(map(str, written))

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "compactnas.cli", "ui", str(copy), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base + "/health", proc)
        summary = json.loads((copy / "summary.json").read_text())
        run_id = summary["mlflow"]["run_id"]
        run = _api(base, "runs/get", run_id=run_id)["run"]
        assert run["info"]["artifact_uri"].startswith((copy / "mlartifacts").as_uri())
        listed = {f["path"] for f in _api(base, "artifacts/list", run_id=run_id).get("files", [])}
        assert {"summary.json", "pareto.csv"} <= listed, listed
        exp = run["info"]["experiment_id"]
        found = _post(base + "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp]})["runs"]
        assert len(found) >= 3  # the search's run and its two trials
    finally:
        proc.terminate()
        proc.wait(timeout=30)
