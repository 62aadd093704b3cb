"""The Ray backend on a real local cluster: a head and a second node on loopback, a real MLflow server."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import psutil
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ports import free_port

# A real Ray cluster (a head and a second node) and an MLflow server: minutes.
pytestmark = [pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _ray(*args, env=None, check=True):
    return subprocess.run(
        [str(BIN / "ray"), *args], capture_output=True, text=True, timeout=180, env=env, check=check
    )


def _ray_node(root, *args, env):
    """`ray start` for one node, with its own temp dir and every port it listens on chosen here, so it
    shares nothing with other Ray instances on the machine."""
    ports = {
        "--node-manager-port": free_port(), "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    _ray("start", *args, f"--temp-dir={root}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
         "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items()), env=env)  # fmt: skip


def _processes_under(root):
    """The processes of the Ray nodes whose temp dir is ``root``: each names its session folder (under
    ``root``) on its command line or, where Ray retitles the process (``ray::DashboardAgent``), writes
    its logs there."""
    mine = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            if any(str(root) in arg for arg in proc.info["cmdline"] or ()) or any(
                f.path.startswith(str(root)) for f in proc.open_files()
            ):
                mine.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return mine


def _stop_nodes(root):
    """Stop the Ray processes started under ``root`` only; other Ray instances on the machine live on."""
    procs = _processes_under(root)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=15)
    left = [p.pid for p in _processes_under(root)]
    assert not left, f"Ray processes of this test still running: {left}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`ray start --head` plus a second node joining it, and `mlflow server` on a SQLite store."""
    root = tmp_path_factory.mktemp("cluster")
    # Ray's socket paths must stay short (AF_UNIX limit), hence a short folder of its own under /tmp.
    ray_root = Path(tempfile.mkdtemp(prefix="cnas-ray-", dir="/tmp"))
    port = free_port()
    # As on a real cluster, the nodes run inside the environment where compactnas is installed.
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    dash = free_port()
    address = f"127.0.0.1:{port}"
    server = None
    try:
        _ray_node(ray_root / "head", "--head", f"--port={port}", "--include-dashboard=true",
                  "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                  f"--ray-client-server-port={free_port()}", env=env)  # fmt: skip
        _ray_node(ray_root / "node", f"--address={address}", env=env)
        mport = free_port()
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port",
             str(mport), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        uri = f"http://127.0.0.1:{mport}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        os.environ["RAY_AUTH_MODE"] = "disabled"
        yield {
            "address": address,
            "tracking_uri": uri,
            "root": root,
            "jobs": f"http://127.0.0.1:{dash}",
        }
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        _stop_nodes(ray_root)
        shutil.rmtree(ray_root, ignore_errors=True)


def _argv(out, cluster, trials, extra=()):
    return [
        sys.executable, "-m", "compactnas", "search", "--backend", "ray", "--address", cluster["address"],
        "--tracking-uri", cluster["tracking_uri"], "--experiment", out.name, "--trials", str(trials),
        "--epochs", "2", "--concurrency", "2", "--population", "4", "--out", str(out), "--quiet", *extra,
    ]  # fmt: skip


def _server_runs(cluster, experiment):
    client = MlflowClient(cluster["tracking_uri"])
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_search_on_cluster_logs_every_trial_to_the_server(cluster, tmp_path):
    out = tmp_path / "ray-small"
    # NSGA-III here, NSGA-II in the table search: both hold a lock in some Optuna releases, which the
    # driver keeps (Tune never ships the sampler).
    argv = _argv(out, cluster, 4, ("--sampler", "nsga3"))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_trials"] == 4 and s["n_complete"] == 4 and s["backend"] == "ray"
    assert s["pareto"] and all(
        k in s["pareto"][0] for k in ("arch", "accuracy", "latency_ms", "size_bytes")
    )
    runs = _server_runs(cluster, out.name)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == s["mlflow"]["run_id"]]
    assert len(parent) == 1 and len(children) == 4
    assert all("accuracy" in c.data.metrics and c.info.status == "FINISHED" for c in children)
    assert {c.data.params["arch"] for c in children} >= {r["arch"] for r in s["pareto"]}


