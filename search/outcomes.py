"""What becomes of a trial: the one place where every outcome is recorded, for every backend.

A worker (this process, a worker process or a Ray Tune trial) describes how a candidate went as a
plain *payload* dict:

    {"kind": "complete", "metrics": {...}}               trained; joins the front
    {"kind": "stopped", "metrics": {...}}                stopped early; partial accuracy, off the front
    {"kind": "infeasible", "reason": str, "violations": {constraint: amount}}   over a budget, untrained
    {"kind": "failed", "reason": str, "traceback": str}  raised, diverged or its worker died

The search loop adds two outcomes no worker sees: a repeated architecture (the first result stands for
it) and a sampling failure (the space could not propose a candidate). ``Outcomes`` tells the study,
the MLflow run and the terminal the same way whichever backend ran the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from compactnas.search.objectives import Objective
from compactnas.search.progress import Progress
from compactnas.search.tracking import Tracker

KINDS = ("complete", "stopped", "infeasible", "failed")


@dataclass
class Seen:
    """The first completed trial of an architecture: its record stands for every repeat."""

    number: int
    values: list[float]
    metrics: dict[str, float]


@dataclass
class Outcomes:
    study: optuna.Study
    objectives: list[Objective]
    tracker: Tracker
    progress: Progress
    seen: dict[str, Seen] = field(default_factory=dict)

    def record(
        self,
        trial: optuna.Trial,
        payload: dict[str, Any],
        run_id: str | None,
        rungs: dict[int, float] | None = None,
    ) -> None:
        kind = payload.get("kind")
        if rungs:
            trial.set_user_attr("rungs", {str(k): v for k, v in rungs.items()})
        if kind == "complete":
            self._complete(trial, payload["metrics"], run_id)
        elif kind == "stopped":
            self._stopped(trial, payload["metrics"], run_id)
        elif kind == "infeasible":
            self._infeasible(trial, payload["reason"], payload.get("violations") or {}, run_id)
        else:
            reason = payload.get("reason") or f"unknown outcome {kind!r}"
            self.failed(trial, reason, run_id, payload.get("traceback"))

    def _complete(self, trial: optuna.Trial, metrics: dict[str, float], run_id: str | None) -> None:
        missing = [o.metric for o in self.objectives if o.metric not in metrics]
        if missing:
            self.failed(trial, f"the result has no {', '.join(missing)}", run_id)
            return
        values = [float(metrics[o.metric]) for o in self.objectives]
        trial.set_user_attr("metrics", metrics)
        self.study.tell(trial, values)
        arch = trial.user_attrs.get("arch") or ""
        self.seen.setdefault(arch, Seen(trial.number, values, metrics))
        self.tracker.log(run_id, metrics=metrics)
        self.tracker.end(run_id, "FINISHED")
        self.progress.trial_done(trial.number, "ok", _describe(metrics))

    def _stopped(self, trial: optuna.Trial, metrics: dict[str, float], run_id: str | None) -> None:
        # Stopped by successive halving: its accuracy is a partial one, so it does not join the front.
        epochs = int(metrics.get("epochs", metrics.get("epoch", 0)))
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("stopped_early", epochs)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.tracker.log(run_id, metrics=metrics, tags={"compactnas.stopped_early": epochs})
        self.tracker.end(run_id, "FINISHED")
        acc = metrics.get("accuracy", float("nan"))
        self.progress.trial_done(trial.number, "stopped", f"acc {acc:.3f} after {epochs} epochs")

    def _infeasible(
        self, trial: optuna.Trial, reason: str, violations: dict[str, float], run_id: str | None
    ) -> None:
        for key, amount in violations.items():
            trial.set_constraint(key, amount)
        trial.set_user_attr("infeasible", reason)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.tracker.log(run_id, tags={"compactnas.infeasible": reason})
        self.tracker.end(run_id, "FINISHED")
        self.progress.trial_done(trial.number, "infeasible", reason)

    def failed(
        self, trial: optuna.Trial, reason: str, run_id: str | None, tb: str | None = None
    ) -> None:
        trial.set_user_attr("error", reason)
        self.study.tell(trial, state=TrialState.FAIL)
        tags = {"compactnas.error": reason, **({"compactnas.traceback": tb} if tb else {})}
        self.tracker.log(run_id, tags=tags)
        self.tracker.end(run_id, "FAILED")
        self.progress.trial_done(trial.number, "failed", reason)

    def sampling_failed(self, trial: optuna.Trial, error: Exception) -> None:
        # A broken space fails its trial, not the search; there is no architecture, hence no run.
        self.failed(
            trial, f"sampling failed: {type(error).__name__}: {error}".splitlines()[0], None
        )

    def duplicate(self, trial: optuna.Trial, first: Seen, run_id: str | None) -> None:
        trial.set_user_attr("metrics", first.metrics)
        trial.set_user_attr("duplicate_of", first.number)
        self.study.tell(trial, first.values)
        self.tracker.log(
            run_id, metrics=first.metrics, tags={"compactnas.duplicate_of": first.number}
        )
        self.tracker.end(run_id, "FINISHED")
        self.progress.trial_done(trial.number, "duplicate", f"same as trial {first.number}")


def _describe(m: dict[str, float]) -> str:
    parts = [f"acc {m['accuracy']:.3f}"]
    if "latency_ms" in m:
        parts.append(f"{m['latency_ms']:.3f} ms")
    if "size_bytes" in m:
        parts.append(f"{m['size_bytes'] / 1024:.1f} KB")
    return "  ".join(parts)
