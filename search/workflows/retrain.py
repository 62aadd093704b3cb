"""``compactnas retrain``: the front's most accurate models trained from scratch with the final budget.

A search ranks candidates by a cheap proxy (few epochs, maybe a subset of the data); what a model
reaches with a full budget is another number. Each chosen model is trained on the whole training split,
with the ``final`` recipe (or the search's own, ``recipe="search"``), for ``epochs`` epochs and ``seeds``
seeds, on ``train_device``. The best seed's weights (by
validation accuracy) go to OUT/retrained/trial_N.pt in the search's checkpoint format, where
``compactnas export`` finds them; OUT/retrained/retrain.json is rewritten after every seed, and each model
is an MLflow run nested under the search's run. Rerunning with the same settings skips finished models.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compactnas.core.data import load_data
from compactnas.core.errors import ConfigError
from compactnas.core.files import replacing, write_json_atomic
from compactnas.evaluators import TrainConfig, accuracy, is_compressed
from compactnas.evaluators.compression import compress
from compactnas.evaluators.recipes import RECIPE_KEYS, RECIPES, recipe
from compactnas.evaluators.train import train
from compactnas.search.export.mlflow_model import resolve_tracking_uri
from compactnas.search.metrics import searched_size_bytes
from compactnas.search.results import load_summary
from compactnas.search.supernet.training import inherited_model_for
from compactnas.search.tracking import Tracker
from compactnas.spaces import create_model, parse_arch
from compactnas.spaces.layers import count_params

log = logging.getLogger("compactnas")


@dataclass(frozen=True, kw_only=True)
class RetrainConfig:
    top: int = 3
    epochs: int = 30
    seeds: int = 1
    threads: int = 1
    init: str = (
        "scratch"  # or "inherited": a supernet search's models start from the supernet's weights
    )
    recipe: str = "final"  # a named recipe, or "search": the search's own proxy recipe
    train_device: str = "auto"
    precision: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("top", "epochs", "seeds", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_init(self.init)
        check_engine(self)


RECIPE_CHOICES = ("search", *RECIPES)


def check_engine(cfg: Any) -> None:
    """The recipe and the train device of a final training (retrain, distill), checked before any work."""
    if cfg.recipe not in RECIPE_CHOICES:
        raise ConfigError(
            f"unknown recipe '{cfg.recipe}' (use one of: {', '.join(RECIPE_CHOICES)})"
        )
    TrainConfig(train_device=cfg.train_device, precision=cfg.precision)


INITS = ("scratch", "inherited")


def check_init(init: str) -> None:
    if init not in INITS:
        raise ConfigError(f"unknown --init '{init}' (use one of: {', '.join(INITS)})")


def initial_weights(init: str, search_cfg: dict[str, Any], arch: str, data: Any) -> Any:
    """None to start from scratch; the supernet's (batch norm recalibrated) weights for ``inherited``."""
    if init == "scratch":
        return None
    if search_cfg.get("evaluator") != "supernet" or not search_cfg.get("supernet"):
        raise ConfigError(
            "--init inherited needs a supernet search (compactnas search --supernet DIR)"
        )

    # A compressed candidate starts dense, from its uncompressed sub-network; fine-tuning compresses it.
    model, _ = inherited_model_for(search_cfg, str(parse_arch(arch).without_compression()))
    return model.state_dict()


