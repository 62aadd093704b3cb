"""MLflow tracking: one run per search, one nested run per trial.

The default store is embedded: a SQLite file in the search's output folder, with artifacts beside it.
Tracking never stops a search: after its first failure the tracker says so once on stderr and stays
quiet; every trial is still in the study and the output folder, and ``compactnas track OUT`` (or
``--resume``) logs the missing runs later (see relog.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from compactnas.core.errors import ConfigError
from compactnas.search.export.mlflow_model import relocate_store, resolve_tracking_uri

for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(_name).setLevel(logging.WARNING)

log = logging.getLogger("compactnas")

# MLflow retries a failing HTTP call for minutes by default; a search should notice a dead server in
# seconds and go on. A user's own setting of these variables wins.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


class ParentRunMissing(ConfigError):
    """The study names a parent run the tracking store does not hold."""


# MLflow 3 opens an experiment on its GenAI (traces) view unless the experiment says it trains models.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# The MLflow UI restores a saved runs-table view from an experiment tag with this prefix.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# Trial metrics shown as columns of the runs table (those a trial lacks stay empty).
TRIAL_COLUMNS = (
    "accuracy", "test_accuracy", "latency_ms", "size_bytes", "params", "macs", "energy_mj",
    "peak_sram_kb", "epochs",
)  # fmt: skip


def search_run_name(params: dict[str, Any]) -> str | None:
    """'space · device · folder' for a search's run, from its configuration; None without one."""
    if "out" not in params:
        return None
    return f"{params.get('space', 'space')} · {params.get('device') or 'host'} · {Path(str(params['out'])).name}"


def search_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The parent run's result metrics: front size, best validation accuracy on it, hypervolume."""
    front = summary.get("pareto") or []
    accs = [float(p["accuracy"]) for p in front if p.get("accuracy") is not None]
    out = {"front_size": float(len(front)), "hypervolume": float(summary.get("hypervolume", 0.0))}
    if accs:
        out["best_accuracy"] = max(accs)
    return out


def runs_view_key(parent_id: str) -> str:
    return f"compactnas-{parent_id}"


def runs_view_state(parent_id: str) -> str:
    """The runs table of one search: its trials, best accuracy first, key metrics as columns."""
    return json.dumps(
        {
            "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_id}'",
            "orderByKey": "metrics.`accuracy`",
            "orderByAsc": False,
            "startTime": "ALL",
            "lifecycleFilter": "Active",
            "modelVersionFilter": "All Runs",
            "datasetsFilter": [],
            "selectedColumns": [
                "attributes.`Run Name`",
                "params.`arch`",
                *(f"metrics.`{m}`" for m in TRIAL_COLUMNS),
            ],
            "viewMaximized": False,
            "runListHidden": False,
        }
    )


def runs_url(base: str, experiment_id: str, parent_id: str | None) -> str:
    """The MLflow UI address of the runs table (of one search when ``parent_id`` is known)."""
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return f"{url}?viewStateShareKey={runs_view_key(parent_id)}" if parent_id else url


def default_tracking_uri(out_dir: Path) -> str:
    return f"sqlite:///{out_dir / 'mlflow.db'}"