def test_unreachable_tracking_server_fails_before_any_trial(cluster, tmp_path):
    argv = _argv(tmp_path / "o", cluster, 2)
    argv[argv.index("--tracking-uri") + 1] = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "cannot reach the MLflow tracking server" in proc.stderr
    assert (
        not (tmp_path / "o" / "study.db").exists()
        or not optuna.load_study(
            study_name="compactnas", storage=f"sqlite:///{tmp_path / 'o' / 'study.db'}"
        ).trials
    )


def _training_pid(cluster, experiment):
    """The process of a trial that is training now: its MLflow run is RUNNING and names its pid."""
    client = MlflowClient(cluster["tracking_uri"])
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    for run in client.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'RUNNING'"
    ):
        if run.data.tags.get("compactnas.kind") == "trial" and "compactnas.pid" in run.data.tags:
            return int(run.data.tags["compactnas.pid"])
    return None


def test_killed_worker_gets_its_trial_retried(cluster, tmp_path):
    out = tmp_path / "ray-kill-worker"
    argv = _argv(out, cluster, 4, ["--max-retries", "2"])
    argv[argv.index("--epochs") + 1] = "6"  # long enough to be caught while training
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 300
    try:
        while time.time() < deadline and killed is None and proc.poll() is None:
            pid = _training_pid(cluster, out.name)
            if pid is not None and psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)
                killed = pid
            time.sleep(0.2)
        assert killed, "no training trial was seen"
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_trials"] == 4 and s["n_complete"] == 4, s
    runs = _server_runs(cluster, out.name)
    killed_runs = [r for r in runs if r.info.status == "KILLED"]
    assert [r.data.tags["compactnas.pid"] for r in killed_runs] == [str(killed)]
    retried = killed_runs[0].data.params["trial"]
    finished = [
        r for r in runs if r.data.params.get("trial") == retried and r.info.status == "FINISHED"
    ]
    assert finished and "accuracy" in finished[0].data.metrics


