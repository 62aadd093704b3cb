"""Export one trained model of a search: rebuild it from its checkpoint, write it in the asked formats,
check every export against the PyTorch model on the held-out test split, and describe it in a model card.

A destination folder holds the exports of one trial: ``trial_N.onnx``, ``trial_N.int8.onnx``,
``trial_N.torchscript.pt``, ``trial_N.state_dict.pt``, ``arch.txt``, plus ``card.json`` and ``card.md``.
Exporting more formats of the same trial into it later adds them to the card; nothing already there is
replaced without ``force``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import platform
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compactnas.core.errors import ConfigError
from compactnas.core.host import cpu_name
from compactnas.search import export_edge as edge
from compactnas.search.export_formats import (
    CALIBRATIONS,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    OnnxModel,
    build_model,
    compare,
    deployable,
    load_exported,
    onnx_latency_ms,
    quantize_onnx_int8,
    reduced_bits,
    torch_logits,
    write_onnx,
    write_state_dict,
    write_torchscript,
)
from compactnas.search.pick import PICKS, pick_from_front

FORMATS = ("onnx", "onnx-int8", "torchscript", "state-dict", "arch", *edge.EDGE_FORMATS)
INT8_FORMATS = ("onnx-int8", *(f for f, e in edge.EDGE_FORMATS.items() if e.int8))
# A float export counts as exact when no logit differs by more than this from PyTorch.
FLOAT_TOLERANCE = 1e-4
# An export whose activations are quantized (int8 ONNX; a trained ab8 model in any format) counts as
# faithful when its top-1 class agrees this often: a value lying on a rounding boundary may land one
# quantization step away in another runtime, so its logits cannot be expected to match to 1e-4.
MIN_AGREEMENT = 0.98


def file_name(fmt: str, trial: int) -> str:
    if fmt in edge.EDGE_FORMATS:
        return edge.file_name(fmt, trial)
    return {
        "onnx": f"trial_{trial}.onnx",
        "onnx-int8": f"trial_{trial}.int8.onnx",
        "torchscript": f"trial_{trial}.torchscript.pt",
        "state-dict": f"trial_{trial}.state_dict.pt",
        "arch": "arch.txt",
    }[fmt]


def parse_formats(values: str | Sequence[str]) -> tuple[str, ...]:
    """Formats from repeated and/or comma-separated values, in order, without repeats."""
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower().replace("_", "-")
            if not name:
                continue
            if name not in FORMATS:
                raise ConfigError(
                    f"unknown export format '{name}' (use one of: {', '.join(FORMATS)})"
                )
            if name not in out:
                out.append(name)
    if not out:
        raise ConfigError(f"no export format given (use one or more of: {', '.join(FORMATS)})")
    return tuple(out)


class ExportWarning(UserWarning):
    """An export was written but missed its check (see the card's ``warnings``)."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    formats: tuple[str, ...] = ("onnx",)
    dest: str | Path | None = None  # default: OUT/exports/trial_N
    force: bool = False
    weights: str = (
        "auto"  # auto: distilled weights when OUT/distilled/trial_N.pt exists, else trained
    )
    calibration: str = (
        "auto"  # auto: the method whose int8 model best agrees with fp32 on validation data
    )
    calibration_samples: int = 1024
    opset: int = 17
    mlflow: bool = True
    latency_min_run_time: float = 0.2
    threads: int = 1  # torch threads while exporting; timings always use one

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))
        if self.weights not in ("auto", "trained", "distilled"):
            raise ConfigError(f"unknown weights '{self.weights}' (use auto, trained or distilled)")
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(
                f"unknown calibration '{self.calibration}' (use one of: {', '.join(CALIBRATIONS)})"
            )
        if self.calibration_samples < 1:
            raise ConfigError(f"calibration_samples must be >= 1, got {self.calibration_samples}")
        if not 13 <= self.opset <= 20:
            raise ConfigError(f"opset must be between 13 and 20, got {self.opset}")
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if not self.latency_min_run_time > 0:
            raise ConfigError("latency_min_run_time must be positive")


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    dest: Path
    trial: int
    arch: str
    files: dict[str, Path]  # format -> file written
    card: dict[str, Any]
    warnings: tuple[str, ...] = field(default_factory=tuple)


# --- which trial, which weights ----------------------------------------------------------------------


