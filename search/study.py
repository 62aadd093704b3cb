"""The local backend: an Optuna multi-objective study driven in this process (ask and tell).

Every trial is written to a SQLite study in the output folder as soon as it ends, so a search that is
killed loses nothing it completed; ``resume=True`` continues it, and a trial that was running when the
process died is tried again with the same parameters.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from compactnas.core.data import Dataset, TableSource, load_data, take_subset
from compactnas.core.errors import ConfigError, TrialDiverged
from compactnas.search.candidate import Infeasible, evaluate_candidate
from compactnas.search.config import SearchConfig
from compactnas.search.early_stop import SuccessiveHalving
from compactnas.search.objectives import Objective, resolve_objectives
from compactnas.search.progress import Progress
from compactnas.search.results import pareto_front, write_results
from compactnas.search.tracking import Tracker, default_tracking_uri, search_metrics
from compactnas.spaces import ArchSpec, create_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger("compactnas")

# Settings that define what a study is; a resumed study must keep them.
_IDENTITY = ("space", "data", "resize", "compress", "objectives", "device", "seed", "epochs")


@dataclass
class SearchResult:
    out_dir: Path
    summary: dict[str, Any]
    trials: pd.DataFrame
    front: pd.DataFrame
    study: optuna.Study


def make_sampler(cfg: SearchConfig) -> optuna.samplers.BaseSampler:
    from compactnas.search.strategies import create_sampler, workers_of

    return create_sampler(
        cfg.sampler,
        seed=cfg.seed,
        trials=cfg.trials,
        workers=workers_of(cfg),
        space_name=cfg.space,
        population=cfg.population,
    )


def storage_url(out_dir: Path) -> str:
    return f"sqlite:///{out_dir / 'study.db'}"


def resolve_latency_model(
    cfg: SearchConfig, objectives: list[Objective], *, num_classes: int = 10
) -> Any | None:
    """The device profile's model, or None to measure on this host.

    An objective the profile cannot score (energy without energy figures, sram on a device without
    SRAM limits) is an error before anything runs. A measured-table profile times a block it lacks
    on this host the first time it is needed, so a new block never fails a trial.
    """
    if cfg.device is None:
        missing = [o.name for o in objectives if o.needs]
        if missing:
            raise ConfigError(
                f"objective(s) {', '.join(missing)} need a device profile (--device NAME)"
            )
        return None
    from compactnas.hw_profiles import create_latency_model, load_profile

    profile = load_profile(cfg.device)
    lacks = {"energy": profile.energy is None, "sram": profile.memory is None}
    unscorable = [o.name for o in objectives if o.needs and lacks.get(o.needs, False)]
    if unscorable:
        raise ConfigError(
            f"device '{profile.name}' has no figures for objective(s) {', '.join(unscorable)}"
        )
    return create_latency_model(profile, num_classes=num_classes, on_missing="measure")


def _open_study(cfg: SearchConfig, objectives: list[Objective]) -> optuna.Study:
    out = cfg.out_dir
    url = storage_url(out)
    existing = (
        [s.study_name for s in optuna.get_all_study_summaries(url)]
        if (out / "study.db").exists()
        else []
    )
    if cfg.study_name in existing and not cfg.resume:
        raise ConfigError(
            f"{out} already holds study '{cfg.study_name}': pass --resume to continue it, or choose another --out"
        )
    study = optuna.create_study(
        storage=url,
        study_name=cfg.study_name,
        directions=[o.direction for o in objectives],
        sampler=make_sampler(cfg),
        load_if_exists=True,
    )
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", cfg.to_dict())
    else:
        now = cfg.to_dict()
        changed = [k for k in _IDENTITY if stored.get(k) != now.get(k)]
        if changed:
            diffs = ", ".join(f"{k}: {stored.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise ConfigError(
                f"cannot resume study '{cfg.study_name}' with different settings ({diffs})"
            )
    return study


def trials_frame(study: optuna.Study, objectives: list[Objective]) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING or t.user_attrs.get("interrupted"):
            continue
        state = t.state.name
        if t.state == TrialState.PRUNED:
            state = "STOPPED" if "stopped_early" in t.user_attrs else "INFEASIBLE"
        row: dict[str, Any] = {"trial": t.number, "state": state, "arch": t.user_attrs.get("arch")}
        row.update(t.user_attrs.get("metrics", {}))
        row["error"] = t.user_attrs.get("error") or t.user_attrs.get("infeasible")
        row["duplicate_of"] = t.user_attrs.get("duplicate_of")
        row["duration_s"] = t.duration.total_seconds() if t.duration else None
        rows.append(row)
    cols = ["trial", "state", "arch", *(o.metric for o in objectives)]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df.columns:
            df[c] = pd.Series(dtype=float if c not in ("state", "arch") else object)
    return df


def _recover_interrupted(study: optuna.Study, tracker: Tracker | None) -> int:
    """Trials left RUNNING by a killed process: mark them failed and queue their parameters again."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        run_id = t.user_attrs.get("mlflow_run_id")
        if tracker is not None and run_id:
            try:
                tracker.log(
                    run_id, tags={"compactnas.error": "interrupted: the search process stopped"}
                )
                tracker.end(run_id, "KILLED")
            except Exception as e:  # noqa: BLE001 - tracking must not block recovery
                log.warning("could not mark MLflow run %s as killed: %s", run_id, e)
        n += 1
    return n


