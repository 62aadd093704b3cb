"""Logging exports as MLflow models on their trial's run, so the UI lists them and MLflow's own loaders
(``mlflow.pyfunc.load_model``, ``mlflow.onnx.load_model``, ``mlflow.pytorch.load_model``) read them back."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from compactnas.search.export.edge import EDGE_FORMATS
from compactnas.search.export.formats import deployable
from compactnas.search.export.loading import load_exported

# MLflow model names per format ('-' reads oddly in the UI's model list).
MODEL_NAMES = {
    "onnx": "onnx",
    "onnx-int8": "onnx_int8",
    "torchscript": "torchscript",
    "state-dict": "pytorch",
}


def resolve_tracking_uri(summary_uri: str | None, out_dir: Path) -> str | None:
    """The search's tracking URI. A search's own SQLite store (``mlflow.db`` in its folder) is the one
    in the folder as it is now, so a copied or moved folder reads and writes its own copy, never the
    original; its stored artifact locations are first re-pointed at the folder (``relocate_store``).
    Any other store (a server, a database elsewhere) is the summary's."""
    local = out_dir / "mlflow.db"
    if local.is_file() and (not summary_uri or summary_uri.startswith("sqlite:///")):
        relocate_store(local, out_dir / "mlartifacts")
        return f"sqlite:///{local}"
    if summary_uri and summary_uri.startswith("sqlite:///"):
        return summary_uri if Path(summary_uri[len("sqlite:///") :]).is_file() else None
    return summary_uri or None


# Columns of MLflow's SQL store that hold artifact locations.
_ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"), ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
    ("model_versions", "source"),
)  # fmt: skip


def relocate_store(db: Path, artifacts: Path) -> int:
    """Re-point the artifact locations that a search folder's SQLite store holds at ``artifacts``
    (the folder's ``mlartifacts`` as it is now), from wherever the folder was when they were written.
    MLflow stores them as absolute URIs, so without this a copied folder's UI would list the
    original's artifacts, and none once the original is gone. Returns the rows changed (0 in place)."""
    import sqlite3

    new = artifacts.as_uri()
    con = sqlite3.connect(db)
    try:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        if "experiments" not in tables:
            return 0
        olds = {
            loc
            for (loc,) in con.execute("select artifact_location from experiments")
            if loc and loc.rstrip("/").endswith("/mlartifacts") and loc.rstrip("/") != new
        }
        changed = 0
        with con:
            for old in olds:
                for table, col in _ARTIFACT_COLUMNS:
                    if table not in tables:
                        continue
                    cur = con.execute(
                        f"update {table} set {col} = ? || substr({col}, ?) "  # noqa: S608 - fixed names
                        f"where {col} = ? or {col} like ? escape '\\'",
                        (new, len(old) + 1, old, _like_prefix(old + "/")),
                    )
                    changed += cur.rowcount
        return changed
    finally:
        con.close()


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@contextlib.contextmanager
def _on_run(tracking_uri: str, run_id: str) -> Iterator[Any]:
    """The fluent API's active run, on ``tracking_uri``, leaving the caller's global MLflow state as found."""
    import mlflow

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        # nested=True: a caller (a notebook, a test) may have a run of its own open.
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None) as run:
            yield run
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets it again


