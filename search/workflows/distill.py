"""Distillation of a search's front: retrain the front's best models from a teacher, beside the same models without one.

Both arms get the same epochs, the same seeds and, per seed, the same initial weights, so the difference
is the teacher's alone. Results go to OUT/distill.json and to MLflow, as runs nested under the search's
run; the teacher-trained model of each architecture's best seed (by validation accuracy) is saved under
OUT/distilled/ in the search's checkpoint format.
"""

from __future__ import annotations

import logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compactnas.core.data import load_data
from compactnas.core.errors import ConfigError
from compactnas.core.files import replacing, write_json_atomic
from compactnas.evaluators import accuracy, count_parameters, is_compressed
from compactnas.evaluators.distill import (
    TeacherLogits,
    check_distill_settings,
    distillation_loss_fn,
    retrain,
)
from compactnas.evaluators.teacher import TeacherConfig, get_teacher, load_teacher
from compactnas.search.export.mlflow_model import resolve_tracking_uri
from compactnas.search.metrics import searched_size_bytes
from compactnas.search.results import load_summary
from compactnas.search.tracking import Tracker
from compactnas.search.workflows.retrain import (
    check_engine,
    check_init,
    final_train_config,
    initial_weights,
)
from compactnas.spaces import parse_arch
from compactnas.spaces.layers import count_params

