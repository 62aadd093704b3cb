"""MLflow tracking: one run per search, one nested run per trial.

The default store is embedded: a SQLite file in the search's output folder, with artifacts beside it.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from compactnas.core.errors import ConfigError

for _name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(_name).setLevel(logging.WARNING)


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
    """Thin wrapper over MlflowClient; every call batches what it can into one request."""

    def __init__(self, uri: str, experiment: str, artifact_dir: Path | None):
        self.uri = uri
        self.experiment_name = experiment
        self.artifact_dir = artifact_dir
        self._client: Any = None
        self.experiment_id: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            check_tracking_server(self.uri)
            self._client = MlflowClient(tracking_uri=self.uri)
            exp = self._client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                location = self.artifact_dir.as_uri() if self.artifact_dir is not None else None
                self.experiment_id = self._client.create_experiment(
                    self.experiment_name, artifact_location=location
                )
            else:
                self.experiment_id = exp.experiment_id
        return self._client

    def start_parent(
        self, name: str, params: dict[str, Any], existing_run_id: str | None = None
    ) -> str:
        c = self.client
        if existing_run_id is not None:
            try:
                c.get_run(existing_run_id)
                c.update_run(existing_run_id, status="RUNNING")
                return existing_run_id
            except Exception:  # noqa: BLE001 - the old run is gone (another store): start a new one
                pass
        run = c.create_run(self.experiment_id, run_name=name, tags={"compactnas.kind": "search"})
        self.log(run.info.run_id, params=params)
        return run.info.run_id

    def start_child(
        self, parent_id: str, name: str, params: dict[str, Any], tags: dict[str, str] | None = None
    ) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"mlflow.parentRunId": parent_id, "compactnas.kind": "trial", **(tags or {})},
        )
        self.log(run.info.run_id, params=params)
        return run.info.run_id

    def log(
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

    def fail(self, run_id: str, reason: str) -> None:
        """End a run as FAILED with the one-line reason and the current exception's traceback."""
        import traceback

        tags = {"compactnas.error": reason, "compactnas.traceback": traceback.format_exc()[-4000:]}
        self.log(run_id, tags=tags)
        self.end(run_id, "FAILED")

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def artifact(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))

    def children(self, parent_id: str) -> list[Any]:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            max_results=50000,
        )
