"""The Ray backend: each candidate is a Ray Tune trial; the search loop proposes and records.

A Tune ``Searcher`` (Tune's public plug for "what to try next") hands Tune the loop's proposals and
gives it back what each trial reports, so repeats, sampling failures, the study, the result files and
the MLflow runs (all logged from here, the driver) are exactly the local backend's. Workers only
evaluate. On a cluster, ``--out`` should be a folder every node can write if checkpoints are wanted
on the driver's side. A worker process that dies mid-trial gets its trial retried (``max_retries``):
its run is closed as KILLED and the retry gets a new one; a candidate that raises or diverges fails
once, and the search goes on.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from compactnas.core.data import Dataset, load_data, take_subset
from compactnas.search.backends.ray_connect import connect_ray
from compactnas.search.candidate import resolve_latency_model, run_candidate
from compactnas.search.config import SearchConfig, config_from_mapping
from compactnas.search.loop import SearchLoop
from compactnas.search.objectives import resolve_objectives


def _tune_env() -> None:
    """Set before Tune is imported, in the driver and in each worker, not at this module's import: a
    process that only imports compactnas (a supernet trained on Ray Train v2, say) keeps its settings."""
    # Tune's own console tables would duplicate the search's progress lines.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "0")


def _trainable(
    config: dict[str, Any], data: Dataset | None = None, settings: dict[str, Any] | None = None
) -> None:
    """One candidate on a Ray worker: says where it runs, reports epochs (for ASHA), then its payload."""
    _tune_env()
    from ray import tune

    assert settings is not None
    cfg = config_from_mapping(settings)
    number = int(config["trial_number"])
    # Where the trial runs, so an operator (or a test) can find the process behind a run.
    # The GPUs Ray gave it (--gpus-per-trial) are the CUDA_VISIBLE_DEVICES Ray set for the process.
    tune.report({"started": 1, "worker_pid": os.getpid(), "worker_host": socket.gethostname(),
                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")})  # fmt: skip
    data = data if data is not None else load_data(cfg.data, seed=cfg.seed, resize=cfg.resize)
    data = take_subset(data, train=cfg.subset, val=cfg.val_subset, seed=cfg.seed)

    def report(epoch: int, accuracy: float) -> bool:
        if epoch < cfg.epochs:  # the final report below carries the last epoch, with every metric
            tune.report({"accuracy": accuracy, "epoch": epoch})
        return False  # ASHA decides on the driver and stops the trial itself

    latency_model = resolve_latency_model(
        cfg, resolve_objectives(cfg.objectives), num_classes=data.num_classes
    )
    payload = run_candidate(
        config["arch"], number, data, cfg, latency_model=latency_model,
        report=report if cfg.early_stop else None,
    )  # fmt: skip
    # As JSON text: Tune flattens nested results before the searcher sees them.
    tune.report({"payload": json.dumps(payload), "epoch": cfg.epochs, **_flat(payload)})


def _flat(payload: dict[str, Any]) -> dict[str, float]:
    # The scheduler reads ``accuracy`` from the last result; nothing else reads these copies.
    acc = (payload.get("metrics") or {}).get("accuracy")
    return {"accuracy": float(acc)} if acc is not None else {}


def _searcher_class() -> type:
    from ray.tune.search import Searcher

    class LoopSearcher(Searcher):
        """Tune's view of the search loop: suggest = propose, on_trial_complete = record."""

        def __init__(self, loop: SearchLoop):
            super().__init__()
            self.loop = loop
            self.numbers: dict[str, int] = {}  # Tune trial id -> study trial number
            self.pids: dict[str, int] = {}

        def __getstate__(self) -> dict:
            # Tune pickles its searcher for experiment restore; the study already holds everything.
            return {}

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "w") as f:
                f.write("state kept in the Optuna study (study.db)\n")

        def restore(self, checkpoint_path: str) -> None:
            return None

        def suggest(self, trial_id: str) -> dict | str | None:
            p = self.loop.propose()
            if p is None:
                return Searcher.FINISHED if self.loop.exhausted and not self.loop.waiting else None
            self.numbers[trial_id] = p.number
            return {"arch": p.arch, "trial_number": p.number}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            pid = result.get("worker_pid")
            number = self.numbers.get(trial_id)
            if pid is None or number is None:
                return
            if trial_id in self.pids and self.pids[trial_id] != pid:
                self.loop.replace_run(number, "worker died; trial retried")
            self.pids[trial_id] = pid
            run_id = self.loop.in_flight[number].run_id
            self.loop.tracker.log(run_id, tags={
                "compactnas.host": result.get("worker_host"), "compactnas.pid": pid,
                "compactnas.cuda_visible_devices": result.get("cuda_visible_devices", ""),
            })  # fmt: skip

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            number = self.numbers.pop(trial_id, None)
            if number is None or number not in self.loop.in_flight:
                return
            self.loop.record(number, _payload(result or {}, error))

    return LoopSearcher


def _payload(result: dict[str, Any], error: bool) -> dict[str, Any]:
    if "payload" in result:
        return json.loads(result["payload"])
    if error or "accuracy" not in result:
        return {"kind": "failed", "reason": "the worker failed (retries exhausted)"}
    # No payload but an epoch's accuracy: the scheduler stopped it early.
    epoch = int(result.get("epoch", 0))
    return {
        "kind": "stopped",
        "metrics": {"accuracy": float(result["accuracy"]), "epochs": float(epoch)},
    }


def _init_ray(cfg: SearchConfig) -> bool:
    """Connect to (or start) Ray; True when this call did, so the search also disconnects."""
    return connect_ray(cfg.address, max(1, int(round(cfg.concurrency * cfg.cpus_per_trial))))


def _tuner(loop: SearchLoop, data: Dataset | None) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    cfg = loop.cfg
    scheduler = (
        ASHAScheduler(
            metric="accuracy", mode="max", time_attr="epoch", max_t=cfg.epochs,
            grace_period=cfg.grace_epochs, reduction_factor=cfg.halving_rate,
        )
        if cfg.early_stop
        else FIFOScheduler()
    )  # fmt: skip
    trainable = tune.with_parameters(_trainable, data=data, settings=cfg.to_dict())
    trainable = tune.with_resources(
        trainable, {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=_searcher_class()(loop), scheduler=scheduler, num_samples=-1,
            max_concurrent_trials=cfg.concurrency, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{cfg.study_name}-{int(time.time())}",
            storage_path=str(cfg.out_dir / "ray"),
            failure_config=tune.FailureConfig(max_failures=cfg.max_retries),
            verbose=0,
        ),
    )  # fmt: skip


def run_on_ray(loop: SearchLoop, *, data_given: bool) -> None:
    if loop.finished:
        return
    _tune_env()
    connected_here = False
    try:
        here: str | None = os.getcwd()
    except FileNotFoundError:
        here = None
    try:
        # Tune resolves result paths against the current directory. Inside a Ray job that is the
        # job's unpacked working directory, which connecting to the cluster may replace under us.
        os.chdir(loop.cfg.out_dir)
        connected_here = _init_ray(loop.cfg)
        with loop.progress:
            _tuner(loop, loop.data if data_given else None).fit()
    finally:
        if connected_here:
            import ray

            ray.shutdown()  # promptly: left to interpreter exit, it can take tens of seconds
        if here is not None and os.path.isdir(here):
            os.chdir(here)
