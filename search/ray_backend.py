"""The Ray backend: the same search through Ray Tune, with Optuna as the (multi-objective) searcher.

The Optuna study lives in the same SQLite file as the local backend's, so outputs, ``--resume`` and
``compactnas show``/``export`` work alike. Workers train candidates and log their own nested MLflow runs
to the tracking URI; on a cluster that URI should be an MLflow server every node can reach (it is
checked before any trial starts), and ``--out`` a folder every node can write if checkpoints are wanted
on the driver's side. A worker process that dies mid-trial gets its trial retried (``max_retries``);
a candidate that raises or diverges fails once, and the search goes on.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from compactnas.core.data import Dataset, load_data, take_subset
from compactnas.core.errors import ConfigError
from compactnas.search.candidate import Infeasible, evaluate_candidate
from compactnas.search.config import SearchConfig
from compactnas.search.objectives import resolve_objectives
from compactnas.search.progress import Progress
from compactnas.search.tracking import Tracker, default_tracking_uri

log = logging.getLogger("compactnas")

# Tune's own console tables would duplicate the search's progress lines.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "0")


def _settings_to_config(settings: dict[str, Any]) -> SearchConfig:
    from compactnas.search.config import config_from_mapping

    return config_from_mapping(settings)


def _trainable(
    config: dict[str, Any], data: Dataset | None = None, settings: dict[str, Any] | None = None
) -> None:
    """One candidate on a Ray worker; reports per-epoch accuracy (for ASHA) and a final result."""
    import torch
    from ray import tune

    from compactnas.search.study import resolve_latency_model
    from compactnas.spaces import parse_arch

    assert settings is not None
    cfg = _settings_to_config(settings["config"])
    torch.set_num_threads(max(1, int(cfg.cpus_per_trial)))
    number = int(config["trial_number"])
    data = data if data is not None else load_data(cfg.data, seed=cfg.seed, resize=cfg.resize)
    data = take_subset(data, train=cfg.subset, val=cfg.val_subset, seed=cfg.seed)
    spec = parse_arch(config["arch"])
    objectives = resolve_objectives(cfg.objectives)
    tracker = _worker_tracker(settings["tracking_uri"], cfg.experiment)
    _close_earlier_attempts(tracker, settings["parent_id"], number)
    run_id = tracker.start_child(
        settings["parent_id"],
        f"trial-{number}",
        {"arch": config["arch"], "trial": number, "space": cfg.space, "backend": "ray",
         **{f"p.{k}": v for k, v in config.items() if k not in ("arch", "trial_number")}},
        # Where the trial runs, so an operator (or a test) can find the process behind a run.
        tags={"compactnas.host": socket.gethostname(), "compactnas.pid": str(os.getpid())},
    )  # fmt: skip
    static: dict[str, float] = {}

    def report(epoch: int, accuracy: float) -> bool:
        if epoch >= cfg.epochs:
            return False  # the final report below carries the last epoch, with every metric
        tune.report({**static, "accuracy": accuracy, "epoch": epoch, "mlflow_run_id": run_id})
        return False  # ASHA decides on the driver and stops the trial itself

    try:
        latency_model = resolve_latency_model(cfg, objectives, num_classes=data.num_classes)
        t0 = time.time()
        result = evaluate_candidate(
            spec,
            data,
            cfg,
            trial_number=number,
            latency_model=latency_model,
            report=report if cfg.early_stop else None,
            checkpoint=cfg.out_dir / "checkpoints" / f"trial_{number}.pt",
            on_static=static.update,
        )
    except Exception as e:  # noqa: BLE001 - deterministic failures are not retried
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        tracker.fail(run_id, reason)
        tune.report({"error": reason, "mlflow_run_id": run_id})
        return
    if isinstance(result, Infeasible):
        tracker.log(run_id, tags={"compactnas.infeasible": result.reason})
        tracker.end(run_id, "FINISHED")
        tune.report(
            {"infeasible": result.reason, "violations": result.violations, "mlflow_run_id": run_id}
        )
        return
    result["train_seconds"] = round(time.time() - t0, 3)
    tracker.log(run_id, metrics=result)
    tracker.end(run_id, "FINISHED")
    tune.report({**result, "final": 1, "mlflow_run_id": run_id})


_TRACKERS: dict[tuple[str, str], Tracker] = {}


def _worker_tracker(uri: str, experiment: str) -> Tracker:
    # Actors are reused across trials: keep one tracking client (and its store connection) per process.
    key = (uri, experiment)
    if key not in _TRACKERS:
        _TRACKERS[key] = Tracker(uri, experiment, None)
    return _TRACKERS[key]


def _close_earlier_attempts(tracker: Tracker, parent_id: str, number: int) -> None:
    """A retried trial's earlier attempt died with its worker: mark its run KILLED, not RUNNING forever."""
    for run in tracker.children(parent_id):
        if run.data.params.get("trial") == str(number) and run.info.status == "RUNNING":
            tracker.log(run.info.run_id, tags={"compactnas.error": "worker died; trial retried"})
            tracker.end(run.info.run_id, "KILLED")