def select_trial(
    out: Path, summary: dict[str, Any], *, trial: int | None, pick: str | None
) -> tuple[int, Any]:
    """(trial number, Optuna FrozenTrial) for ``--trial N`` or ``--pick``."""
    from optuna.trial import TrialState

    from compactnas.search.study import load_trials

    if (trial is None) == (pick is None):
        raise ConfigError(f"give exactly one of --trial N or --pick {{{','.join(PICKS)}}}")
    if pick is not None:
        trial = int(
            pick_from_front(summary.get("pareto", []), pick, summary.get("objectives", []))["trial"]
        )
    study, _, _ = load_trials(out)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial not in trials:
        last = max(trials) if trials else -1
        raise ExportError(f"{out} has no trial {trial} (its trials are numbered 0..{last})")
    t = trials[trial]
    if t.state != TrialState.COMPLETE:
        why = t.user_attrs.get("error") or t.user_attrs.get("infeasible") or t.state.name.lower()
        raise ExportError(f"trial {trial} has no trained model: it did not complete ({why})")
    return trial, t


def find_checkpoint(out: Path, trial: int, frozen: Any, weights: str) -> tuple[Path, str]:
    """The checkpoint file and which weights it holds ('trained' or 'distilled')."""
    source = int(
        frozen.user_attrs.get("duplicate_of", trial)
    )  # a duplicate reuses its first trial's model
    distilled = out / "distilled" / f"trial_{source}.pt"
    trained = out / "checkpoints" / f"trial_{source}.pt"
    if weights == "distilled" or (weights == "auto" and distilled.is_file()):
        if not distilled.is_file():
            raise ExportError(f"trial {trial} has no distilled weights (expected {distilled})")
        return distilled, "distilled"
    if not trained.is_file():
        raise ExportError(f"trial {trial} has no checkpoint (expected {trained})")
    return trained, "trained"


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(
            f"cannot read checkpoint {path}: {str(e).splitlines()[0][:200]}"
        ) from None
    missing = [k for k in ("arch", "num_classes", "input_shape", "state_dict") if k not in blob]
    if missing:
        raise ExportError(f"checkpoint {path} lacks {', '.join(missing)}")
    return blob


def check_formats(arch: str, formats: Sequence[str]) -> None:
    """Refuse, before anything is written, formats that cannot represent the architecture."""
    from compactnas.spaces import parse_arch

    spec = parse_arch(arch)
    low = reduced_bits(spec)
    for fmt in formats:
        if fmt in edge.EDGE_FORMATS:
            edge.require(fmt)
    int8 = [f for f in formats if f in INT8_FORMATS]
    if int8 and low:
        raise ExportError(
            f"{int8[0]} cannot represent this architecture: it re-quantizes every layer to 8 bits with its "
            f"own calibration, discarding the trained bit-widths of {', '.join(low)}; export 'onnx' or "
            "'torchscript', which keep the model's own quantization"
        )


# --- destination -------------------------------------------------------------------------------------