def check_tracking_server(uri: str, *, timeout: float = 5.0) -> None:
    """An http(s) tracking URI must answer before any trial starts."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:  # noqa: S310
            if r.status != 200:
                raise ConfigError(f"MLflow tracking server at {uri} answered {r.status} on /health")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"cannot reach the MLflow tracking server at {uri}: {reason}") from None


class Tracker:
    """Thin wrapper over MlflowClient; every call batches what it can into one request.

    ``connect`` and ``start_parent`` raise (a search must not start against a dead store); every later
    call is guarded: the first failure marks the tracker ``broken`` and is reported once, and from then
    on calls return None without trying again, so a dead server costs seconds, not minutes per call.
    """

    def __init__(
        self, uri: str, experiment: str, artifact_dir: Path | None, *, relog_hint: str = ""
    ):
        self.uri = uri
        self.experiment_name = experiment
        self.artifact_dir = artifact_dir
        self.relog_hint = relog_hint
        self.broken: str | None = None
        self._client: Any = None
        self.experiment_id: str | None = None
        if uri.startswith(("http://", "https://")):
            for key, value in _HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            check_tracking_server(self.uri)
            if self.artifact_dir is not None:
                own = self.artifact_dir.parent / "mlflow.db"
                if self.uri == f"sqlite:///{own}" and own.is_file():  # a moved folder's own store
                    relocate_store(own, self.artifact_dir)
            client = MlflowClient(tracking_uri=self.uri)
            exp = client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                location = self.artifact_dir.as_uri() if self.artifact_dir is not None else None
                self.experiment_id = client.create_experiment(
                    self.experiment_name, artifact_location=location
                )
            else:
                self.experiment_id = exp.experiment_id
            client.set_experiment_tag(self.experiment_id, *EXPERIMENT_KIND)
            self._client = client
        return self._client

    def connect(self) -> Tracker:
        _ = self.client
        return self

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.broken is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - tracking must never stop a search
            self.broken = (
                f"{what}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            )
            print(
                f"compactnas: warning: MLflow tracking at {self.uri} failed ({self.broken}); the "
                f"search goes on and keeps every trial{self.relog_hint}",
                file=sys.stderr,
                flush=True,
            )
            return None

    # -- runs -----------------------------------------------------------------------------------
    def start_parent(
        self, name: str, params: dict[str, Any], existing_run_id: str | None = None
    ) -> str:
        """The search's run: the existing one on resume, else a new one.

        An existing id the store does not hold raises ParentRunMissing (the caller decides whether to
        start a new parent and re-log); any other failure propagates, never a silent second parent.
        """
        c = self.client
        if existing_run_id is not None:
            from mlflow.exceptions import MlflowException

            try:
                c.get_run(existing_run_id)
            except MlflowException as e:
                if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                    raise ParentRunMissing(
                        f"the search's MLflow run {existing_run_id} is not in {self.uri}"
                    ) from None
                raise
            c.update_run(existing_run_id, status="RUNNING")
            self._save_view(existing_run_id)
            return existing_run_id
        return self.new_parent(name, params)

    def new_parent(self, name: str, params: dict[str, Any]) -> str:
        tags = {"compactnas.kind": "search", "compactnas.study": name}
        run = self.client.create_run(
            self.experiment_id, run_name=search_run_name(params) or name, tags=tags
        )
        self._log(run.info.run_id, params=params)
        self._save_view(run.info.run_id)
        return run.info.run_id

    def _save_view(self, parent_id: str) -> None:
        self.client.set_experiment_tag(
            self.experiment_id,
            VIEW_TAG_PREFIX + runs_view_key(parent_id),
            runs_view_state(parent_id),
        )

    def start_child(
        self,
        parent_id: str | None,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
    ) -> str | None:
        if parent_id is None:
            return None

        def create() -> str:
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={"mlflow.parentRunId": parent_id, "compactnas.kind": "trial", **(tags or {})},
            )
            self._log(run.info.run_id, params=params)
            return run.info.run_id

        return self._guard("starting a trial run", create)

    def log(
        self,
        run_id: str | None,
        *,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, Any] | None = None,
        step: int = 0,
    ) -> None:
        if run_id is not None:
            self._guard(
                "logging", self._log, run_id, params=params, metrics=metrics, tags=tags, step=step
            )

    def _log(
        self,
        run_id: str,
        *,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, Any] | None = None,
        step: int = 0,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()],
        )

    def end(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id is not None:
            self._guard("ending a run", self.client.set_terminated, run_id, status=status)

    def artifact(self, run_id: str | None, path: Path) -> None:
        if run_id is not None:
            self._guard("logging an artifact", self.client.log_artifact, run_id, str(path))

    def status(self, run_id: str) -> str | None:
        run = self._guard("reading a run", self.client.get_run, run_id)
        return run.info.status if run is not None else None

    def children(self, parent_id: str) -> list[Any]:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            max_results=50000,
        )


def search_ui_url(out: Path, base: str) -> str:
    """The runs table of the search in ``out`` on the MLflow UI at ``base``; the UI's root when the
    search's run cannot be found in its store."""
    try:
        summary = json.loads((out / "summary.json").read_text())
        run_id = summary["mlflow"]["run_id"]
        from mlflow.tracking import MlflowClient

        uri = resolve_tracking_uri(summary["mlflow"].get("tracking_uri"), out)
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
        return runs_url(base, run.info.experiment_id, run_id)
    except Exception:  # noqa: BLE001 - an address to start from is still useful
        return base