def test_killed_driver_resumes_without_losing_trials(cluster, tmp_path):
    out = tmp_path / "ray-kill-driver"
    db = out / "study.db"
    proc = subprocess.Popen(
        _argv(out, cluster, 6), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    before = {}
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    st = optuna.load_study(study_name="compactnas", storage=f"sqlite:///{db}")
                    before = {
                        t.number: t.values for t in st.trials if t.state == TrialState.COMPLETE
                    }
                except Exception:  # noqa: BLE001 - the study is still being created
                    before = {}
                if len(before) >= 2:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the search ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    st = optuna.load_study(study_name="compactnas", storage=f"sqlite:///{db}")
    before = {t.number: t.values for t in st.trials if t.state == TrialState.COMPLETE}
    resumed = subprocess.run(
        _argv(out, cluster, 6, ["--resume"]), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    st = optuna.load_study(study_name="compactnas", storage=f"sqlite:///{db}")
    after = {t.number: t.values for t in st.trials if t.state == TrialState.COMPLETE}
    assert all(after[k] == v for k, v in before.items())
    s = json.loads((out / "summary.json").read_text())
    assert s["n_trials"] == 6 and s["n_complete"] == 6
    assert not [t for t in st.trials if t.state == TrialState.RUNNING]


def test_submit_a_search_as_a_ray_job(cluster, tmp_path):
    from compactnas.search.backends.jobs import job_entrypoint

    assert (
        job_entrypoint(["--", "search", "--trials", "2"])
        == "python -m compactnas search --trials 2 --backend ray"
    )
    out = tmp_path / "job-search"
    cli = [sys.executable, "-m", "compactnas"]
    submit = cli + ["submit", "--address", cluster["jobs"], "--", "search", "--trials", "2", "--epochs", "1",
                    "--out", str(out), "--tracking-uri", cluster["tracking_uri"], "--experiment", "jobs", "-q"]  # fmt: skip
    proc = subprocess.run(submit, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    job_id = proc.stdout.strip().splitlines()[-1]
    status = ""
    deadline = time.time() + 400
    while time.time() < deadline:
        status = subprocess.run(cli + ["jobs", "status", job_id, "--address", cluster["jobs"]],
                                capture_output=True, text=True, timeout=120).stdout.strip()  # fmt: skip
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    logs = subprocess.run(cli + ["jobs", "logs", job_id, "--address", cluster["jobs"]],
                          capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    assert status == "SUCCEEDED", logs[-3000:]
    assert "2 complete" in logs
    listed = subprocess.run(
        cli + ["jobs", "list", "--address", cluster["jobs"]], capture_output=True, text=True
    )
    assert job_id in listed.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["backend"] == "ray" and s["n_complete"] == 2
    bad = subprocess.run(cli + ["jobs", "list", "--address", f"http://127.0.0.1:{free_port()}"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "cannot reach the Ray job server" in bad.stderr


def _full_nb201_table(path):
    """Every NAS-Bench-201 cell with made-up accuracy and latency columns (named as in the real table)."""
    import itertools

    from compactnas.spaces.nb201 import OPS, nb201_spec, to_nb201_string

    rows = []
    for ops in itertools.product(OPS, repeat=6):
        conv = sum(op.startswith("nor_conv") for op in ops)
        rows.append(f"{to_nb201_string(nb201_spec(ops))},{40 + 5 * conv},{0.5 + 0.3 * conv}")
    path.write_text("arch,cifar100_test_acc,raspi4_ms\n" + "\n".join(rows) + "\n")
    return {line.split(",")[0]: float(line.split(",")[2]) for line in rows}


def test_table_search_on_cluster(cluster, tmp_path):
    # Nothing is trained: every worker looks its candidate up in the table and logs it to the server.
    # Screened on the driver: 3 proposals per looked-up cell, proxies on a minibatch of digits.
    latency = _full_nb201_table(tmp_path / "nb201.csv")
    out = tmp_path / "ray-table"
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "digits.npz", x=digits.images.astype("float32"), y=digits.target)
    extra = ("--space", "nb201", "--data", f"table:{tmp_path / 'nb201.csv'}", "--sampler", "nsga2",
             "--table-accuracy", "cifar100_test_acc", "--table-latency", "raspi4_ms",
             "--screen", "3", "--screen-data", f"npz:{tmp_path / 'digits.npz'}",
             "--screen-batch", "16")  # fmt: skip
    proc = subprocess.run(
        _argv(out, cluster, 6, extra), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["backend"] == "ray" and s["n_trials"] == 6 and s["n_complete"] == 6
    assert s["pareto"]
    from compactnas.spaces.arch import parse_arch
    from compactnas.spaces.nb201 import to_nb201_string

    for row in s["pareto"]:
        cell = to_nb201_string(parse_arch(row["arch"]))
        assert row["latency_ms"] == pytest.approx(latency[cell])
        assert 0.4 <= row["accuracy"] <= 0.7  # the table's percent, scaled to [0, 1]
    screened = pd.read_csv(out / "screened.csv")
    chosen = screened.dropna(subset=["chosen_for_trial"])
    assert sorted(chosen.chosen_for_trial.astype(int)) == list(range(6))
    assert len(screened) > 6  # proposals were scored and passed over
    trials = pd.read_csv(out / "trials.csv")
    assert trials.screen_vote.between(0, 1).all()
    for _, t in trials.iterrows():  # the worker looked up the cell the proxies picked
        assert t.arch == chosen[chosen.chosen_for_trial == t.trial].arch.item()
        assert chosen[chosen.chosen_for_trial == t.trial].latency_ms.item() == t.latency_ms
    runs = _server_runs(cluster, out.name)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == s["mlflow"]["run_id"]]
    assert len(children) == 6 and all(c.info.status == "FINISHED" for c in children)
