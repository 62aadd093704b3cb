"""`supernet train --backend ray`: Ray Train's TorchTrainer with two data-parallel workers (gloo on CPU),
writing the same checkpoint a local training writes, so either backend resumes the other's."""

import pytest
from mlflow.tracking import MlflowClient

pytest.importorskip("ray.train.torch")

from compactnas.cli import main  # noqa: E402
from compactnas.evaluators.supernet import read_checkpoint  # noqa: E402

# Trains a supernet on a local Ray cluster.
pytestmark = [pytest.mark.slow, pytest.mark.ray]

FAST = ["--subset", "300", "--batch-size", "100", "--random-subnets", "1", "--quiet"]


def test_ray_training_then_local_resume(tmp_path):
    import ray

    assert not ray.is_initialized()
    out = tmp_path / "sn"
    argv = ["supernet", "train", "--data", "digits", "--out", str(out), *FAST]
    assert main([*argv, "--epochs", "2", "--backend", "ray", "--workers", "2"]) == 0
    assert not ray.is_initialized()  # the local Ray instance it started is gone
    blob = read_checkpoint(out)
    assert blob["epochs_done"] == 2 and [h["epoch"] for h in blob["history"]] == [1, 2]
    assert blob["history"][0]["loss_largest"] > 0
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    curve = client.get_metric_history(blob["mlflow_run_id"], "val_accuracy_largest")
    assert sorted(m.step for m in curve) == [1, 2]
    # The local backend continues what the Ray workers trained.
    assert main([*argv, "--epochs", "3", "--resume"]) == 2  # the recipe (epochs) must match
    before = read_checkpoint(out)["state_dict"]
    assert main([*argv, "--epochs", "2", "--resume"]) == 0  # nothing left to train
    after = read_checkpoint(out)
    assert after["epochs_done"] == 2
    assert all((before[k] == v).all() for k, v in after["state_dict"].items())