log = logging.getLogger("compactnas")


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    top: int = 3
    seeds: int = 3
    epochs: int = 40
    temperature: float = 4.0
    alpha: float = 0.7
    teacher: str | None = None
    teacher_model: str = "resnet10t"
    teacher_epochs: int = 20
    threads: int = 1
    init: str = "scratch"  # or "inherited": both arms start from a supernet search's weights
    recipe: str = "final"  # both arms' recipe: a named one, or "search" (the search's own)
    train_device: str = "auto"
    precision: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        check_init(self.init)
        check_engine(self)

        for name in ("top", "seeds", "epochs", "teacher_epochs", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_distill_settings(self.temperature, self.alpha)


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "values": values,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def _best_models(summary: dict[str, Any], top: int) -> list[dict[str, Any]]:
    rows = [r for r in summary.get("pareto", []) if r.get("arch") and r.get("accuracy") is not None]
    if not rows:
        raise ConfigError("the search's front holds no model with an accuracy to distill")
    return sorted(rows, key=lambda r: -r["accuracy"])[:top]


def _teacher(
    out: Path, cfg: DistillConfig, search_cfg: dict[str, Any], data: Any
) -> tuple[Any, dict[str, Any]]:

    shape = {
        "num_classes": data.num_classes,
        "in_chans": data.input_shape[0],
        "image_size": data.image_size,
    }
    if cfg.teacher is not None:
        model, meta = load_teacher(cfg.teacher, model=cfg.teacher_model, **shape)
        path, cached = Path(cfg.teacher).expanduser().resolve(), True
    else:
        tc = TeacherConfig(
            model=cfg.teacher_model, epochs=cfg.teacher_epochs, seed=search_cfg.get("seed", 0),
            train_device=cfg.train_device, precision=cfg.precision,
        )  # fmt: skip
        model, path, meta, cached = get_teacher(
            data,
            cache_dir=out / "teachers",
            source=search_cfg["data"],
            resize=search_cfg.get("resize"),
            config=tc,
        )
    params = count_parameters(model)
    info = {
        "path": str(path),
        "model": meta.get("model"),
        "cached": cached,
        "params": params,
        "size_bytes": params * 4,
        "accuracy": accuracy(model, data.val.x, data.val.y),
        "test_accuracy": accuracy(model, data.test.x, data.test.y),
    }
    return model, info


def run_distill(out_dir: str | Path, cfg: DistillConfig, *, quiet: bool = False) -> dict[str, Any]:
    """Distill the front's ``cfg.top`` most accurate models; returns what OUT/distill.json holds.

    distill.json is rewritten after every seed, so an interrupted run keeps each measurement; a model's
    checkpoint in OUT/distilled/ is replaced only once its new one is completely written.
    """
    import torch

    out = Path(out_dir).expanduser().resolve()
    summary = load_summary(out)
    search_cfg = summary.get("config") or {}
    if "data" not in search_cfg:
        raise ConfigError(f"{out / 'summary.json'} lacks the search's config")
    chosen = _best_models(summary, cfg.top)
    torch.set_num_threads(cfg.threads)
    data = load_data(
        search_cfg["data"], seed=search_cfg.get("seed", 0), resize=search_cfg.get("resize")
    )
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    teacher, teacher_info = _teacher(out, cfg, search_cfg, data)
    say(
        f"teacher {teacher_info['model']}: test acc {teacher_info['test_accuracy']:.4f} ({teacher_info['path']})"
    )
    logits = TeacherLogits(teacher)
    loss_fn = distillation_loss_fn(logits, temperature=cfg.temperature, alpha=cfg.alpha)
    report: dict[str, Any] = {
        "complete": False,
        "teacher": teacher_info,
        "settings": {
            "top": cfg.top, "seeds": cfg.seeds, "epochs": cfg.epochs, "temperature": cfg.temperature,
            "alpha": cfg.alpha, "kl": "KL(teacher || student), Hinton et al., scaled by T^2",
            "init": cfg.init,
        },
        "models": [],
        "teacher_cache": {"hits": 0, "misses": 0},
    }  # fmt: skip

    def save() -> None:
        report["teacher_cache"] = {"hits": logits.hits, "misses": logits.misses}
        write_json_atomic(out / "distill.json", report)

    save()
    for row in chosen:
        report["models"].append({})
        _distill_one(out, row, cfg, search_cfg, data, loss_fn, report["models"], save, say)
    report["mlflow"] = _track(out, summary, cfg, report)
    report["complete"] = True
    save()
    return report


def _distill_one(
    out: Path,
    row: dict[str, Any],
    cfg: DistillConfig,
    search_cfg: dict[str, Any],
    data: Any,
    loss_fn: Any,
    models: list[dict[str, Any]],
    save: Any,
    say: Any,
) -> None:
    """Both arms of one architecture over every seed; its entry (the last of ``models``) is saved per seed."""
    import torch

    spec = parse_arch(row["arch"])
    init = initial_weights(cfg.init, search_cfg, row["arch"], data)
    arms: dict[str, dict[str, list[float]]] = {
        a: {"accuracy": [], "test_accuracy": []} for a in ("distilled", "baseline")
    }
    ckpt = out / "distilled" / f"trial_{row.get('trial')}.pt"
    best: tuple[float, Any] | None = None
    for s in range(cfg.seeds):
        tc = final_train_config(
            search_cfg, epochs=cfg.epochs, seed=search_cfg.get("seed", 0) * 1000 + s, engine=cfg
        )
        for arm, fn in (("distilled", loss_fn), ("baseline", None)):
            model, m = retrain(spec, data, tc, loss_fn=fn, init=init)
            for k in ("accuracy", "test_accuracy"):
                arms[arm][k].append(m[k])
            if arm == "distilled" and (best is None or m["accuracy"] > best[0]):
                best = (m["accuracy"], model)
        say(
            f"trial {row.get('trial')} seed {s}: test acc distilled {arms['distilled']['test_accuracy'][-1]:.4f}, "
            f"without teacher {arms['baseline']['test_accuracy'][-1]:.4f}"
        )
        result = {
            "trial": row.get("trial"),
            "arch": row["arch"],
            "search_accuracy": row["accuracy"],
            "params": count_params(spec, data.input_shape, data.num_classes),
            "size_bytes": searched_size_bytes(
                spec, data.input_shape, data.num_classes, search_cfg.get("device")
            ),
            "init": cfg.init,
            "seeds_done": s + 1,
            **{arm: {k: _stats(v) for k, v in vals.items()} for arm, vals in arms.items()},
            "checkpoint": None,  # named once the best seed's weights are on disk
        }
        result["test_gain_mean"] = (
            result["distilled"]["test_accuracy"]["mean"]
            - result["baseline"]["test_accuracy"]["mean"]
        )
        models[-1] = result
        save()
    assert best is not None
    blob = {
        "arch": row["arch"], "num_classes": data.num_classes, "input_shape": list(data.input_shape),
        "data": data.name, "compressed": is_compressed(spec),
        "metrics": {"accuracy": best[0]}, "state_dict": best[1].state_dict(),
    }  # fmt: skip
    # An earlier distilled checkpoint stays until this one is completely written.
    with replacing(ckpt) as tmp:
        torch.save(blob, tmp)
    models[-1]["checkpoint"] = str(ckpt)
    save()


def _track(
    out: Path, summary: dict[str, Any], cfg: DistillConfig, report: dict[str, Any]
) -> dict[str, Any]:
    """Nested runs under the search's MLflow run; a tracking failure is a warning, the JSON still stands."""

    ml = summary.get("mlflow") or {}
    if not ml.get("tracking_uri") or not ml.get("run_id"):
        log.warning(
            "summary.json names no MLflow run: distillation results are in distill.json only"
        )
        return {}
    experiment = (summary.get("config") or {}).get("experiment", "compactnas")
    runs = []
    try:
        uri = resolve_tracking_uri(ml["tracking_uri"], out) or ml["tracking_uri"]
        tracker = Tracker(uri, experiment, out / "mlartifacts")
        for m in report["models"]:
            for arm in ("distilled", "baseline"):
                params = {
                    "arch": m["arch"], "trial": m["trial"], "arm": arm, "seeds": cfg.seeds, "epochs": cfg.epochs,
                    "teacher": report["teacher"]["path"] if arm == "distilled" else "none",
                    **({"temperature": cfg.temperature, "alpha": cfg.alpha} if arm == "distilled" else {}),
                }  # fmt: skip
                run_id = tracker.start_child(ml["run_id"], f"distill-{m['trial']}-{arm}", params)
                tracker.log(run_id, tags={"compactnas.kind": "distill"})
                for k in ("accuracy", "test_accuracy"):
                    for step, v in enumerate(m[arm][k]["values"]):
                        tracker.log(run_id, metrics={f"seed_{k}": v}, step=step)
                    tracker.log(
                        run_id,
                        metrics={f"{k}_mean": m[arm][k]["mean"], f"{k}_std": m[arm][k]["std"]},
                    )
                tracker.end(run_id, "FINISHED")
                runs.append(run_id)
    except Exception as e:  # noqa: BLE001 - results on disk matter more than the tracking copy
        log.warning(
            "could not record distillation in MLflow: %s", str(e).splitlines()[0] if str(e) else e
        )
    return {"tracking_uri": ml["tracking_uri"], "parent_run_id": ml["run_id"], "run_ids": runs}
