"""The one search loop: setup, proposals and the record of every trial, for every backend.

A backend only decides where a candidate runs and how its progress comes back: it asks ``propose()``
for the next candidate, runs it, and hands the payload to ``record()``; ``report()`` carries a
training candidate's per-epoch accuracy to successive halving. The loop itself does everything else:
opening (or resuming) the study, the MLflow parent run, recovering interrupted trials, reusing a
repeated architecture's result, surviving a sampling failure, and the result files.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from compactnas.core.data import Dataset, TableSource, load_data, take_subset
from compactnas.core.errors import ConfigError
from compactnas.hw_profiles.registry import device_runtime
from compactnas.search.candidate import resolve_latency_model
from compactnas.search.config import SHARING_SPACES, SearchConfig
from compactnas.search.early_stop import SuccessiveHalving
from compactnas.search.objectives import resolve_objectives
from compactnas.search.outcomes import Outcomes, Seen
from compactnas.search.progress import Progress
from compactnas.search.relog import open_tracking
from compactnas.search.results import pareto_front, write_results
from compactnas.search.storage import (
    budget_used,
    interrupted_trials,
    open_study,
    requeue,
    trials_frame,
)
from compactnas.search.strategies.screening import Screen
from compactnas.search.supernet.training import supernet_space
from compactnas.search.table_candidate import check_table
from compactnas.search.tracking import search_metrics
from compactnas.spaces import create_space


def runtime_precisions(cfg: SearchConfig) -> dict[str, Any]:
    """The bit-widths a compressed search for ``cfg.device`` may offer: what its runtime executes
    (hw_profiles/runtimes.py), as the space's ``precisions``; nothing where any bit-width goes."""
    if not (cfg.compress or cfg.share_weights) or cfg.space not in SHARING_SPACES:
        return {}
    runtime = device_runtime(cfg.device)
    if runtime is None or runtime.precisions is None:
        return {}
    if cfg.share_weights:
        raise ConfigError(
            f"share_weights: device '{cfg.device}' runs {runtime.label}, whose files store dense "
            "weights, so the coded size the search would optimise is not what it loads; search "
            "without --device (the 'packed' export keeps coded weights)"
        )
    return {"precisions": runtime.precisions}


@dataclass
class SearchResult:
    out_dir: Path
    summary: dict[str, Any]
    trials: pd.DataFrame
    front: pd.DataFrame
    study: optuna.Study


@dataclass
class Proposal:
    """A candidate handed to a backend: its trial number, architecture string and MLflow run."""

    number: int
    arch: str
    params: dict[str, Any]
    run_id: str | None