def _halving(cfg: SearchConfig, study: optuna.Study) -> SuccessiveHalving | None:
    if not cfg.early_stop:
        return None
    history: dict[int, list[float]] = {}
    for t in study.get_trials(deepcopy=False):
        for k, v in t.user_attrs.get("rungs", {}).items():
            history.setdefault(int(k), []).append(v)
    return SuccessiveHalving(
        grace=cfg.grace_epochs, rate=cfg.halving_rate, max_epochs=cfg.epochs, history=history
    )


def _budget_used(study: optuna.Study) -> int:
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=done)
        if not t.user_attrs.get("interrupted")
    )


def _trial_params(cfg: SearchConfig, trial: optuna.trial.Trial, spec: ArchSpec) -> dict[str, Any]:
    return {
        "arch": str(spec),
        "trial": trial.number,
        "space": cfg.space,
        **{f"p.{k}": v for k, v in trial.params.items()},
    }


def run_search(
    config: SearchConfig | dict[str, Any] | None = None,
    *,
    data: Dataset | None = None,
    quiet: bool = False,
    **overrides: Any,
) -> SearchResult:
    """Run (or resume) a search; returns the front and the paths of everything written."""
    if config is None:
        config = SearchConfig()
    if isinstance(config, dict):
        from compactnas.search.config import config_from_mapping

        config = config_from_mapping(config)
    cfg = config.replace(**overrides) if overrides else config
    if cfg.backend == "ray":
        from compactnas.search.ray_backend import run_ray_search

        return run_ray_search(cfg, data=data, quiet=quiet)
    objectives = resolve_objectives(cfg.objectives)
    resolve_latency_model(cfg, objectives)  # an unknown device fails before data are loaded
    data = data if data is not None else load_data(cfg.data, seed=cfg.seed, resize=cfg.resize)
    data = take_subset(data, train=cfg.subset, val=cfg.val_subset, seed=cfg.seed)
    latency_model = resolve_latency_model(cfg, objectives, num_classes=data.num_classes)
    if isinstance(data, TableSource):  # table data source: its columns are checked before any trial
        from compactnas.search.table_candidate import check_table

        check_table(cfg, data)
    space = create_space(cfg.space, image_size=data.image_size, compress=cfg.compress)
    out = cfg.out_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output folder {out}: {e.strerror}") from None
    study = _open_study(cfg, objectives)

    tracker = Tracker(
        cfg.tracking_uri or default_tracking_uri(out), cfg.experiment, out / "mlartifacts"
    )
    parent_id = tracker.start_parent(
        cfg.study_name, cfg.to_dict(), study.user_attrs.get("mlflow_run_id")
    )
    study.set_user_attr("mlflow_run_id", parent_id)
    recovered = _recover_interrupted(study, tracker)

    import torch

    torch.set_num_threads(cfg.threads)
    seen: dict[str, tuple[int, list[float], dict[str, float]]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        seen.setdefault(
            t.user_attrs["arch"], (t.number, list(t.values), t.user_attrs.get("metrics", {}))
        )
    used = _budget_used(study)
    halving = _halving(cfg, study)
    progress = Progress(total=cfg.trials, done=used, quiet=quiet)
    if recovered:
        progress.note(f"resumed: {recovered} interrupted trial(s) queued again")
    elif used:
        progress.note(f"resumed: {used} trial(s) already done")
    started = time.time()
    status = "FINISHED"
    try:
        with progress:
            while used < cfg.trials:
                _run_one(
                    cfg,
                    study,
                    space,
                    data,
                    objectives,
                    latency_model,
                    tracker,
                    parent_id,
                    seen,
                    progress,
                    halving,
                )
                used += 1
                front = pareto_front(
                    trials_frame(study, objectives).query("state == 'COMPLETE'"), objectives
                )
                progress.front = len(front)
                tracker.log(
                    parent_id, metrics={"trials_done": used, "front_size": len(front)}, step=used
                )
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        summary, trials = finish_search(
            cfg, study, objectives, data, tracker, parent_id, started=started, status=status
        )
    front = pareto_front(trials[trials["state"] == "COMPLETE"], objectives)
    return SearchResult(out_dir=out, summary=summary, trials=trials, front=front, study=study)


def finish_search(
    cfg: SearchConfig,
    study: optuna.Study,
    objectives: list[Objective],
    data: Dataset,
    tracker: Tracker,
    parent_id: str,
    *,
    started: float,
    status: str,
    **extra: Any,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Write the result files from the study (whatever state it is in) and close the MLflow run."""
    trials = trials_frame(study, objectives)
    info = {
        "config": cfg.to_dict(),
        "data": {
            "name": data.name,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
        },
        "device": cfg.device or "host",
        "backend": cfg.backend,
        "elapsed_s": round(time.time() - started, 2),
        "mlflow": {"tracking_uri": tracker.uri, "run_id": parent_id},
        **extra,
    }
    summary = write_results(cfg.out_dir, trials, objectives, extra=info)
    _finish_parent(tracker, parent_id, summary, cfg.out_dir, status)
    return summary, trials


def _finish_parent(tracker: Tracker, parent_id: str, summary: dict, out: Path, status: str) -> None:
    try:
        tracker.log(
            parent_id,
            metrics={
                "n_complete": summary["n_complete"],
                "n_failed": summary["n_failed"],
                "hypervolume": summary["hypervolume"],
                **search_metrics(summary),
            },
        )
        for name in ("summary.json", "pareto.csv", "pareto.png", "trials.csv"):
            if (out / name).exists():
                tracker.artifact(parent_id, out / name)
        tracker.end(parent_id, status)
    except Exception as e:  # noqa: BLE001 - results on disk are already written
        log.warning("could not finish the MLflow run: %s", e)


def _run_one(
    cfg: SearchConfig,
    study: optuna.Study,
    space: Any,
    data: Dataset,
    objectives: list[Objective],
    latency_model: Any,
    tracker: Tracker,
    parent_id: str,
    seen: dict[str, tuple[int, list[float], dict[str, float]]],
    progress: Progress,
    halving: SuccessiveHalving | None = None,
) -> None:
    trial = study.ask()
    try:
        spec = space.sample(trial)
    except Exception as e:  # noqa: BLE001 - a broken space fails its trial, not the search
        trial.set_user_attr("error", f"sampling failed: {e}")
        study.tell(trial, state=TrialState.FAIL)
        progress.trial_done(trial.number, "failed", f"sampling failed: {e}")
        return
    arch = str(spec)
    trial.set_user_attr("arch", arch)
    run_id = tracker.start_child(
        parent_id, f"trial-{trial.number}", _trial_params(cfg, trial, spec)
    )
    trial.set_user_attr("mlflow_run_id", run_id)
    progress.start(trial.number, arch)

    if arch in seen:
        # The same string was trained already: its record stands for this trial too.
        first, values, metrics = seen[arch]
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("duplicate_of", first)
        study.tell(trial, values)
        tracker.log(run_id, metrics=metrics, tags={"compactnas.duplicate_of": first})
        tracker.end(run_id, "FINISHED")
        progress.trial_done(trial.number, "duplicate", f"same as trial {first}")
        return

    t0 = time.time()
    rungs: dict[int, float] = {}
    try:
        result = evaluate_candidate(
            spec,
            data,
            cfg,
            trial_number=trial.number,
            latency_model=latency_model,
            report=halving.reporter(rungs) if halving is not None else None,
            checkpoint=cfg.out_dir / "checkpoints" / f"trial_{trial.number}.pt",
        )
    except (Exception, TrialDiverged) as e:  # noqa: BLE001 - one bad candidate must not end the search
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        trial.set_user_attr("error", reason)
        study.tell(trial, state=TrialState.FAIL)
        tracker.fail(run_id, reason)
        progress.trial_done(trial.number, "failed", reason)
        return

    if isinstance(result, Infeasible):
        for key, amount in result.violations.items():
            trial.set_constraint(key, amount)
        trial.set_user_attr("infeasible", result.reason)
        study.tell(trial, state=TrialState.PRUNED)
        tracker.log(run_id, tags={"compactnas.infeasible": result.reason})
        tracker.end(run_id, "FINISHED")
        progress.trial_done(trial.number, "infeasible", result.reason)
        return

    result["train_seconds"] = round(time.time() - t0, 3)
    if rungs:
        trial.set_user_attr("rungs", {str(k): v for k, v in rungs.items()})
    if result.get("stopped_early"):
        # Stopped by successive halving: its accuracy is a partial one, so it does not join the front.
        epochs = int(result["epochs"])
        trial.set_user_attr("metrics", result)
        trial.set_user_attr("stopped_early", epochs)
        study.tell(trial, state=TrialState.PRUNED)
        tracker.log(run_id, metrics=result, tags={"compactnas.stopped_early": epochs})
        tracker.end(run_id, "FINISHED")
        progress.trial_done(
            trial.number, "stopped", f"acc {result['accuracy']:.3f} after {epochs} epochs"
        )
        return
    values = [result[o.metric] for o in objectives]
    trial.set_user_attr("metrics", result)
    study.tell(trial, values)
    seen[arch] = (trial.number, values, result)
    tracker.log(run_id, metrics=result)
    tracker.end(run_id, "FINISHED")
    progress.trial_done(
        trial.number,
        "ok",
        f"acc {result['accuracy']:.3f}  {result['latency_ms']:.3f} ms  {result['size_bytes'] / 1024:.1f} KB",
    )


def load_trials(out_dir: Path) -> tuple[optuna.Study, pd.DataFrame, list[Objective]]:
    """Open a finished or running search's study read-only, for show/export/distill."""
    out = Path(out_dir).expanduser().resolve()
    if not (out / "study.db").is_file():
        raise ConfigError(f"{out} holds no search (no study.db)")
    url = storage_url(out)
    names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    if not names:
        raise ConfigError(f"{out / 'study.db'} holds no study")
    study = optuna.load_study(study_name=names[0], storage=url)
    cfg = study.user_attrs.get("config", {})
    objectives = resolve_objectives(tuple(cfg.get("objectives", ("accuracy", "latency", "size"))))
    return study, trials_frame(study, objectives), objectives


def dump_config(cfg: SearchConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=2)