def log_exports(
    *,
    tracking_uri: str,
    run_id: str,
    exports: dict[str, Path],
    example: np.ndarray,
    outputs: np.ndarray,
    torch_models: dict[str, Any],
) -> dict[str, dict[str, str]]:
    """Log each export in ``exports`` (format -> file) as an MLflow model on ``run_id``.

    ``example`` is a batch of inputs and ``outputs`` its logits; they give the signature (batch axis
    free). ``torch_models`` maps 'torchscript'/'state-dict' to the in-memory module to log.
    Returns format -> {model_uri, model_id, run_id, tracking_uri}.
    """
    from mlflow.models import infer_signature

    signature = infer_signature(example.astype(np.float32), outputs.astype(np.float32))
    logged: dict[str, dict[str, str]] = {}
    with _on_run(tracking_uri, run_id):
        for fmt, path in exports.items():
            name = MODEL_NAMES.get(fmt)
            if name is None:
                continue
            if fmt.startswith("onnx"):
                import mlflow.onnx
                import onnx

                info = mlflow.onnx.log_model(
                    onnx.load(str(path)),
                    name=name,
                    signature=signature,
                    onnx_execution_providers=["CPUExecutionProvider"],
                    save_as_external_data=False,
                )
            else:
                import mlflow.pytorch
                import torch

                # Explicit requirements: MLflow would otherwise infer them by loading the model in a
                # subprocess, which costs seconds per model.
                reqs = [f"torch=={torch.__version__.split('+')[0]}"]
                if fmt == "state-dict":
                    import timm

                    reqs += [f"timm=={timm.__version__}", "compactnas"]
                # 'pickle': MLflow's default 'pt2' format refuses TorchScript modules.
                info = mlflow.pytorch.log_model(
                    torch_models[fmt],
                    name=name,
                    signature=signature,
                    pip_requirements=reqs,
                    serialization_format="pickle",
                )
            logged[fmt] = {
                "model_uri": info.model_uri,
                "model_id": str(info.model_id),
                "run_id": run_id,
                "tracking_uri": tracking_uri,
            }
    return logged


def log_trial_exports(
    out: Path,
    summary: dict[str, Any],
    frozen: Any,
    files: dict[str, Path],
    data: Any,
    reference: np.ndarray,
    model: Any,
) -> dict[str, Any]:
    """Log a trial's exports on its own MLflow run; returns format -> info, or {'error': message}."""

    loggable = {f: p for f, p in files.items() if f in MODEL_NAMES}
    if not loggable:
        return {}
    run_id = frozen.user_attrs.get("mlflow_run_id")
    uri = resolve_tracking_uri(summary.get("mlflow", {}).get("tracking_uri"), out)
    if not run_id or not uri:
        return {"error": "the trial has no MLflow run to log the export to"}
    torch_models: dict[str, Any] = {}
    if "torchscript" in loggable:
        torch_models["torchscript"] = load_exported(loggable["torchscript"])
    if "state-dict" in loggable:
        # MLflow pickles the module: a clustered one is logged with its shared weights written out
        # (parametrized modules cannot be pickled); the numbers are the same.
        torch_models["state-dict"] = deployable(model)
    n = min(8, len(data.test.x))
    try:
        return log_exports(
            tracking_uri=uri,
            run_id=run_id,
            exports=loggable,
            example=data.test.x[:n].numpy(),
            outputs=reference[:n],
            torch_models=torch_models,
        )
    except Exception as e:  # noqa: BLE001 - the exports on disk stand; the card says what failed
        return {
            "error": f"could not log to {uri}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        }


def log_edge_exports(
    enabled: bool,
    out: Path,
    summary: dict[str, Any],
    frozen: Any,
    files: dict[str, Path],
    entries: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Log each edge export's file and its checks on the trial's MLflow run (MLflow has no model flavor
    for these files, so they are artifacts beside metrics named ``export_<format>_<check>``)."""

    done = {f: p for f, p in files.items() if f in EDGE_FORMATS and f in entries}
    if not enabled or not done:
        return {}
    run_id = frozen.user_attrs.get("mlflow_run_id")
    uri = resolve_tracking_uri(summary.get("mlflow", {}).get("tracking_uri"), out)
    if not run_id or not uri:
        return {"error": "the trial has no MLflow run to log the export to"}
    import mlflow

    logged: dict[str, Any] = {}
    try:
        with _on_run(uri, run_id):
            for fmt, path in done.items():
                e = entries[fmt]
                key = fmt.replace("-", "_")
                mlflow.log_artifact(str(path), artifact_path=f"exports/{key}")
                mlflow.log_metrics(
                    {
                        f"export_{key}_{k}": float(e[k])
                        for k in ("size_bytes", "test_accuracy", "max_abs_diff", "top1_agreement")
                        if k in e
                    }
                )
                logged[fmt] = {
                    "artifact": f"runs:/{run_id}/exports/{key}/{path.name}",
                    "run_id": run_id,
                    "tracking_uri": uri,
                }
    except Exception as e:  # noqa: BLE001 - the exports on disk stand; the card says what failed
        return {
            "error": f"could not log to {uri}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        }
    return logged