class SearchLoop:
    def __init__(self, cfg: SearchConfig, *, data: Dataset | None = None, quiet: bool = False):
        self.cfg = cfg
        self.objectives = resolve_objectives(cfg.objectives)
        # an unknown device fails before data are loaded
        resolve_latency_model(cfg, self.objectives)
        self.data = (
            data if data is not None else load_data(cfg.data, seed=cfg.seed, resize=cfg.resize)
        )
        elastic = None
        if cfg.evaluator == "supernet":  # candidates come from the supernet's sub-space only
            elastic = supernet_space(cfg, self.data)
        self.data = take_subset(self.data, train=cfg.subset, val=cfg.val_subset, seed=cfg.seed)
        if isinstance(self.data, TableSource):  # a table's columns are checked before any trial
            check_table(cfg, self.data)
        sharing = {"share_weights": True} if cfg.share_weights else {}
        if cfg.exits:
            sharing["exits"] = True
        self.space = elastic or create_space(
            cfg.space,
            image_size=self.data.image_size,
            compress=cfg.compress,
            **sharing,
            **runtime_precisions(cfg),
        )
        try:
            cfg.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create output folder {cfg.out_dir}: {e.strerror}") from None
        self.screen = None
        if cfg.screen > 1:
            classes = getattr(self.data, "num_classes", 10)
            model = resolve_latency_model(cfg, self.objectives, num_classes=classes)
            self.screen = Screen(cfg, self.data, self.objectives, model, cfg.out_dir)
        self.study = open_study(cfg, self.objectives)
        self.tracker, self.parent_id = open_tracking(cfg, self.study, self.objectives)
        self.progress = Progress(total=cfg.trials, quiet=quiet)
        self.outcomes = Outcomes(self.study, self.objectives, self.tracker, self.progress)
        recovered = self._recover()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            arch = t.user_attrs.get("arch")
            if arch is not None and arch not in self.outcomes.seen:
                self.outcomes.seen[arch] = Seen(
                    t.number, list(t.values), t.user_attrs.get("metrics", {})
                )
        used = budget_used(self.study)
        self.to_ask = max(0, cfg.trials - used)
        self.progress.done = used
        self.halving = self._halving() if cfg.early_stop else None
        self.trials: dict[int, optuna.Trial] = {}
        self.in_flight: dict[int, Proposal] = {}
        self.rungs: dict[int, dict[int, float]] = {}
        self.waiting: dict[str, list[optuna.Trial]] = {}  # repeats of an architecture in flight
        self.ready: deque[Proposal] = deque()
        self.started = time.time()
        if recovered:
            self.progress.note(f"resumed: {recovered} interrupted trial(s) queued again")
        elif self.progress.done:
            self.progress.note(f"resumed: {self.progress.done} trial(s) already done")

    # -- setup helpers ----------------------------------------------------------------------------
    def _recover(self) -> int:
        stale = interrupted_trials(self.study)
        for t in stale:
            requeue(self.study, t)
            run_id = t.user_attrs.get("mlflow_run_id")
            self.tracker.log(
                run_id, tags={"compactnas.error": "interrupted: the search process stopped"}
            )
            self.tracker.end(run_id, "KILLED")
        return len(stale)

    def _halving(self) -> SuccessiveHalving:
        history: dict[int, list[float]] = {}
        for t in self.study.get_trials(deepcopy=False):
            for k, v in t.user_attrs.get("rungs", {}).items():
                history.setdefault(int(k), []).append(v)
        cfg = self.cfg
        return SuccessiveHalving(
            grace=cfg.grace_epochs, rate=cfg.halving_rate, max_epochs=cfg.epochs, history=history
        )

    # -- what backends call -----------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return not (self.to_ask or self.in_flight or self.waiting or self.ready)

    @property
    def exhausted(self) -> bool:
        """Nothing left to propose now (running candidates may still free repeats of theirs)."""
        return not (self.to_ask or self.ready)

    def propose(self) -> Proposal | None:
        """The next candidate to run, or None when there is none to run now."""
        if self.ready:
            p = self.ready.popleft()
            self.in_flight[p.number] = p
            return p
        self._check_time_budget()
        flying = {p.arch for p in self.in_flight.values()}
        while self.to_ask > 0:
            self.to_ask -= 1
            screened = self._screen(flying)
            trial = self.study.ask()
            if screened is not None and self.screen is not None:
                trial.set_user_attr("screen", screened)
                self.screen.chosen(trial.number)
            try:
                arch = str(self.space.sample(trial))
            except Exception as e:  # noqa: BLE001 - a broken space fails its trial, not the search
                self.outcomes.sampling_failed(trial, e)
                continue
            trial.set_user_attr("arch", arch)
            self.trials[trial.number] = trial
            if arch in self.outcomes.seen:
                self.outcomes.duplicate(
                    trial, self.outcomes.seen[arch], self._start_run(trial, arch)
                )
                continue
            if arch in flying:
                # The same string is training now: wait for its result instead of training it twice.
                self.waiting.setdefault(arch, []).append(trial)
                continue
            p = Proposal(trial.number, arch, dict(trial.params), self._start_run(trial, arch))
            self.in_flight[p.number] = p
            return p
        return None

    def _screen(self, flying: set[str]) -> dict[str, Any] | None:
        """With --screen N: the proxies' pick of N proposals, queued as the next trial."""
        if self.screen is None:
            return None
        if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return None  # a queued trial (a retry, a resumed one) is asked first, unscreened
        taken = set(self.outcomes.seen) | flying | set(self.waiting)
        picked = self.screen.propose(self.study, self.space, taken)
        if picked is None:
            return None
        params, record = picked
        self.study.enqueue_trial(params)
        return record

    def _check_time_budget(self) -> None:
        budget = self.cfg.time_budget
        if budget is None or not self.to_ask or time.time() - self.started < 60 * budget:
            return
        if not self.trials:  # the first candidate always starts: a search ends with a result
            return
        self.progress.note(
            f"time budget of {budget:g} min spent: {self.to_ask} trial(s) not started"
        )
        self.to_ask = 0

    def _start_run(self, trial: optuna.Trial, arch: str) -> str | None:
        params = {
            "arch": arch,
            "trial": trial.number,
            "space": self.cfg.space,
            **{f"p.{k}": v for k, v in trial.params.items()},
        }
        run_id = self.tracker.start_child(self.parent_id, f"trial-{trial.number}", params)
        if run_id is not None:
            trial.set_user_attr("mlflow_run_id", run_id)
        self.progress.start(trial.number, arch)
        return run_id

    def report(self, number: int, epoch: int, accuracy: float) -> bool:
        """A training candidate's accuracy after ``epoch``; True: stop it (successive halving)."""
        if self.halving is None:
            return False
        record = self.rungs.setdefault(number, {})
        return self.halving.reporter(record)(epoch, accuracy)

    def record(self, number: int, payload: dict[str, Any]) -> None:
        p = self.in_flight.pop(number)
        trial = self.trials.pop(number)
        self.outcomes.record(trial, payload, p.run_id, self.rungs.pop(number, None))
        for repeat in self.waiting.pop(p.arch, []):
            first = self.outcomes.seen.get(p.arch)
            if first is not None:
                self.trials.pop(repeat.number, None)
                self.outcomes.duplicate(repeat, first, self._start_run(repeat, p.arch))
            else:  # the first one did not complete: the repeat gets its own chance
                run_id = self._start_run(repeat, p.arch)
                self.ready.append(Proposal(repeat.number, p.arch, dict(repeat.params), run_id))
        self._log_progress()

    def fail_in_flight(self, number: int, reason: str) -> None:
        self.record(number, {"kind": "failed", "reason": reason})

    def replace_run(self, number: int, reason: str) -> str | None:
        """A worker died and its candidate is retried: close its run as KILLED and open another."""
        p = self.in_flight[number]
        self.tracker.log(p.run_id, tags={"compactnas.error": reason})
        self.tracker.end(p.run_id, "KILLED")
        p.run_id = self._start_run(self.trials[number], p.arch)
        return p.run_id

    def _log_progress(self) -> None:
        done = self.progress.done
        front = pareto_front(
            trials_frame(self.study, self.objectives).query("state == 'COMPLETE'"), self.objectives
        )
        self.progress.front = len(front)
        self.tracker.log(
            self.parent_id, metrics={"trials_done": done, "front_size": len(front)}, step=done
        )

    # -- the end ----------------------------------------------------------------------------------
    def finish(self, status: str, **extra: Any) -> SearchResult:
        """Write the result files from the study (whatever state it is in) and close the MLflow run."""
        for number in list(self.in_flight):  # a run cut short (Ctrl-C): its run is not left RUNNING
            self.tracker.log(
                self.in_flight[number].run_id, tags={"compactnas.error": "interrupted"}
            )
            self.tracker.end(self.in_flight[number].run_id, "KILLED")
        cfg = self.cfg
        trials = trials_frame(self.study, self.objectives)
        info = {
            "config": cfg.to_dict(),
            "data": {
                "name": self.data.name,
                "input_shape": list(self.data.input_shape),
                "num_classes": self.data.num_classes,
            },
            "device": cfg.device or "host",
            "backend": cfg.backend,
            "elapsed_s": round(time.time() - self.started, 2),
            "mlflow": {
                "tracking_uri": self.tracker.uri,
                "run_id": self.parent_id,
                "complete": self.tracker.broken is None,
            },
            **extra,
        }
        summary = write_results(cfg.out_dir, trials, self.objectives, extra=info)
        self._finish_parent(summary, status)
        front = pareto_front(trials[trials["state"] == "COMPLETE"], self.objectives)
        return SearchResult(cfg.out_dir, summary, trials, front, self.study)

    def _finish_parent(self, summary: dict[str, Any], status: str) -> None:
        if self.tracker.broken is not None:
            # The study remembers it, so --resume or `compactnas track` logs the missing runs.
            self.study.set_user_attr("tracking_incomplete", self.tracker.broken)
            return
        t = self.tracker
        keys = ("n_complete", "n_failed", "hypervolume")
        t.log(self.parent_id, metrics={**{k: summary[k] for k in keys}, **search_metrics(summary)})
        for name in ("summary.json", "pareto.csv", "pareto.png", "trials.csv"):
            if (self.cfg.out_dir / name).exists():
                t.artifact(self.parent_id, self.cfg.out_dir / name)
        t.end(self.parent_id, status)
        if t.broken is not None:
            self.study.set_user_attr("tracking_incomplete", t.broken)