def _searcher_class() -> type:
    from ray.tune.search.optuna import OptunaSearch

    class CompactnasSearch(OptunaSearch):
        """OptunaSearch that records our trial attributes and tells Optuna the right state."""

        def __init__(
            self, *args: Any, progress: Progress, objectives: list, tracker: Tracker, **kwargs: Any
        ):
            super().__init__(*args, **kwargs)
            self._progress = progress
            self._objectives = objectives
            self._tracker = tracker

        def __getstate__(self) -> dict:
            # Tune pickles its searcher for experiment restore; the terminal and tracking client stay here.
            state = (
                super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
            )
            state = dict(state)
            state.pop("_progress", None)
            state.pop("_tracker", None)
            return state

        def save(self, checkpoint_path: str) -> None:
            # Every told trial is already in the Optuna SQLite study, which --resume reads; Tune's own
            # searcher snapshot would only duplicate it (and cannot pickle the space function).
            with open(checkpoint_path, "w") as f:
                f.write("state kept in the Optuna study (study.db)\n")

        def restore(self, checkpoint_path: str) -> None:
            return None

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if trial_id in self._completed_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            result = result or {}
            run_id = result.get("mlflow_run_id")
            if run_id:
                ot_trial.set_user_attr("mlflow_run_id", run_id)
            values = None
            if error or (not result):
                reason = "the worker failed (retries exhausted)"
                ot_trial.set_user_attr("error", reason)
                state, outcome, detail = TrialState.FAIL, "failed", reason
                if run_id:
                    self._end_run(run_id, "FAILED", reason)
            elif "error" in result:
                ot_trial.set_user_attr("error", result["error"])
                state, outcome, detail = TrialState.FAIL, "failed", result["error"]
            elif "infeasible" in result:
                for key, amount in (result.get("violations") or {}).items():
                    ot_trial.set_constraint(key, amount)
                ot_trial.set_user_attr("infeasible", result["infeasible"])
                state, outcome, detail = TrialState.PRUNED, "infeasible", result["infeasible"]
            elif not result.get("final"):
                epochs = int(result.get("epoch", 0))
                metrics = {k: float(v) for k, v in result.items() if _is_metric(k, v)}
                ot_trial.set_user_attr("metrics", metrics)
                ot_trial.set_user_attr("stopped_early", epochs)
                state, outcome = TrialState.PRUNED, "stopped"
                detail = f"acc {result.get('accuracy', float('nan')):.3f} after {epochs} epochs"
                if run_id:
                    self._end_run(
                        run_id, "FINISHED", None, tags={"compactnas.stopped_early": epochs}
                    )
            else:
                metrics = {k: float(v) for k, v in result.items() if _is_metric(k, v)}
                metrics.pop("final", None)
                ot_trial.set_user_attr("metrics", metrics)
                values = [metrics[o.metric] for o in self._objectives]
                state, outcome = TrialState.COMPLETE, "ok"
                detail = (
                    f"acc {metrics['accuracy']:.3f}  {metrics['latency_ms']:.3f} ms  "
                    f"{metrics['size_bytes'] / 1024:.1f} KB"
                )
            self._ot_study.tell(ot_trial, values, state=state)
            self._completed_trials.add(trial_id)
            self._progress.trial_done(ot_trial.number, outcome, detail)

        def _end_run(
            self, run_id: str, status: str, error: str | None, tags: dict | None = None
        ) -> None:
            try:
                run = self._tracker.client.get_run(run_id)
                if run.info.status == "RUNNING":
                    self._tracker.log(
                        run_id,
                        tags={**(tags or {}), **({"compactnas.error": error} if error else {})},
                    )
                    self._tracker.end(run_id, status)
            except Exception as e:  # noqa: BLE001 - tracking must not stop the search
                log.warning("could not finish MLflow run %s: %s", run_id, e)

    return CompactnasSearch


_NOT_METRICS = {"epoch", "final", "mlflow_run_id", "trial_id", "training_iteration", "timestamp", "time_this_iter_s",
                "time_total_s", "pid", "time_since_restore", "iterations_since_restore", "done"}  # fmt: skip


def _is_metric(key: str, value: Any) -> bool:
    return (
        key not in _NOT_METRICS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and not key.startswith(("config", "node_ip", "hostname", "date", "experiment"))
    )


