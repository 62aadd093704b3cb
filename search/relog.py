"""Opening a search's MLflow runs, and logging again what a broken tracking server missed.

Every trial lives in the Optuna study whatever happened to tracking, so the MLflow runs can always be
rebuilt from it: ``relog`` creates the run of each trial the store lacks (and closes a run left
RUNNING), under the search's parent run. ``compactnas track OUT`` calls it; so does ``--resume`` on
a study whose tracking was cut short.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from compactnas.core.errors import ConfigError
from compactnas.search.config import SearchConfig
from compactnas.search.objectives import Objective
from compactnas.search.storage import open_existing
from compactnas.search.tracking import ParentRunMissing, Tracker, default_tracking_uri

_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "FINISHED",
    TrialState.FAIL: "FAILED",
}


def make_tracker(out: Path, uri: str | None, experiment: str) -> Tracker:
    return Tracker(
        uri or default_tracking_uri(out),
        experiment,
        out / "mlartifacts",
        relog_hint=f"; log the missing runs later with `compactnas track {out}`",
    )


def open_tracking(
    cfg: SearchConfig, study: optuna.Study, objectives: list[Objective]
) -> tuple[Tracker, str]:
    """The tracker and the search's parent run (resumed when the study names one)."""
    tracker = make_tracker(cfg.out_dir, cfg.tracking_uri, cfg.experiment).connect()
    parent_id = _parent(tracker, study, cfg.study_name, cfg.to_dict())
    if study.user_attrs.get("tracking_incomplete"):
        n = relog(tracker, study, parent_id, space=cfg.space)
        if n:
            print(f"compactnas: logged {n} missing MLflow run(s)", file=sys.stderr)
        study.set_user_attr("tracking_incomplete", "")
    return tracker, parent_id


def _parent(tracker: Tracker, study: optuna.Study, name: str, params: dict[str, Any]) -> str:
    existing = study.user_attrs.get("mlflow_run_id")
    try:
        parent_id = tracker.start_parent(name, params, existing)
    except ParentRunMissing as e:
        # Another store than before (--tracking-uri changed): say so, and rebuild the runs there.
        parent_id = tracker.new_parent(name, params)
        print(
            f"compactnas: warning: {e}; started run {parent_id} there and logged the study's trials into it",
            file=sys.stderr,
        )
        study.set_user_attr("tracking_incomplete", "new parent run")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - one line, never a silent second parent run
        raise ConfigError(
            f"cannot resume the search's MLflow run {existing} at {tracker.uri}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    study.set_user_attr("mlflow_run_id", parent_id)
    return parent_id


def relog(tracker: Tracker, study: optuna.Study, parent_id: str, *, space: str) -> int:
    """Log the run of every finished trial the store lacks; returns how many runs were written."""
    by_trial: dict[str, Any] = {}
    for run in tracker.children(parent_id):
        by_trial.setdefault(run.data.params.get("trial", ""), run)
    written = 0
    for t in study.get_trials(deepcopy=False):
        if t.state not in _STATUS or "arch" not in t.user_attrs:
            continue
        status = "KILLED" if t.user_attrs.get("interrupted") else _STATUS[t.state]
        run = by_trial.get(str(t.number))
        if run is not None and run.info.status != "RUNNING":
            continue
        if run is None:
            params = {"arch": t.user_attrs["arch"], "trial": t.number, "space": space,
                      **{f"p.{k}": v for k, v in t.params.items()}}  # fmt: skip
            run_id = tracker.start_child(parent_id, f"trial-{t.number}", params)
        else:
            run_id = run.info.run_id
        tracker.log(run_id, metrics=t.user_attrs.get("metrics") or {}, tags=_tags(t))
        tracker.end(run_id, status)
        if tracker.broken is not None:
            raise ConfigError(f"MLflow tracking at {tracker.uri} failed: {tracker.broken}")
        written += 1
    return written


def _tags(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    a = t.user_attrs
    tags = {"compactnas.relogged": 1}
    for key, tag in (("error", "compactnas.error"), ("infeasible", "compactnas.infeasible"),
                     ("duplicate_of", "compactnas.duplicate_of"),
                     ("stopped_early", "compactnas.stopped_early")):  # fmt: skip
        if a.get(key) is not None:
            tags[tag] = a[key]
    if a.get("interrupted"):
        tags["compactnas.error"] = "interrupted: the search process stopped"
    return tags


def track(out_dir: Path | str, *, tracking_uri: str | None = None) -> tuple[str, int]:
    """``compactnas track OUT``: log the search's missing MLflow runs; returns (parent run, runs written)."""

    out = Path(out_dir).expanduser().resolve()
    study = open_existing(out)
    cfg = study.user_attrs.get("config", {})
    tracker = make_tracker(
        out, tracking_uri or cfg.get("tracking_uri"), cfg.get("experiment", "compactnas")
    )
    tracker.relog_hint = ""
    tracker.connect()
    parent_id = _parent(tracker, study, cfg.get("study_name", study.study_name), cfg)
    n = relog(tracker, study, parent_id, space=cfg.get("space", ""))
    for name in ("summary.json", "pareto.csv", "pareto.png", "trials.csv"):
        if (out / name).exists():
            tracker.artifact(parent_id, out / name)
    tracker.end(parent_id, "FINISHED")
    if tracker.broken is not None:
        raise ConfigError(f"MLflow tracking at {tracker.uri} failed: {tracker.broken}")
    study.set_user_attr("tracking_incomplete", "")
    return parent_id, n
