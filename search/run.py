"""``run_search``: one search, or one per device, on the configured backend.

The entry point sits above the loop and the backends (which import the loop), so that none of them
imports another in a cycle: this module chooses a backend, builds the loop and drives it.
"""

from __future__ import annotations

import functools
from typing import Any

from compactnas.core.data import Dataset
from compactnas.evaluators.device import resolve_train_device
from compactnas.search.backends.local import run_local, start_early
from compactnas.search.backends.ray_tune import run_on_ray
from compactnas.search.candidate import resolve_latency_model
from compactnas.search.config import SearchConfig, config_from_mapping
from compactnas.search.devices import run_devices
from compactnas.search.loop import SearchLoop, SearchResult
from compactnas.search.objectives import resolve_objectives


def run_search(
    config: SearchConfig | dict[str, Any] | None = None,
    *,
    data: Dataset | None = None,
    quiet: bool = False,
    **overrides: Any,
) -> SearchResult:
    """Run (or resume) a search; returns the front and the paths of everything written."""
    if config is None:
        config = SearchConfig()
    if isinstance(config, dict):
        config = config_from_mapping(config)
    cfg = config.replace(**overrides) if overrides else config
    if cfg.device and "," in cfg.device:  # one search, and one front, per device
        return run_devices(cfg, run_one=_run_one, data=data, quiet=quiet)
    return _run_one(cfg, data=data, quiet=quiet)


def _run_one(cfg: SearchConfig, *, data: Dataset | None, quiet: bool) -> SearchResult:
    if cfg.backend == "ray":
        # The driver need not have the trials' accelerators: with no GPU asked of Ray, it must.
        if cfg.gpus_per_trial == 0:
            resolve_train_device(cfg.train_device)
        return _drive(SearchLoop(cfg, data=data, quiet=quiet), run_on_ray, data is not None)
    resolve_latency_model(cfg, resolve_objectives(cfg.objectives))  # a bad device: no workers yet
    resolve_train_device(cfg.train_device)  # an absent accelerator: one line, before any worker
    early = start_early(cfg, data_given=data is not None)
    try:
        loop = SearchLoop(cfg, data=data, quiet=quiet)
    except BaseException:
        if early is not None:
            early.close()
        raise
    return _drive(loop, functools.partial(run_local, early=early), data is not None)


def _drive(loop: SearchLoop, run: Any, data_given: bool) -> SearchResult:
    status = "FINISHED"
    try:
        run(loop, data_given=data_given)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        result = loop.finish(status)
    return result
