"""Zero-cost screening: the sampler proposes N candidates, proxies pick the one that is trained.

``--screen N``: before each trained candidate, the search's own sampler is asked for N proposals in a
scratch copy of the study (the real study is not touched, and proposals still in the scratch copy
count as running, so a sampler that spreads its workers' proposals spreads these too). Each proposal
is built at initialisation and scored by zero-cost proxies on one minibatch (seconds on a CPU), and
its cost objectives are computed as the search computes them before training (device-profile latency,
size, parameters, MACs). Which one is trained (``screen_pick``):

- ``front`` (default): once five candidates are trained, a line fitted to their (proxy vote, accuracy)
  predicts each proposal's accuracy, and the proposal whose predicted point adds most hypervolume to
  the trained front is trained. Before that, when the line has no positive slope (the proxies do not
  rank this search's candidates), or when no proposal is predicted to improve the front, the
  ``sampler`` rule decides;
- ``sampler``: the first proposal, in the sampler's own order, that no other proposal dominates on
  (proxy vote, costs): the sampler's preference is kept unless the proxies say another candidate is
  at least as promising and no more expensive. While the sampler is still in its random start-up,
  that is a random draw from the non-dominated proposals: the start is warm.

The proxy vote of a candidate is its mean percentile, over the chosen proxies, among every candidate
this search has scored (so a vote is comparable across proposals and grows more precise as the search
goes on). Every scored candidate goes to ``screened.csv`` in the search folder as it is scored,
chosen or not; a resumed search reads it back and scores nothing twice.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

# optuna's exact hypervolume (WFG); private module, stable since 3.x, the one its own samplers use
from optuna._hypervolume import compute_hypervolume
from optuna.study import StudyDirection
from optuna.trial import TrialState
from scipy.stats import rankdata

from compactnas.core.data import Dataset, TableSource, load_data
from compactnas.core.errors import ConfigError
from compactnas.evaluators import zerocost
from compactnas.evaluators.compression import build_pruned_model, is_pruned
from compactnas.evaluators.counting import count_macs, count_parameters
from compactnas.evaluators.table import table_keys
from compactnas.search.metrics import searched_size_bytes
from compactnas.spaces import create_model
from compactnas.spaces.arch import parse_arch

# The objectives a candidate's screening cost vector reads, and the metric each is.
_COSTS = {"latency": "latency_ms", "size": "size_bytes", "params": "params", "macs": "macs",
          "energy": "energy_mj", "sram": "peak_sram_kb"}  # fmt: skip
_ASKS_PER_CANDIDATE = 4  # a sampler that keeps proposing known architectures gets this many tries
_MIN_TRAINED = (
    5  # trained candidates before their (vote, accuracy) line predicts a proposal's accuracy
)


def nondominated_first(votes: Sequence[float], costs: Sequence[Sequence[float]]) -> int:
    """Index of the first row that no other row dominates (higher vote, costs no higher)."""
    n = len(votes)
    for i in range(n):
        dominated = False
        for j in range(n):
            if j == i:
                continue
            no_worse = votes[j] >= votes[i] and all(
                cj <= ci for cj, ci in zip(costs[j], costs[i], strict=True)
            )
            better = votes[j] > votes[i] or any(
                cj < ci for cj, ci in zip(costs[j], costs[i], strict=True)
            )
            if no_worse and better:
                dominated = True
                break
        if not dominated:
            return i
    return 0


class Screen:
    """Scores proposals by zero-cost proxies and picks the one to train (see the module docstring)."""

    def __init__(
        self,
        cfg: Any,
        data: Dataset | TableSource,
        objectives: Sequence[Any],
        latency_model: Any | None,
        out_dir: Path,
    ) -> None:
        self.n = int(cfg.screen)
        self.rule = cfg.screen_pick
        self.seed = int(cfg.seed)
        self.proxies = zerocost.check_proxies(p.strip() for p in cfg.screen_proxies.split(","))
        # a table search's latency column is what the search reads before any accuracy: free, like a profile
        self.table_latency = None
        if isinstance(data, TableSource) and cfg.table_latency:
            self.table_latency = (data.frame, cfg.table_latency)
        images = data
        if cfg.screen_data:
            images = load_data(cfg.screen_data, seed=cfg.seed, resize=cfg.resize)
        if isinstance(images, TableSource):
            raise ConfigError(
                "screening a table search needs images for the proxies: --screen-data "
                "(e.g. npz:PATH or cifar10:DIR)"
            )
        self.x = images.train.x[: cfg.screen_batch]
        self.y = images.train.y[: cfg.screen_batch]
        self.num_classes = images.num_classes
        self.shape = tuple(images.input_shape)
        self.latency_model = latency_model
        costs = [_COSTS[o.name] for o in objectives if o.name in _COSTS]
        # no device profile: MACs stand in (timing each candidate is not cheap)
        stand_in = ("energy_mj", "peak_sram_kb") + (
            ("latency_ms",) if self.table_latency is None else ()
        )
        if latency_model is None:
            costs = ["macs" if c in stand_in else c for c in costs]
        # costs at the shapes the search counts them: a table's networks, else the images'
        self.cost_shape = tuple(data.input_shape)
        self.cost_classes = data.num_classes
        self.device = cfg.device
        self.costs = list(dict.fromkeys(costs or ["macs"]))
        # The objectives' metrics in study order, for predicting a proposal's point on the front: only
        # when accuracy is one and every other is a cost computed here in its own units.
        self.metrics = [o.metric for o in objectives]
        names = [o.name for o in objectives]
        self.accuracy_at = names.index("accuracy") if "accuracy" in names else None
        self.stand_in = any(
            m not in self.costs for i, m in enumerate(self.metrics) if i != self.accuracy_at
        )
        self.path = out_dir / "screened.csv"
        self.rows: dict[str, dict[str, Any]] = {}
        self._pending: tuple[str, dict[str, float]] | None = None
        self._load()

    # -- the record -------------------------------------------------------------------------------
    def _fields(self) -> list[str]:
        return ["arch", *self.proxies, *self.costs, "seconds", "chosen_for_trial"]

    def _load(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open(newline="") as f:
            for row in csv.DictReader(f):
                try:
                    values = {k: float(row[k]) for k in (*self.proxies, *self.costs, "seconds")}
                except (KeyError, TypeError, ValueError):
                    continue  # written by a search with other proxies or objectives: scored again
                self.rows[row["arch"]] = values

    def _append(self, arch: str, values: dict[str, float], chosen: int | None) -> None:
        new = not self.path.is_file()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._fields())
            if new:
                w.writeheader()
            w.writerow(
                {"arch": arch, **values, "chosen_for_trial": "" if chosen is None else chosen}
            )

    # -- scoring ----------------------------------------------------------------------------------
    def score(self, spec: Any) -> dict[str, float]:
        """Proxies and costs of one architecture (cached; computed once per search)."""
        arch = str(spec)
        if arch in self.rows:
            return self.rows[arch]
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        model = create_model(spec, num_classes=self.num_classes, in_chans=self.shape[0])
        values = zerocost.score(model, self.x, self.y, self.proxies)
        values = {k: (v if math.isfinite(v) else -math.inf) for k, v in values.items()}
        if is_pruned(spec):  # counted at the shapes it deploys with, as the search counts it
            model = build_pruned_model(spec, num_classes=self.num_classes, in_chans=self.shape[0])
        values.update(self._cost(spec, model))
        values["seconds"] = round(time.perf_counter() - t0, 4)
        self.rows[arch] = values
        return values

    def _cost(self, spec: Any, model: torch.nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in self.costs:
            if key == "params":
                out[key] = float(count_parameters(model))
            elif key == "size_bytes":
                out[key] = float(
                    searched_size_bytes(spec, self.cost_shape, self.cost_classes, self.device)
                )
            elif key == "macs":
                out[key] = float(count_macs(model, self.shape))
            elif key == "latency_ms" and self.table_latency is not None:
                frame, column = self.table_latency
                row = next((frame.loc[k] for k in table_keys(spec) if k in frame.index), None)
                out[key] = float(row[column]) if row is not None else math.inf
            elif key == "latency_ms":
                out[key] = float(self.latency_model.predict_ms(spec, self.cost_shape))
            else:  # energy_mj, peak_sram_kb: the device profile's figures
                value = getattr(self.latency_model, key)(spec, self.cost_shape)
                out[key] = float(value) if value is not None else 0.0
        return out

    def votes(self, archs: Sequence[str]) -> list[float]:
        """Each architecture's mean percentile over the proxies among all scored ones, in [0, 1]."""
        every = list(self.rows)
        where = {a: i for i, a in enumerate(every)}
        top = max(len(every) - 1, 1)
        per = []
        for name in self.proxies:
            r = rankdata([self.rows[a][name] for a in every], method="average") - 1.0
            per.append(r)
        return [float(sum(r[where[a]] for r in per) / (len(per) * top)) for a in archs]

    # -- choosing ---------------------------------------------------------------------------------
    def propose(
        self, study: optuna.Study, space: Any, taken: set[str]
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Ask the sampler for N new proposals, score them, and return (params, record) of the pick;
        None when the sampler has nothing new to offer (the search then asks it as usual)."""
        scratch = optuna.create_study(directions=study.directions, sampler=study.sampler)
        keep = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        for t in study.get_trials(deepcopy=False):
            if t.state in keep:
                scratch.add_trial(t)
        proposals: list[tuple[dict[str, Any], str]] = []
        names = set(taken)
        fresh: set[str] = set()
        for _ in range(self.n * _ASKS_PER_CANDIDATE):
            if len(proposals) >= self.n:
                break
            trial = scratch.ask()
            try:
                spec = space.sample(trial)
            except Exception:  # noqa: BLE001 - a proposal the space cannot build is not screened
                continue
            arch = str(spec)
            if arch in names:
                continue
            names.add(arch)
            if arch not in self.rows:
                fresh.add(arch)
            self.score(spec)
            proposals.append((dict(trial.params), arch))
        if not proposals:
            return None
        archs = [a for _, a in proposals]
        votes = self.votes(archs)
        costs = [[self.rows[a][c] for c in self.costs] for a in archs]
        pick = self._front_pick(study, archs, votes) if self.rule == "front" else None
        rule = "front"
        if pick is None:
            pick, rule = nondominated_first(votes, costs), "sampler"
        for i, arch in enumerate(archs):
            if i != pick and arch in fresh:  # a proposal passed over now may be proposed again
                self._append(arch, self.rows[arch], None)
        record = {
            "vote": round(votes[pick], 4),
            "rank_in_proposals": pick,
            "proposals": len(proposals),
            "rule": rule,
            **{k: self.rows[archs[pick]][k] for k in self.proxies},
        }
        self._pending = (archs[pick], self.rows[archs[pick]])
        return proposals[pick][0], record

    def _front_pick(self, study: optuna.Study, archs: list[str], votes: list[float]) -> int | None:
        """The proposal that adds most to the front's hypervolume, its accuracy predicted from its
        vote by a line fitted on the trained candidates; None while that cannot be decided (fewer
        than ``_MIN_TRAINED`` trained, costs that stand in for other units, a fit without slope,
        or no proposal predicted to improve the front): the non-dominated rule decides then."""
        if self.stand_in or self.accuracy_at is None:
            return None
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None and t.user_attrs.get("arch")
        ]
        if len(done) < _MIN_TRAINED:
            return None
        for t in done:  # a trained candidate the screen never saw (a retry, a resumed search)
            if t.user_attrs["arch"] not in self.rows:
                try:
                    self.score(parse_arch(t.user_attrs["arch"]))
                except Exception:  # noqa: BLE001 - a candidate that cannot be rebuilt is left out
                    continue
        done = [t for t in done if t.user_attrs["arch"] in self.rows]
        trained_votes = np.array(self.votes([t.user_attrs["arch"] for t in done]))
        accuracy = np.array([t.values[self.accuracy_at] for t in done], dtype=float)
        if len(done) < _MIN_TRAINED or np.ptp(trained_votes) == 0:
            return None
        slope, intercept = np.polyfit(trained_votes, accuracy, 1)
        if not slope > 0:  # the proxies do not rank this search's candidates: no prediction
            return None
        sign = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions])
        front = np.array([t.values for t in done], dtype=float) * sign
        points = []
        for arch, vote in zip(archs, votes, strict=True):
            row = [self.rows[arch][m] if m in self.rows[arch] else math.nan for m in self.metrics]
            row[self.accuracy_at] = slope * vote + intercept
            points.append(row)
        predicted = np.array(points, dtype=float) * sign
        if not np.isfinite(predicted).all():
            return None
        reference = np.maximum(front.max(axis=0), predicted.max(axis=0))
        reference = reference + 0.1 * np.abs(reference) + 1e-9
        base = compute_hypervolume(front, reference)
        gains = [compute_hypervolume(np.vstack([front, p]), reference) - base for p in predicted]
        best = int(np.argmax(gains))
        return best if gains[best] > 0 else None

    def chosen(self, number: int) -> None:
        """The picked proposal became trial ``number``: its row goes to the record with it."""
        if self._pending is not None:
            self._append(*self._pending, number)
            self._pending = None