def _prepare_dest(
    dest: Path, trial: int, arch: str, formats: Sequence[str], force: bool
) -> dict[str, Any]:
    """Create and probe ``dest``; refuse to replace exports without ``force``. Returns the card to extend."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest, prefix=".probe-"):
            pass
    except OSError as e:
        raise ExportError(f"cannot write to {dest}: {e.strerror or e}") from None
    card_path = dest / "card.json"
    card: dict[str, Any] = {}
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text())
        except (json.JSONDecodeError, OSError):
            card = {}
        if card and (card.get("trial") != trial or card.get("arch") != arch):
            if not force:
                raise ExportError(
                    f"{dest} holds the export of trial {card.get('trial')}; choose another --dest or pass --force"
                )
            card = {}
    taken = [file_name(f, trial) for f in formats if (dest / file_name(f, trial)).exists()]
    if taken and not force:
        raise ExportError(f"{dest} already holds {', '.join(taken)}; pass --force to overwrite")
    return card


# --- the export itself -------------------------------------------------------------------------------


def _calibration_set(x: torch.Tensor, n: int, seed: int) -> np.ndarray:
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[: min(n, len(x))])
    return x[idx].numpy()


def _export_int8(
    fp32: Path, path: Path, data: Any, model: torch.nn.Module, cfg: ExportConfig, seed: int
) -> dict[str, Any]:
    """Quantize with the configured calibration; 'auto' tries each and keeps the one whose top-1
    agreement with the fp32 model on the validation split is highest (the test split stays unseen)."""
    calib = _calibration_set(data.train.x, cfg.calibration_samples, seed)
    # 'auto' leaves entropy out: on these networks it chose the same ranges as minmax at twice the cost.
    methods = ["minmax", "percentile"] if cfg.calibration == "auto" else [cfg.calibration]
    if len(methods) == 1:
        quantize_onnx_int8(fp32, path, calib, method=methods[0])
        return {"method": methods[0], "samples": len(calib), "split": "train"}
    ref = torch_logits(model, data.val.x)
    labels = data.val.y.numpy()
    tried: dict[str, dict[str, float]] = {}
    best: tuple[float, float] | None = None
    chosen = methods[0]
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            cand = Path(tmp) / f"{m}.onnx"
            quantize_onnx_int8(fp32, cand, calib, method=m)
            agree = compare(ref, OnnxModel(cand)(data.val.x), labels)
            tried[m] = {
                "val_top1_agreement": agree.top1_agreement,
                "val_max_abs_diff": agree.max_abs_diff,
            }
            key = (agree.top1_agreement, -agree.max_abs_diff)
            if best is None or key > best:
                best = key
                shutil.copyfile(cand, path)
                chosen = m
    return {
        "method": chosen,
        "samples": len(calib),
        "split": "train",
        "selection": "validation",
        "tried": tried,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export(
    out: str | Path,
    *,
    trial: int | None = None,
    pick: str | None = None,
    config: ExportConfig | None = None,
    quiet: bool = True,
    **overrides: Any,
) -> ExportResult:
    """Export trial ``trial`` (or the front model chosen by ``pick``) of the search in ``out``.

    ``overrides`` are ExportConfig fields, e.g. ``formats="onnx,onnx-int8"``, ``dest="export/"``,
    ``force=True``. Errors a user can cause raise CompactnasError subclasses with a one-line message.
    """
    cfg = config or ExportConfig()
    if overrides:
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ExportConfig)})
        if unknown:
            raise ConfigError(f"unknown export option(s) {', '.join(unknown)}")
        cfg = dataclasses.replace(cfg, **overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _export(Path(out).expanduser().resolve(), trial, pick, cfg, quiet)
    finally:
        torch.set_num_threads(threads)


def _export(
    out: Path, trial: int | None, pick: str | None, cfg: ExportConfig, quiet: bool
) -> ExportResult:
    from compactnas.core.data import load_data
    from compactnas.evaluators import measure_latency_ms
    from compactnas.search.results import load_summary
    from compactnas.spaces import parse_arch

    summary = load_summary(out)
    number, frozen = select_trial(out, summary, trial=trial, pick=pick)
    ckpt_path, weights = find_checkpoint(out, number, frozen, cfg.weights)
    ckpt = _read_checkpoint(ckpt_path)
    arch = str(ckpt["arch"])
    check_formats(arch, cfg.formats)
    dest = (
        Path(cfg.dest).expanduser().resolve() if cfg.dest else out / "exports" / f"trial_{number}"
    )
    card = _prepare_dest(dest, number, arch, cfg.formats, cfg.force)

    scfg = summary.get("config", {})
    seed = int(scfg.get("seed", 0))
    data = load_data(scfg.get("data", "digits"), seed=seed, resize=scfg.get("resize"))
    shape = tuple(int(v) for v in ckpt["input_shape"])
    if data.input_shape != shape or data.num_classes != int(ckpt["num_classes"]):
        raise ExportError(
            f"the search's data ({data.name}, {data.input_shape}, {data.num_classes} classes) no longer matches "
            f"trial {number}'s checkpoint ({tuple(shape)}, {ckpt['num_classes']} classes)"
        )
    model = build_model(arch, num_classes=data.num_classes, in_chans=shape[0])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ExportError(
            f"checkpoint {ckpt_path} does not fit '{arch}': {str(e).splitlines()[0][:200]}"
        ) from None
    model.eval()
    # What ONNX and TorchScript see; the reference stays the checkpoint's model.
    deploy = deployable(model)
    quant_acts = any("ab" in low for low in reduced_bits(parse_arch(arch)))
    if not quiet:
        print(f"exporting trial {number} ({weights} weights): {arch}")

    labels = data.test.y.numpy()
    reference = torch_logits(model, data.test.x)
    pytorch = {
        "test_accuracy": float((reference.argmax(1) == labels).mean()),
        "latency_ms_host": measure_latency_ms(
            model, shape, threads=1, min_run_time=cfg.latency_min_run_time
        ),
    }
    files: dict[str, Path] = {}
    entries: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, _removed_on_failure(files):
        for fmt in cfg.formats:
            path = dest / file_name(fmt, number)
            entry: dict[str, Any] = {"file": path.name}
            if fmt == "arch":
                path.write_text(arch + "\n")
            elif fmt == "onnx":
                write_onnx(deploy, shape, path, opset=cfg.opset)
            elif fmt == "onnx-int8":
                fp32 = files.get("onnx") or Path(tmp) / "fp32.onnx"
                if "onnx" not in files:
                    write_onnx(deploy, shape, fp32, opset=cfg.opset)
                entry["calibration"] = _export_int8(fp32, path, data, model, cfg, seed)
            elif fmt == "torchscript":
                write_torchscript(deploy, shape, path)
            elif fmt == "state-dict":
                write_state_dict(
                    model, path, arch=arch, num_classes=data.num_classes, input_shape=shape
                )
            elif fmt in edge.EDGE_FORMATS:
                calib = _calibration_set(data.train.x, cfg.calibration_samples, seed)
                entry.update(edge.write_edge(fmt, deploy, shape, path, calib))
            files[fmt] = path
            if fmt != "arch":
                entry.update(_verify(fmt, path, shape, data, reference, labels, cfg, quant_acts))
                ok = entry["checks"]["passed"]
                if not ok:
                    problems.append(f"{fmt}: {entry['checks']['rule']} not met ({_short(entry)})")
            entry["size_bytes"] = path.stat().st_size
            entry["sha256"] = _sha256(path)
            entries[fmt] = entry
            if not quiet:
                print(f"  {fmt:<12} {path.name}  {entry['size_bytes']:,} bytes  {_short(entry)}")

    mlflow_info = _log_to_mlflow(cfg, out, summary, frozen, files, data, reference, model)
    mlflow_info.update(edge.log_mlflow(cfg.mlflow, out, summary, frozen, files, entries))
    for fmt, info in mlflow_info.items():
        if fmt in entries:
            entries[fmt]["mlflow"] = info
        elif fmt == "error":
            problems.append(f"MLflow: {info}")

    card = _card(
        card,
        dest,
        out,
        summary,
        frozen,
        number,
        arch,
        weights,
        ckpt_path,
        data,
        ckpt,
        pytorch,
        entries,
        pick,
    )
    for problem in problems:
        warnings.warn(problem, ExportWarning, stacklevel=3)
    card["warnings"] = problems
    (dest / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (dest / "card.md").write_text(card_markdown(card))
    return ExportResult(
        dest=dest, trial=number, arch=arch, files=files, card=card, warnings=tuple(problems)
    )


@contextlib.contextmanager
def _removed_on_failure(files: dict[str, Path]) -> Iterator[None]:
    """A failed export takes the files it already wrote with it, so a retry needs no --force."""
    try:
        yield
    except BaseException:
        for path in files.values():
            path.unlink(missing_ok=True)
        raise


def _short(entry: dict[str, Any]) -> str:
    if "max_abs_diff" not in entry:
        return ""
    return (
        f"test acc {entry['test_accuracy']:.4f}  max |diff| {entry['max_abs_diff']:.2e}  "
        f"top-1 agree {100 * entry['top1_agreement']:.2f}%  {entry['latency_ms_host']:.3f} ms"
    )


def _verify(
    fmt: str,
    path: Path,
    shape: tuple[int, ...],
    data: Any,
    reference: np.ndarray,
    labels: np.ndarray,
    cfg: ExportConfig,
    quant_acts: bool,
) -> dict[str, Any]:
    """Run the written file (not the in-memory model) on the test split and time it on this host."""
    from compactnas.evaluators import measure_latency_ms

    loaded = load_exported(path)
    if edge.is_edge_model(loaded):
        outputs = loaded(data.test.x)
        latency = loaded.latency_ms(shape, cfg.latency_min_run_time)
        runtime = loaded.edge_runtime
    elif isinstance(loaded, OnnxModel):
        outputs = loaded(data.test.x)
        latency = onnx_latency_ms(loaded.session, shape, min_run_time=cfg.latency_min_run_time)
        runtime = _onnxruntime_version()
    else:
        outputs = torch_logits(loaded, data.test.x)
        latency = measure_latency_ms(
            loaded, shape, threads=1, min_run_time=cfg.latency_min_run_time
        )
        runtime = f"torch {torch.__version__}" + (" (TorchScript)" if fmt == "torchscript" else "")
    a = compare(reference, outputs, labels)
    if fmt in INT8_FORMATS or quant_acts:
        rule, passed = f"top-1 agreement >= {MIN_AGREEMENT}", a.top1_agreement >= MIN_AGREEMENT
    else:
        rule, passed = f"max |diff| <= {FLOAT_TOLERANCE}", a.max_abs_diff <= FLOAT_TOLERANCE
    return {
        "runtime": runtime,
        "test_accuracy": a.accuracy,
        "max_abs_diff": a.max_abs_diff,
        "top1_agreement": a.top1_agreement,
        "latency_ms_host": latency,
        "checks": {
            "rule": rule,
            "passed": bool(passed),
            "examples": int(len(labels)),
            "split": "test",
        },
    }


def _onnxruntime_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} (CPU, 1 thread)"


def _log_to_mlflow(
    cfg: ExportConfig,
    out: Path,
    summary: dict[str, Any],
    frozen: Any,
    files: dict[str, Path],
    data: Any,
    reference: np.ndarray,
    model: torch.nn.Module,
) -> dict[str, Any]:
    from compactnas.search.export_mlflow import MODEL_NAMES, log_exports, resolve_tracking_uri

    loggable = {f: p for f, p in files.items() if f in MODEL_NAMES}
    if not cfg.mlflow or not loggable:
        return {}
    run_id = frozen.user_attrs.get("mlflow_run_id")
    uri = resolve_tracking_uri(summary.get("mlflow", {}).get("tracking_uri"), out)
    if not run_id or not uri:
        return {"error": "the trial has no MLflow run to log the export to"}
    torch_models: dict[str, Any] = {}
    if "torchscript" in loggable:
        torch_models["torchscript"] = load_exported(loggable["torchscript"])
    if "state-dict" in loggable:
        torch_models["state-dict"] = model
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


def _card(
    previous: dict[str, Any],
    dest: Path,
    out: Path,
    summary: dict[str, Any],
    frozen: Any,
    number: int,
    arch: str,
    weights: str,
    ckpt_path: Path,
    data: Any,
    ckpt: dict[str, Any],
    pytorch: dict[str, float],
    entries: dict[str, dict[str, Any]],
    pick: str | None,
) -> dict[str, Any]:
    import onnxruntime

    from compactnas import __version__

    metrics = dict(frozen.user_attrs.get("metrics") or ckpt.get("metrics") or {})
    scfg = summary.get("config", {})
    exports = {
        fmt: e
        for fmt, e in (previous.get("exports") or {}).items()
        # Earlier exports of the same trial stay listed while their files are there.
        if fmt not in entries and e.get("file") and (dest / e["file"]).is_file()
    }
    exports.update(entries)
    device = summary.get("device") or scfg.get("device") or "host"
    return {
        "compactnas_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "trial": number,
        "arch": arch,
        "dest": str(dest),
        "source": {
            "search": str(out),
            "trial": number,
            "duplicate_of": frozen.user_attrs.get("duplicate_of"),
            "picked_by": pick,
            "weights": weights,
            "checkpoint": str(ckpt_path),
        },
        "model": {
            "input_name": INPUT_NAME,
            "input_shape": ["batch", *data.input_shape],
            "input_dtype": "float32",
            "output_name": OUTPUT_NAME,
            "num_classes": data.num_classes,
            "classes": list(data.classes),
            "preprocessing": (
                f"as compactnas.load_data({scfg.get('data', 'digits')!r}, seed={scfg.get('seed', 0)}, "
                f"resize={scfg.get('resize')!r}): pixels in [0, 1], standardised per channel with the training "
                "split's mean and standard deviation"
            ),
            "normalize": {
                "scale": "pixels to [0, 1]",
                "mean": list(data.mean),
                "std": list(data.std),
            },
            "params": _int_or_none(metrics.get("params")),
            "macs": _int_or_none(metrics.get("macs")),
        },
        "data": {
            "source": scfg.get("data"),
            "name": data.name,
            "seed": scfg.get("seed"),
            "resize": scfg.get("resize"),
            "test_examples": len(data.test),
        },  # fmt: skip
        "search_metrics": {
            "val_accuracy": metrics.get("accuracy"),
            "test_accuracy": metrics.get("test_accuracy"),
            "size_bytes": _int_or_none(metrics.get("size_bytes")),
        },
        "predicted": {
            "device": device,
            "latency_ms": metrics.get("latency_ms"),
            "basis": "measured on the search's host during the search"
            if device == "host"
            else f"device profile '{device}'",
            "energy_mj": metrics.get("energy_mj"),
            "peak_sram_kb": metrics.get("peak_sram_kb"),
        },
        "pytorch": pytorch,
        "host": {
            "machine": platform.machine(),
            "processor": cpu_name(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": 1,
        },
        "exports": exports,
    }


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown, for people."""
    p, pred, src = card["pytorch"], card["predicted"], card["source"]
    lines = [
        f"# Model card: trial {card['trial']}",
        "",
        f"Architecture: `{card['arch']}`",
        "",
        f"From the search in `{src['search']}` (trial {src['trial']}, {src['weights']} weights"
        + (f", picked by {src['picked_by']}" if src.get("picked_by") else "")
        + f"); data `{card['data']['source']}`, {card['data']['test_examples']} held-out test images.",
        "",
        f"Input `{card['model']['input_name']}`: float32 {' x '.join(str(d) for d in card['model']['input_shape'])}, "
        f"{card['model']['preprocessing']} (mean {_fmt_stats(card['model']['normalize']['mean'])}, "
        f"std {_fmt_stats(card['model']['normalize']['std'])}). Output `{card['model']['output_name']}`: "
        f"{card['model']['num_classes']} logits.",
        "",
        "| format | file | size (bytes) | test accuracy | max abs diff vs PyTorch | top-1 agreement | latency here (ms) |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| PyTorch (reference) | | | {p['test_accuracy']:.4f} | 0 | 100.00% | {p['latency_ms_host']:.3f} |",
    ]
    for fmt, e in card["exports"].items():
        if "max_abs_diff" in e:
            lines.append(
                f"| {fmt} | `{e['file']}` | {e['size_bytes']:,} | {e['test_accuracy']:.4f} | {e['max_abs_diff']:.2e} | "
                f"{100 * e['top1_agreement']:.2f}% | {e['latency_ms_host']:.3f} |"
            )
        else:
            lines.append(f"| {fmt} | `{e['file']}` | {e['size_bytes']:,} | | | | |")
    latency = pred.get("latency_ms")
    lines += [
        "",
        f"Predicted latency: {latency:.3f} ms ({pred['basis']})."
        if latency is not None
        else "Predicted latency: unknown.",
        f"Latencies 'here' are batch-1 medians on this host ({card['host']['processor']}, 1 thread).",
    ]
    cal = card["exports"].get("onnx-int8", {}).get("calibration")
    if cal:
        lines.append(
            f"int8: static QDQ quantization, per-channel int8 weights, {cal['method']} calibration on "
            f"{cal['samples']} training images"
            + (" (chosen on the validation split)." if cal.get("selection") else ".")
        )
    lines += edge.card_lines(card["exports"])
    logged = {
        f: e["mlflow"].get("model_uri") or e["mlflow"].get("artifact")
        for f, e in card["exports"].items()
        if "mlflow" in e
    }
    if logged:
        lines += ["", "MLflow models: " + ", ".join(f"{f} `{u}`" for f, u in logged.items()) + "."]
    if card.get("warnings"):
        lines += ["", "Warnings:", *(f"- {w}" for w in card["warnings"])]
    lines += [
        "",
        "Load it back:",
        "",
        "```python",
        "import compactnas",
        f"model = compactnas.load_exported({str(card['dest'])!r})  # or one file of this folder",
        "```",
        "",
    ]
    return "\n".join(lines)


def _fmt_stats(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"
