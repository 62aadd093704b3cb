"""The Optuna study of a search: where it is stored, how it is opened, recovered and read back.

Every trial is written to a SQLite study in the output folder as soon as it ends, so a search that is
killed loses nothing it completed; a trial that was running when the process died is tried again with
the same parameters.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from compactnas.core.errors import ConfigError
from compactnas.search.config import SearchConfig
from compactnas.search.objectives import Objective, resolve_objectives
from compactnas.search.strategies import create_sampler, workers_of

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Settings that define what a study is; a resumed study must keep them.
# Settings that define what a study's numbers mean: a resumed study must keep them all, or it would mix
# accuracies (or latencies) of two kinds. A setting missing from an older study's record is not compared.
IDENTITY = (
    "space", "data", "resize", "compress", "share_weights", "exits", "objectives", "device", "seed",
    # how a candidate's accuracy is obtained: the evaluator, its recipe and the data it sees
    "evaluator", "supernet", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
    "label_smoothing", "augment", "warmup", "ema", "tta", "subset", "val_subset", "table_accuracy", "table_latency",
    # how host latency is measured
    "host_runtime", "latency_threads",
)  # fmt: skip


def storage_url(out_dir: Path) -> str:
    return f"sqlite:///{out_dir / 'study.db'}"


def make_sampler(cfg: SearchConfig) -> optuna.samplers.BaseSampler:
    """The configured strategy (search/strategies/), told how many candidates run at once."""

    return create_sampler(
        cfg.sampler,
        seed=cfg.seed,
        trials=cfg.trials,
        workers=workers_of(cfg),
        space_name=cfg.space,
        population=cfg.population,
    )


def _study_names(out: Path) -> list[str]:
    if not (out / "study.db").exists():
        return []
    return [s.study_name for s in optuna.get_all_study_summaries(storage_url(out))]


def open_study(cfg: SearchConfig, objectives: list[Objective]) -> optuna.Study:
    """Create the study, or continue it with ``resume`` (refused when its defining settings changed)."""
    out = cfg.out_dir
    existing = _study_names(out)
    if cfg.study_name in existing and not cfg.resume:
        raise ConfigError(
            f"{out} already holds study '{cfg.study_name}': pass --resume to continue it, or choose another --out"
        )
    if cfg.resume and cfg.study_name not in existing:
        raise ConfigError(
            f"nothing to resume: {out} holds no study '{cfg.study_name}' (drop --resume to start one)"
        )
    study = _create(cfg, objectives)
    stored = study.user_attrs.get("config")
    if stored is None:
        study.set_user_attr("config", cfg.to_dict())
    else:
        now = cfg.to_dict()
        changed = [k for k in IDENTITY if k in stored and stored[k] != now.get(k)]
        if changed:
            diffs = ", ".join(f"{k}: {stored.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise ConfigError(
                f"cannot resume study '{cfg.study_name}' with different settings ({diffs})"
            )
    return study


def _create(cfg: SearchConfig, objectives: list[Objective]) -> optuna.Study:
    from sqlalchemy.exc import OperationalError

    for attempt in range(3):
        try:
            return optuna.create_study(
                storage=storage_url(cfg.out_dir),
                study_name=cfg.study_name,
                directions=[o.direction for o in objectives],
                sampler=make_sampler(cfg),
                load_if_exists=True,
            )
        except OperationalError:
            # Another process (a dashboard, `compactnas show`) opened the new file at the same
            # moment and created its tables first; the second attempt finds them.
            if attempt == 2:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def trials_frame(study: optuna.Study, objectives: list[Objective]) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.RUNNING, TrialState.WAITING) or t.user_attrs.get("interrupted"):
            continue
        state = t.state.name
        if t.state == TrialState.PRUNED:
            state = "STOPPED" if "stopped_early" in t.user_attrs else "INFEASIBLE"
        row: dict[str, Any] = {"trial": t.number, "state": state, "arch": t.user_attrs.get("arch")}
        row.update(t.user_attrs.get("metrics", {}))
        row["error"] = t.user_attrs.get("error") or t.user_attrs.get("infeasible")
        row["duplicate_of"] = t.user_attrs.get("duplicate_of")
        row["duration_s"] = t.duration.total_seconds() if t.duration else None
        if "screen" in t.user_attrs:  # --screen: the proxies' vote that chose this candidate
            row["screen_vote"] = t.user_attrs["screen"].get("vote")
        rows.append(row)
    cols = ["trial", "state", "arch", *(o.metric for o in objectives), "error", "duplicate_of"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df.columns:
            df[c] = pd.Series(dtype=float if c not in ("state", "arch", "error") else object)
    return df


def interrupted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return list(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Mark a trial left RUNNING by a killed process failed, and queue its parameters again."""
    # Optuna offers no public call to change a finished process's trial; its storage API is the way.
    storage = study._storage  # noqa: SLF001
    storage.set_trial_user_attr(trial._trial_id, "interrupted", True)  # noqa: SLF001
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # noqa: SLF001
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)


def budget_used(study: optuna.Study) -> int:
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=done)
        if not t.user_attrs.get("interrupted")
    )


def open_existing(out_dir: Path | str) -> optuna.Study:
    out = Path(out_dir).expanduser().resolve()
    if not (out / "study.db").is_file():
        raise ConfigError(f"{out} holds no search (no study.db)")
    names = _study_names(out)
    if not names:
        raise ConfigError(f"{out / 'study.db'} holds no study")
    return optuna.load_study(study_name=names[0], storage=storage_url(out))


def load_trials(out_dir: Path) -> tuple[optuna.Study, pd.DataFrame, list[Objective]]:
    """Open a finished or running search's study read-only, for show/export/distill."""
    study = open_existing(out_dir)
    cfg = study.user_attrs.get("config", {})
    objectives = resolve_objectives(tuple(cfg.get("objectives", ("accuracy", "latency", "size"))))
    return study, trials_frame(study, objectives), objectives
