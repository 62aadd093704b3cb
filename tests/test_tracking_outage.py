"""A real `mlflow server` killed mid-search: the search finishes, warns once, and `track` re-logs later."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ports import free_port

from compactnas.cli import main

# A real MLflow server killed and restarted mid-search.
pytestmark = [pytest.mark.slow]

BIN = Path(sys.executable).parent


class _Slow:
    """Takes a second per candidate, so the server can be killed while trials remain."""

    name = "test-slow"
    trains = False

    def __init__(self, **_):
        pass

    def evaluate(self, model, spec, data, *, report=None):
        time.sleep(1.0)
        return {"accuracy": 0.1 + 0.01 * (len(str(spec)) % 50)}


@pytest.fixture(autouse=True)
def _slow_evaluator(evaluator_for_test):
    evaluator_for_test("test-slow", _Slow)


def _start_server(root, port):
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(uri + "/health", timeout=2)
            return proc, uri
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("mlflow server did not start")


def _kill(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its own worker processes, nothing else
        proc.wait(timeout=30)


def _complete(db):
    # Read-only: opening it through Optuna would race the search creating its tables.
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # the study is not created yet
        return 0


def test_search_survives_a_dead_tracking_server_and_track_relogs(tmp_path, capfd):
    root, out = tmp_path / "server", tmp_path / "out"
    root.mkdir()
    port = free_port()
    server, uri = _start_server(root, port)
    killed_at = []

    def kill_after_two():
        deadline = time.time() + 300
        while time.time() < deadline and _complete(out / "study.db") < 2:
            time.sleep(0.1)
        _kill(server)
        killed_at.append(time.time())

    killer = threading.Thread(target=kill_after_two, daemon=True)
    try:
        killer.start()
        rc = main(["search", "--evaluator", "test-slow", "--trials", "6", "--population", "4",
                   "--workers", "1", "--tracking-uri", uri, "--out", str(out), "--quiet"])  # fmt: skip
        ended = time.time()
        killer.join(timeout=60)
    finally:
        _kill(server)
    assert rc == 0
    assert killed_at, "the server was never killed"
    # No minutes in MLflow's retries: the remaining four one-second trials end well within a minute.
    assert ended - killed_at[0] < 60
    warnings = [line for line in capfd.readouterr().err.splitlines() if "warning" in line]
    assert (
        len(warnings) == 1
        and "MLflow tracking" in warnings[0]
        and "compactnas track" in warnings[0]
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["n_trials"] == 6 and s["n_complete"] == 6 and s["mlflow"]["complete"] is False

    # A server on the same store again: `track` logs the runs it missed, under the same parent run.
    server, uri = _start_server(root, port)
    try:
        assert main(["track", str(out)]) == 0
        client = MlflowClient(uri)
        runs = client.search_runs(
            [client.get_experiment_by_name("compactnas").experiment_id], max_results=100
        )
    finally:
        _kill(server)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [s["mlflow"]["run_id"]]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == s["mlflow"]["run_id"]]
    assert children
    assert sorted(int(c.data.params["trial"]) for c in children) == list(range(6))
    assert all(c.info.status == "FINISHED" and "accuracy" in c.data.metrics for c in children)
