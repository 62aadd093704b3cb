"""Which trial to export, which of its weights, and the PyTorch model rebuilt from its checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compactnas.core.data import load_data
from compactnas.core.errors import ConfigError
from compactnas.search.export.base import ExportError
from compactnas.search.export.formats import build_model, reduced_bits
from compactnas.search.export.registry import FORMATS
from compactnas.search.study import load_trials
from compactnas.search.supernet.training import inherited_checkpoint
from compactnas.search.workflows.pick import PICKS, pick_from_front
from compactnas.spaces import parse_arch


@dataclass(frozen=True, kw_only=True)
class Rebuilt:
    """A trial's model as its checkpoint holds it, with the search's data split."""

    number: int
    frozen: Any  # the Optuna FrozenTrial
    checkpoint: Path
    weights: str  # 'trained', 'retrained' or 'distilled'
    blob: dict[str, Any]  # the checkpoint's contents
    arch: str
    model: torch.nn.Module
    data: Any
    seed: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.blob["input_shape"])


def select_trial(
    out: Path, summary: dict[str, Any], *, trial: int | None, pick: str | None
) -> tuple[int, Any]:
    """(trial number, Optuna FrozenTrial) for ``--trial N`` or ``--pick``."""
    from optuna.trial import TrialState

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
    """The checkpoint file and which weights it holds ('trained', 'retrained' or 'distilled').

    ``auto`` takes the most finished weights there are: distilled from a teacher, else retrained from
    scratch with the final budget (``compactnas retrain``), else the search's proxy-trained ones.
    """
    # A repeated architecture reuses its first trial's model.
    source = int(frozen.user_attrs.get("duplicate_of", trial))
    trained = out / "checkpoints" / f"trial_{source}.pt"
    for kind in ("distilled", "retrained"):
        path = out / kind / f"trial_{source}.pt"
        if weights == kind or (weights == "auto" and path.is_file()):
            if not path.is_file():
                raise ExportError(f"trial {trial} has no {kind} weights (expected {path})")
            return path, kind
    if not trained.is_file():
        raise ExportError(f"trial {trial} has no checkpoint (expected {trained})")
    return trained, "trained"


def read_checkpoint(path: Path) -> dict[str, Any]:
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
    """Refuse, before anything is written, formats that cannot represent the architecture: an int8
    format quantizes every layer to 8 bits with its own calibration, which keeps 8-bit layers (their
    trained ranges are what it measures) but discards anything narrower."""

    spec = parse_arch(arch)
    narrow = reduced_bits(spec, below=8)

    for fmt in formats:
        if FORMATS[fmt].require is not None:
            FORMATS[fmt].require()
    int8 = [f for f in formats if FORMATS[f].int8]
    if int8 and narrow:
        raise ExportError(
            f"{int8[0]} cannot represent this architecture: it re-quantizes every layer to 8 bits with its "
            f"own calibration, discarding the trained bit-widths of {', '.join(narrow)}; export 'onnx' or "
            "'torchscript', which keep the model's own quantization"
        )


def rebuild(out: Path, summary: dict[str, Any], number: int, frozen: Any, weights: str) -> Rebuilt:
    """Load the chosen weights into a fresh model and the search's data, checking that they still fit."""

    if (summary.get("config") or {}).get("evaluator") == "supernet":
        inherited_checkpoint(
            out, summary, frozen
        )  # its weights are the supernet's: written on demand
    ckpt_path, which = find_checkpoint(out, number, frozen, weights)
    blob = read_checkpoint(ckpt_path)
    arch = str(blob["arch"])
    scfg = summary.get("config", {})
    seed = int(scfg.get("seed", 0))
    data = load_data(scfg.get("data", "digits"), seed=seed, resize=scfg.get("resize"))
    shape = tuple(int(v) for v in blob["input_shape"])
    if data.input_shape != shape or data.num_classes != int(blob["num_classes"]):
        raise ExportError(
            f"the search's data ({data.name}, {data.input_shape}, {data.num_classes} classes) no longer matches "
            f"trial {number}'s checkpoint ({tuple(shape)}, {blob['num_classes']} classes)"
        )
    model = build_model(arch, num_classes=data.num_classes, in_chans=shape[0])
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise ExportError(
            f"checkpoint {ckpt_path} does not fit '{arch}': {str(e).splitlines()[0][:200]}"
        ) from None
    model.eval()
    return Rebuilt(
        number=number, frozen=frozen, checkpoint=ckpt_path, weights=which, blob=blob,
        arch=arch, model=model, data=data, seed=seed,
    )  # fmt: skip
