"""Serving optuna-dashboard on a search's study (Pareto front, history, parameter importance)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from compactnas.core.errors import ConfigError
from compactnas.search.study import load_trials, storage_url


def serve_dashboard(out: str | Path, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Block serving the dashboard of the study in ``out`` until interrupted."""
    try:
        import optuna_dashboard
    except ImportError:
        raise ConfigError(
            "the dashboard needs optuna-dashboard: pip install optuna-dashboard"
        ) from None

    folder = Path(out).expanduser().resolve()
    study, _, objectives = load_trials(folder)
    names = [o.metric for o in objectives]
    if len(names) == len(study.directions):
        try:  # axis labels in the dashboard's plots instead of "Objective 0, 1, ..."
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # set_metric_names is marked experimental
                study.set_metric_names(names)
        except Exception:  # noqa: BLE001 - a read-only store still serves, with generic labels
            pass
    study_id = study._study_id  # the dashboard addresses studies by storage id
    print(
        f"optuna-dashboard for {folder}: open http://{host}:{port}/dashboard/studies/{study_id} "
        "(Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    optuna_dashboard.run_server(storage_url(folder), host=host, port=port)
