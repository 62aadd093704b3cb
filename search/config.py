"""SearchConfig: every setting of a search, from YAML, CLI flags or keyword arguments."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from compactnas.core.errors import ConfigError
from compactnas.core.onnx_runtime import HOST_RUNTIMES
from compactnas.evaluators import list_evaluators
from compactnas.evaluators.recipes import RECIPES, with_recipe
from compactnas.evaluators.train import TrainConfig
from compactnas.evaluators.zerocost import check_proxies
from compactnas.search.strategies import parse_strategy

BACKENDS = ("local", "ray")
SCREEN_PICKS = ("front", "sampler")
SHARING_SPACES = ("mobile", "squeeze")  # the spaces whose stages sample sp/cl (share_weights)


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    # What to search and on which data
    space: str = "mobile"
    data: str = "digits"
    resize: int | None = None
    compress: bool = False
    share_weights: bool = False  # also sparsity and k-means weight sharing per stage (sp/cl keys)
    exits: bool = False  # also early exits after stages (ex keys), scored at their expected latency
    # Table data source (data "table:PATH"): the columns the table evaluator reads
    table_accuracy: str | None = None
    table_latency: str | None = None
    # How to score and search
    objectives: tuple[str, ...] = ("accuracy", "latency", "size")
    trials: int = 30
    # Wall-clock minutes after which no new candidate starts (running ones finish); None: no limit
    time_budget: float | None = None
    sampler: str = "guided"
    population: int = 8
    seed: int = 0
    device: str | None = None
    max_latency_ms: float | None = None
    max_size_kb: float | None = None
    max_params: int | None = None
    # How a candidate gets its accuracy: a registered evaluator's name, or "auto" (compress for a
    # compressed candidate, proxy otherwise, table for a table: data source)
    evaluator: str = "auto"
    # A trained supernet's folder (compactnas supernet train): candidates inherit its weights
    supernet: str | None = None
    # Proxy training: a named recipe (evaluators/recipes.py) whose settings the fields below override;
    # the defaults are the "proxy" recipe's
    recipe: str = "proxy"
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.005
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    threads: int = 1
    # Candidates evaluated at once by the local backend, each in its own process (None: one per core)
    workers: int | None = None
    latency_threads: int = 1
    label_smoothing: float = 0.1
    augment: str = "auto"  # auto: crop-flip for colour images >= 32 px, shift otherwise
    warmup: float = 0.15  # share of training steps warming up to the peak learning rate
    ema: float = 0.0  # per-step decay of a moving average of the weights (0: off)
    tta: bool = False  # flip test-time augmentation when scoring (colour images only)
    # Where candidates train (not the target device): auto = CUDA, else MPS, else CPU
    train_device: str = "auto"
    precision: str = "auto"  # auto: mixed precision on an accelerator, fp32 on the CPU; fp32; amp
    compile: bool = False  # torch.compile each candidate (see benchmarks/train_speed.py)
    subset: int | None = None  # at most this many training examples per candidate
    val_subset: int | None = None  # at most this many validation examples
    host_runtime: str = "onnxruntime"  # how host latency is measured: onnxruntime or torch (eager)
    # Where results go
    out: str = "runs/search"
    study_name: str = "compactnas"
    resume: bool = False
    tracking_uri: str | None = None
    experiment: str = "compactnas"
    backend: str = "local"
    # Ray backend and early stopping
    address: str | None = None
    concurrency: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_retries: int = 2
    early_stop: bool = False
    grace_epochs: int = 3
    halving_rate: int = 3
    # Zero-cost screening (search/strategies/screening.py): N proposals proxy-scored per trained one
    screen: int = 0  # 0 or 1: off
    screen_proxies: str = "synflow,naswot,meco"  # zero-cost proxies whose rank vote screens
    screen_data: str | None = None  # images for the proxies when data is a table (npz:PATH, ...)
    screen_batch: int = 64  # images in the proxies' minibatch
    screen_pick: str = "front"  # which proposal is trained: "front" or "sampler" (see screening.py)

    def __post_init__(self) -> None:
        if isinstance(self.objectives, str):
            object.__setattr__(
                self,
                "objectives",
                tuple(o.strip() for o in self.objectives.split(",") if o.strip()),
            )
        else:
            object.__setattr__(self, "objectives", tuple(self.objectives))
        if not self.objectives:
            raise ConfigError("at least one objective is needed")
        if len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"objectives repeat a name: {','.join(self.objectives)}")
        parse_strategy(self.sampler)  # the strategies' registry is the one list of names
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown recipe '{self.recipe}' (use one of: {', '.join(RECIPES)})")
        if self.share_weights and (
            self.space not in SHARING_SPACES or self.evaluator == "supernet"
        ):
            raise ConfigError(
                f"share_weights needs a trained space with per-stage compression keys "
                f"({', '.join(SHARING_SPACES)}), not space '{self.space}' with evaluator "
                f"'{self.evaluator}'"
            )
        if self.exits and (
            self.space not in SHARING_SPACES or self.evaluator == "supernet" or not self.device
            or "," in self.device
        ):  # fmt: skip
            raise ConfigError(
                f"exits needs a trained space ({', '.join(SHARING_SPACES)}) and one --device, whose "
                "profile prices the expected latency over where inputs leave"
            )
        # The training settings are checked where they are used: TrainConfig says what is wrong.
        TrainConfig(
            optimizer=self.optimizer, augment=self.augment, label_smoothing=self.label_smoothing,
            warmup=self.warmup, ema=self.ema, train_device=self.train_device, precision=self.precision,
        )  # fmt: skip
        if self.host_runtime not in HOST_RUNTIMES:
            raise ConfigError(
                f"unknown host runtime '{self.host_runtime}' (use one of: {', '.join(HOST_RUNTIMES)})"
            )
        for name in ("subset", "val_subset"):
            v = getattr(self, name)
            if v is not None and v < 2:
                raise ConfigError(f"{name} must be at least 2 examples, got {v}")
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"unknown backend '{self.backend}' (use one of: {', '.join(BACKENDS)})"
            )
        for name in (
            "trials",
            "epochs",
            "batch_size",
            "threads",
            "latency_threads",
            "concurrency",
            "grace_epochs",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.supernet is not None and self.evaluator == "auto":
            object.__setattr__(self, "evaluator", "supernet")
        if self.evaluator == "supernet" and not self.supernet:
            raise ConfigError("the supernet evaluator needs --supernet DIR (a trained supernet)")
        if self.supernet is not None and self.evaluator != "supernet":
            raise ConfigError(f"--supernet needs --evaluator supernet, not '{self.evaluator}'")
        if self.evaluator != "auto":
            if self.evaluator not in list_evaluators():
                raise ConfigError(
                    f"unknown evaluator '{self.evaluator}' "
                    f"(use auto or one of: {', '.join(list_evaluators())})"
                )
        if self.halving_rate < 2:
            raise ConfigError(f"halving_rate must be >= 2, got {self.halving_rate}")
        if self.screen < 0 or self.screen_batch < 2:
            raise ConfigError(
                f"screen must be >= 0 and screen_batch >= 2, got {self.screen} and {self.screen_batch}"
            )
        if self.screen_pick not in SCREEN_PICKS:
            raise ConfigError(
                f"unknown screen_pick {self.screen_pick!r} (choose from {', '.join(SCREEN_PICKS)})"
            )
        if self.screen > 1 and self.data.startswith("table:") and not self.screen_data:
            raise ConfigError(
                "screening a table search needs images for the proxies: --screen-data "
                "(e.g. npz:PATH or cifar10:DIR)"
            )
        try:
            check_proxies(p.strip() for p in self.screen_proxies.split(","))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.cpus_per_trial > 0 or self.gpus_per_trial < 0:
            raise ConfigError("cpus_per_trial must be > 0 and gpus_per_trial >= 0")
        if self.population < 2:
            raise ConfigError(f"population must be >= 2, got {self.population}")
        for name in ("max_latency_ms", "max_size_kb", "max_params", "lr", "time_budget"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be a positive number, got {v}")
        if (
            self.address
            and not self.address.startswith(("ray://", "http"))
            and ":" not in self.address
        ):
            raise ConfigError(
                f"Ray address must be HOST:PORT or ray://HOST:PORT, got '{self.address}'"
            )
        if (self.table_accuracy or self.table_latency) and not self.data.startswith("table:"):
            raise ConfigError(
                "--table-accuracy/--table-latency need a table data source (table:PATH)"
            )
        if self.data.startswith("table:") and not self.table_accuracy:
            raise ConfigError("a table data source needs --table-accuracy COLUMN")
        if not self.study_name or not self.out:
            raise ConfigError("study_name and out must not be empty")

    @property
    def n_workers(self) -> int:
        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    @property
    def out_dir(self) -> Path:
        return Path(self.out).expanduser().resolve()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["objectives"] = list(self.objectives)
        return d

    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in fields(SearchConfig)}


def _coerce(name: str, value: Any) -> Any:
    default = SearchConfig.__dataclass_fields__[name].default
    if value is None:
        return None
    if name == "objectives":
        if isinstance(value, str):
            return value
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(
            "config field 'objectives' must be a list of names or a comma-separated string"
        )
    expected = type(default) if default is not None else None
    if name in ("resize", "max_params", "workers", "subset", "val_subset"):
        expected = int
    if name in ("max_latency_ms", "max_size_kb", "time_budget"):
        expected = float
    if name in ("cpus_per_trial", "gpus_per_trial"):
        expected = float
    if name in ("device", "tracking_uri", "address", "table_accuracy", "table_latency", "supernet",
                "screen_data"):  # fmt: skip
        expected = str
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config field '{name}' must be true or false, got {value!r}")
        return value
    if expected is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected is str and isinstance(value, str):
        return value
    raise ConfigError(
        f"config field '{name}' must be {expected.__name__ if expected else 'a value'}, got {value!r}"
    )


def config_from_mapping(values: dict[str, Any], *, source: str = "config") -> SearchConfig:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown field(s) {', '.join(unknown)} (known: {', '.join(_FIELDS)})"
        )
    name = values.get("recipe") or "proxy"
    if not isinstance(name, str):
        raise ConfigError(f"config field 'recipe' must be str, got {name!r}")
    values = {**values, **with_recipe(name, values)}  # the recipe fills what is not set
    return SearchConfig(**{k: _coerce(k, v) for k, v in values.items()})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping of SearchConfig fields (validated by config_from_mapping)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        values = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {p} must hold a mapping of settings, got {type(values).__name__}"
        )
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    config_from_mapping(values, source=str(p))  # validate early, naming the file
    return values