def stats(values: list[float]) -> dict[str, Any]:
    return {
        "values": values,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def final_train_config(
    search_cfg: dict[str, Any], *, epochs: int, seed: int, engine: Any = None
) -> TrainConfig:
    """The final budget with ``engine``'s recipe and train device (a RetrainConfig or DistillConfig; None:
    the ``final`` recipe on ``auto``). Recipe ``search`` is the search's own settings; the augmentation
    is always the search's (it depends on the data, not on the budget)."""
    recipe_name = getattr(engine, "recipe", "final")
    if recipe_name == "search":
        d = TrainConfig()
        settings = {k: search_cfg.get(k, getattr(d, k)) for k in sorted(RECIPE_KEYS)}
    else:
        settings = recipe(recipe_name)
    return TrainConfig(
        **settings,
        epochs=epochs,
        augment=search_cfg.get("augment", "auto"),
        seed=seed,
        train_device=getattr(engine, "train_device", "auto"),
        precision=getattr(engine, "precision", "auto"),
        compile=getattr(engine, "compile", False),
    )


def train_final(
    spec: Any, data: Any, tc: Any, init: Any = None, *, test: bool = True
) -> tuple[Any, dict[str, float]]:
    """Train an architecture from scratch (compressed as its string says) on the whole training split;
    returns the model and its validation (and, with ``test``, test) accuracy, last training loss and
    seconds taken."""
    import torch

    t0 = time.time()
    torch.manual_seed(tc.seed)
    model = create_model(spec, num_classes=data.num_classes, in_chans=data.input_shape[0])
    if init is not None:
        model.load_state_dict(init)
    if is_compressed(spec):
        got = compress(model, spec, data, tc)
        loss = got.get("train_loss", got.get("loss", float("nan")))
    else:
        loss = train(model, data.train.x, data.train.y, tc)["loss"]
    metrics = {"accuracy": accuracy(model, data.val.x, data.val.y, tc), "train_loss": float(loss)}
    if test:
        metrics["test_accuracy"] = accuracy(model, data.test.x, data.test.y, tc)
    return model, {**metrics, "seconds": round(time.time() - t0, 2)}


def chosen_models(summary: dict[str, Any], top: int) -> list[dict[str, Any]]:
    rows = [r for r in summary.get("pareto", []) if r.get("arch") and r.get("accuracy") is not None]
    if not rows:
        raise ConfigError("the search's front holds no model with an accuracy to retrain")
    return sorted(rows, key=lambda r: (-r["accuracy"], r.get("trial", 0)))[:top]


def _save(path: Path, blob: dict[str, Any]) -> None:
    import torch

    with replacing(path) as tmp:
        torch.save(blob, tmp)


def run_retrain(
    out_dir: str | Path, cfg: RetrainConfig, *, quiet: bool = False, data: Any | None = None
) -> dict[str, Any]:
    import torch

    out = Path(out_dir).expanduser().resolve()
    summary = load_summary(out)
    scfg = summary.get("config") or {}
    if "data" not in scfg:
        raise ConfigError(f"{out / 'summary.json'} lacks the search's config")
    chosen = chosen_models(summary, cfg.top)
    torch.set_num_threads(cfg.threads)
    if data is None:  # the whole data set: no --subset, whatever the search used
        data = load_data(scfg["data"], seed=scfg.get("seed", 0), resize=scfg.get("resize"))
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    folder = out / "retrained"
    folder.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(cfg), "data": scfg["data"], "train_examples": len(data.train)}
    settings.pop("threads")
    report_path = folder / "retrain.json"
    previous = json.loads(report_path.read_text()) if report_path.is_file() else {}
    done = {
        m["trial"]: m
        for m in previous.get("models", [])
        if previous.get("settings") == settings and Path(m.get("checkpoint", "")).is_file()
    }
    report: dict[str, Any] = {"settings": settings, "models": []}
    tracker = _Tracking(out, summary)
    for row in chosen:
        if row.get("trial") in done:
            report["models"].append(done[row["trial"]])
            say(f"trial {row.get('trial')}: already retrained, kept")
            continue
        spec = parse_arch(row["arch"])
        entry: dict[str, Any] = {
            "trial": row.get("trial"),
            "arch": row["arch"],
            "search_accuracy": row["accuracy"],
            "search_test_accuracy": row.get("test_accuracy"),
            "params": count_params(spec, data.input_shape, data.num_classes),
            "size_bytes": searched_size_bytes(
                spec, data.input_shape, data.num_classes, scfg.get("device")
            ),
            "seeds": [],
        }
        init = initial_weights(cfg.init, scfg, row["arch"], data)
        entry["init"] = cfg.init
        report["models"].append(entry)
        run_id = tracker.start(entry, cfg)
        best = -1.0
        for s in range(cfg.seeds):
            tc = final_train_config(
                scfg, epochs=cfg.epochs, seed=scfg.get("seed", 0) * 1000 + s, engine=cfg
            )
            model, m = train_final(spec, data, tc, init)
            entry["seeds"].append({"seed": tc.seed, **m})
            tracker.seed(run_id, s, m)
            if m["accuracy"] > best:
                best = m["accuracy"]
                ckpt = folder / f"trial_{row.get('trial')}.pt"
                _save(ckpt, {
                    "arch": row["arch"], "num_classes": data.num_classes,
                    "input_shape": list(data.input_shape), "data": data.name,
                    "compressed": is_compressed(spec), "metrics": m, "state_dict": model.state_dict(),
                })  # fmt: skip
                entry["checkpoint"] = str(ckpt)
            for k in ("accuracy", "test_accuracy", "train_loss"):
                entry[k] = stats([r[k] for r in entry["seeds"]])
            _write_report(folder, report_path, report, cfg.init)
            say(
                f"trial {row.get('trial')} seed {s}: test acc {m['test_accuracy']:.4f}, "
                f"loss {m['train_loss']:.3f} ({m['seconds']:.0f} s)"
            )
        tracker.end(run_id, entry)
    report["mlflow"] = tracker.info()
    _write_report(folder, report_path, report, cfg.init)
    return report


