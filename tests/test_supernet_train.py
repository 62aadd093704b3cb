"""`compactnas supernet train`: sandwich training, atomic per-epoch checkpoints, resume after a kill,
MLflow curves, and refusal of a supernet made for other data or another space."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from compactnas.cli import main
from compactnas.evaluators.supernet import SupernetMismatch, check_matches, read_checkpoint

FAST = ["--subset", "400", "--batch-size", "100", "--random-subnets", "1", "--quiet"]


def _meta(out):
    try:
        return json.loads((out / "supernet.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.slow
def test_kill_then_resume_continues_from_the_last_epoch(tmp_path):
    out = tmp_path / "sn"
    argv = [sys.executable, "-m", "compactnas", "supernet", "train", "--data", "digits"]
    argv += ["--epochs", "3", "--out", str(out), *FAST]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900  # generous: shared machines can be slow to start torch and MLflow
    try:
        while time.time() < deadline and proc.poll() is None:
            if _meta(out).get("epochs_done", 0) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (
            f"training ended before it could be killed: {proc.stderr.read()}"
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = read_checkpoint(out)
    assert 1 <= before["epochs_done"] < 3
    first = before["history"][0]

    assert main(["supernet", "train", "--data", "digits", "--epochs", "3", "--out", str(out),
                 "--resume", *FAST]) == 0  # fmt: skip
    after = read_checkpoint(out)
    assert after["epochs_done"] == 3
    assert [h["epoch"] for h in after["history"]] == [1, 2, 3]
    assert after["history"][0] == first  # finished epochs are kept, not trained again
    assert after["mlflow_run_id"] == before["mlflow_run_id"]  # one run, continued
    # Training curves and the checkpoint are in MLflow.
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    curve = client.get_metric_history(after["mlflow_run_id"], "loss_largest")
    assert sorted(m.step for m in curve) == [1, 2, 3]
    run = client.get_run(after["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert "supernet.pt" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert not list(out.glob(".supernet.pt.*"))  # no temporary file left behind


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sn1")
    assert main(["supernet", "train", "--data", "digits", "--epochs", "1", "--out", str(out),
                 *FAST]) == 0  # fmt: skip
    return out


def test_a_supernet_for_other_data_or_space_is_refused(trained, tmp_path, digits, capsys):
    rng = np.random.default_rng(0)
    other = tmp_path / "other.npz"
    np.savez(other, x=rng.integers(0, 255, (300, 8, 8), dtype=np.uint8), y=np.arange(300) % 10)
    capsys.readouterr()
    argv = ["supernet", "train", "--data", f"npz:{other}", "--epochs", "1", "--out", str(trained)]
    assert main([*argv, "--resume", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on other data" in err and len(err.splitlines()) == 1
    # Starting again over an existing supernet needs --resume.
    assert main(["supernet", "train", "--data", "digits", "--out", str(trained), *FAST]) == 2
    assert "--resume" in capsys.readouterr().err
    # A resume must keep the recipe.
    assert main(["supernet", "train", "--data", "digits", "--epochs", "1", "--lr", "0.1",
                 "--out", str(trained), "--resume", *FAST]) == 2  # fmt: skip
    assert "lr was 0.005" in capsys.readouterr().err
    assert main(["supernet", "train", "--space", "squeeze", "--out", str(tmp_path / "x")]) == 2
    assert "no supernet for space 'squeeze'" in capsys.readouterr().err
    blob = read_checkpoint(trained)
    check_matches(blob, digits, "mobile")
    with pytest.raises(SupernetMismatch, match="space 'mobile', not 'squeeze'"):
        check_matches(blob, digits, "squeeze")


def test_the_checkpoint_records_data_space_and_shapes(trained, digits):
    blob = read_checkpoint(trained)
    assert blob["space"] == "mobile" and blob["data"] == "digits"
    assert blob["input_shape"] == [1, 8, 8] and blob["num_classes"] == 10
    assert blob["epochs_done"] == 1 and len(blob["history"]) == 1
    h = blob["history"][0]
    assert 0.0 <= h["val_accuracy_smallest"] <= 1.0 and 0.0 <= h["val_accuracy_largest"] <= 1.0
    assert 0.0 < h["loss_largest"] < 10.0 and h["epoch_seconds"] > 0