def _init_ray(cfg: SearchConfig) -> bool:
    """Connect to (or start) Ray; True when this call did, so the search also disconnects."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if cfg.address:
        try:
            ray.init(address=cfg.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(
                f"cannot join the Ray cluster at {cfg.address}: {str(e).splitlines()[0]}"
            ) from None
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)  # inside a Ray job (compactnas submit): the job's own cluster
    else:
        need = max(1, int(round(cfg.concurrency * cfg.cpus_per_trial)))
        ray.init(address="local", num_cpus=max(need, os.cpu_count() or 1), **kwargs)
    return True


def run_ray_search(cfg: SearchConfig, *, data: Dataset | None = None, quiet: bool = False) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from compactnas.search import study as local
    from compactnas.spaces import create_space

    objectives = resolve_objectives(cfg.objectives)
    local.resolve_latency_model(
        cfg, objectives
    )  # unknown device or objective: fail before Ray starts
    if (
        cfg.address
        and cfg.address.startswith(("ray://", "http")) is False
        and ":" not in cfg.address
    ):
        raise ConfigError(f"Ray address must be HOST:PORT or ray://HOST:PORT, got '{cfg.address}'")
    data_given = data is not None
    data = data if data is not None else load_data(cfg.data, seed=cfg.seed, resize=cfg.resize)
    data = take_subset(data, train=cfg.subset, val=cfg.val_subset, seed=cfg.seed)
    space = create_space(cfg.space, image_size=data.image_size, compress=cfg.compress)
    out = cfg.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output folder {out}: {e.strerror}") from None
    uri = cfg.tracking_uri or default_tracking_uri(out)
    tracker = Tracker(uri, cfg.experiment, out / "mlartifacts")
    study = local._open_study(cfg, objectives)
    parent_id = tracker.start_parent(
        cfg.study_name, cfg.to_dict(), study.user_attrs.get("mlflow_run_id")
    )
    study.set_user_attr("mlflow_run_id", parent_id)
    recovered = local._recover_interrupted(study, tracker)
    used = local._budget_used(study)
    remaining = cfg.trials - used
    progress = Progress(total=cfg.trials, done=used, quiet=quiet)
    if recovered:
        progress.note(f"resumed: {recovered} interrupted trial(s) queued again")
    started = time.time()
    status = "FINISHED"
    connected_here = False
    try:
        here: str | None = os.getcwd()
    except FileNotFoundError:
        here = None
    try:
        if remaining > 0:
            # Tune resolves result paths against the current directory. Inside a Ray job that is the
            # job's unpacked working directory, which connecting to the cluster may replace under us.
            os.chdir(out)
            connected_here = _init_ray(cfg)

            def define_by_run(trial: Any) -> dict[str, Any]:
                spec = space.sample(trial)
                trial.set_user_attr("arch", str(spec))
                return {"arch": str(spec), "trial_number": trial.number}

            searcher = _searcher_class()(
                space=define_by_run,
                metric=[o.metric for o in objectives],
                mode=["max" if o.direction == "maximize" else "min" for o in objectives],
                sampler=local.make_sampler(cfg),
                study_name=cfg.study_name,
                storage=optuna.storages.RDBStorage(local.storage_url(out)),
                progress=progress,
                objectives=objectives,
                tracker=tracker,
            )
            scheduler = (
                ASHAScheduler(
                    metric="accuracy", mode="max", time_attr="epoch", max_t=cfg.epochs,
                    grace_period=cfg.grace_epochs, reduction_factor=cfg.halving_rate,
                )
                if cfg.early_stop
                else FIFOScheduler()
            )  # fmt: skip
            settings = {"config": cfg.to_dict(), "tracking_uri": uri, "parent_id": parent_id}
            trainable = tune.with_parameters(
                _trainable, data=data if data_given else None, settings=settings
            )
            trainable = tune.with_resources(
                trainable, {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                    max_concurrent_trials=cfg.concurrency, reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=f"{cfg.study_name}-{int(time.time())}",
                    storage_path=str(out / "ray"),
                    failure_config=tune.FailureConfig(max_failures=cfg.max_retries),
                    verbose=0,
                ),
            )  # fmt: skip
            with progress:
                tuner.fit()
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if connected_here:
            import ray

            ray.shutdown()  # promptly: left to interpreter exit, it can take tens of seconds
        if here is not None and os.path.isdir(here):
            os.chdir(here)
        summary, trials = local.finish_search(
            cfg, study, objectives, data, tracker, parent_id, started=started, status=status
        )
    front = local.pareto_front(trials[trials["state"] == "COMPLETE"], objectives)
    return local.SearchResult(out_dir=out, summary=summary, trials=trials, front=front, study=study)