def _write_report(folder: Path, path: Path, report: dict[str, Any], init: str) -> None:
    # retrain-scratch.json and retrain-inherited.json keep both starts side by side; retrain.json is
    # the latest run's (what export and re-runs read).
    write_json_atomic(path, report)
    write_json_atomic(folder / f"retrain-{init}.json", report)


class _Tracking:
    """Nested MLflow runs under the search's run; a tracking failure is a warning, the JSON still stands."""

    def __init__(self, out: Path, summary: dict[str, Any]):
        self.ml = summary.get("mlflow") or {}
        self.runs: list[str] = []
        self.tracker = None
        if not self.ml.get("tracking_uri") or not self.ml.get("run_id"):
            log.warning("summary.json names no MLflow run: retraining is in retrain.json only")
            return

        experiment = (summary.get("config") or {}).get("experiment", "compactnas")
        uri = resolve_tracking_uri(self.ml["tracking_uri"], out) or self.ml["tracking_uri"]
        self.tracker = Tracker(uri, experiment, out / "mlartifacts")

    def _safe(self, fn: Any, *args: Any) -> Any:
        if self.tracker is None:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - results on disk matter more than the tracking copy
            log.warning("could not record retraining in MLflow: %s", str(e).splitlines()[0:1])
            self.tracker = None
            return None

    def start(self, entry: dict[str, Any], cfg: RetrainConfig) -> str | None:
        params = {
            "arch": entry["arch"],
            "trial": entry["trial"],
            "epochs": cfg.epochs,
            "seeds": cfg.seeds,
            "init": cfg.init,
        }

        def go() -> str:
            assert self.tracker is not None
            run_id = self.tracker.start_child(
                self.ml["run_id"],
                f"retrain-{entry['trial']}",
                params,
                tags={"compactnas.kind": "retrain"},
            )
            self.runs.append(run_id)
            return run_id

        return self._safe(go)

    def seed(self, run_id: str | None, step: int, m: dict[str, float]) -> None:
        if run_id is not None:
            metrics = {f"seed_{k}": v for k, v in m.items()}
            self._safe(lambda: self.tracker.log(run_id, metrics=metrics, step=step))

    def end(self, run_id: str | None, entry: dict[str, Any]) -> None:
        if run_id is None:
            return
        metrics = {}
        for k in ("accuracy", "test_accuracy", "train_loss"):
            metrics[f"{k}_mean"] = entry[k]["mean"]
            metrics[f"{k}_std"] = entry[k]["std"]
        self._safe(lambda: self.tracker.log(run_id, metrics=metrics))
        self._safe(lambda: self.tracker.end(run_id, "FINISHED"))

    def info(self) -> dict[str, Any]:
        if not self.ml.get("run_id"):
            return {}
        return {
            "tracking_uri": self.ml["tracking_uri"],
            "parent_run_id": self.ml["run_id"],
            "run_ids": self.runs,
        }
