"""Search strategies: the registry, NB201 canonical cells and the guided sampler on a toy table."""

from __future__ import annotations

import itertools
import re

import numpy as np
import optuna
import pytest

from compactnas.core.errors import ConfigError
from compactnas.search.strategies import STRATEGIES, create_sampler, parse_strategy
from compactnas.search.strategies.canonical import nb201_canonical

optuna.logging.set_verbosity(optuna.logging.WARNING)

CHOICES = ("a", "b", "c", "d")
N_PARAMS = 4  # 256 architectures


def _toy_table() -> dict[tuple[str, ...], tuple[float, float]]:
    """Accuracy grows with 'bigger' choices, with interactions; cost grows with them too."""
    rng = np.random.default_rng(7)
    gain = rng.uniform(0, 1, size=(N_PARAMS, len(CHOICES)))
    cost = np.sort(rng.uniform(0.1, 1, size=(N_PARAMS, len(CHOICES))), axis=1)
    table = {}
    for combo in itertools.product(range(len(CHOICES)), repeat=N_PARAMS):
        acc = sum(gain[i, c] for i, c in enumerate(combo)) + 0.3 * (combo[0] == combo[1])
        lat = sum(cost[i, c] for i, c in enumerate(combo))
        table[tuple(CHOICES[c] for c in combo)] = (float(acc), float(lat))
    return table


def _front(points: list[tuple[float, float]]) -> set[tuple[float, float]]:
    return {p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)}


def _ask(study: optuna.Study) -> tuple[optuna.trial.Trial, tuple[str, ...]]:
    trial = study.ask()
    return trial, tuple(trial.suggest_categorical(f"x{i}", CHOICES) for i in range(N_PARAMS))


def test_registry_builds_every_strategy():
    assert STRATEGIES
    for name in (*STRATEGIES, "nsga2-p16", "nsga3-p4"):
        sampler = create_sampler(name, seed=0, trials=50, workers=2, space_name="nb201")
        assert isinstance(sampler, optuna.samplers.BaseSampler), name
    assert parse_strategy("nsga2-p16") == ("nsga2", 16)
    assert create_sampler("nsga2-p16", seed=0)._population_size == 16


@pytest.mark.parametrize("name", ["simulated-annealing", "nsga2-p1", "tpe-p8"])
def test_unknown_strategy_is_a_config_error(name):
    with pytest.raises(ConfigError, match="sampler|population"):
        create_sampler(name, seed=0)


def test_nb201_canonical_merges_equivalent_cells():
    def cell(*ops):
        return {f"edge_{i}": op for i, op in enumerate(ops)}

    conv, skip, pool, none = "nor_conv_3x3", "skip_connect", "avg_pool_3x3", "none"
    # Node 3 reads only the input: the ops feeding nodes 1 and 2 are dead.
    assert nb201_canonical(cell(conv, pool, skip, skip, none, none)) == cell(
        none, none, none, skip, none, none
    )
    # Nothing reaches the output: every such cell is the same (zero) network.
    assert nb201_canonical(cell(conv, conv, conv, none, none, none)) == cell(*[none] * 6)
    # Nodes 1 and 2 swapped (no edge between them) give the same network.
    a = nb201_canonical(cell(conv, skip, none, pool, conv, skip))
    b = nb201_canonical(cell(skip, conv, none, pool, skip, conv))
    assert a == b
    # A live cell stays as it is.
    live = cell(conv, conv, skip, pool, conv, skip)
    assert nb201_canonical(live) == live


def test_guided_finds_the_toy_front_without_repeats():
    table = _toy_table()
    exact = _front(list(table.values()))
    assert len(exact) >= 4
    sampler = create_sampler("guided", seed=0, trials=60, workers=1)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    seen = []
    for _ in range(60):
        trial, arch = _ask(study)
        seen.append(arch)
        study.tell(trial, list(table[arch]))
    assert len(set(seen)) == len(seen), "an architecture was proposed twice"
    found = _front([table[a] for a in seen])
    assert found == exact, f"missed {sorted(exact - found)} of {len(exact)}"


def test_guided_keeps_parallel_workers_on_distinct_candidates():
    table = _toy_table()
    workers = 4
    sampler = create_sampler("guided", seed=1, trials=40, workers=workers)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    seen: list[tuple[str, ...]] = []
    for _ in range(40 // workers):
        batch = [_ask(study) for _ in range(workers)]  # all asked before any result is in
        assert len({arch for _, arch in batch}) == workers
        for trial, arch in batch:
            seen.append(arch)
            study.tell(trial, list(table[arch]))
    assert len(seen) == 40
    assert len(set(seen)) == len(seen)


def test_guided_never_repeats_a_canonical_nb201_cell():
    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    rng = np.random.default_rng(0)
    sampler = create_sampler("guided", seed=2, trials=30, workers=1, space_name="nb201")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    keys = []
    for _ in range(30):
        trial = study.ask()
        cell = {f"edge_{i}": trial.suggest_categorical(f"edge_{i}", ops) for i in range(6)}
        keys.append(tuple(nb201_canonical(cell).values()))
        convs = sum(op.startswith("nor_conv") for op in cell.values())
        study.tell(
            trial, [convs + rng.normal(0, 0.1), convs + sum(op != "none" for op in cell.values())]
        )
    assert len(keys) == 30
    assert len(set(keys)) == len(keys)


def test_guided_starts_with_random_search_draws():
    """Until its model has data the default is random search, draw for draw (never behind it)."""
    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

    def draws(strategy: str) -> list[tuple[str, ...]]:
        sampler = create_sampler(strategy, seed=3, trials=100, workers=1, space_name="nb201")
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        cells = []
        for i in range(12):
            trial = study.ask()
            cells.append(tuple(trial.suggest_categorical(f"edge_{j}", ops) for j in range(6)))
            study.tell(trial, [0.5 + 0.01 * i, 1.0 + i])
        return cells

    guided, plain = draws("guided"), draws("random")
    assert len(set(plain[:10])) == 10
    assert guided[:10] == plain[:10]  # the start: 10 of a 100-trial budget
    assert guided[10:] != plain[10:]  # then the model picks


def test_search_config_defaults_to_guided():
    from compactnas.search.config import SearchConfig
    from compactnas.search.strategies.guided import GuidedSampler
    from compactnas.search.study import make_sampler

    cfg = SearchConfig()
    assert cfg.sampler == "guided"
    assert isinstance(make_sampler(cfg), GuidedSampler)
    assert isinstance(make_sampler(cfg.replace(sampler="gp")), optuna.samplers.GPSampler)
    with pytest.raises(ConfigError, match="unknown sampler"):
        SearchConfig(sampler="annealing")


def test_whole_search_on_a_table_never_repeats_a_cell(tmp_path):
    """The default sampler through the search loop (SQLite study, MLflow store) on a synthetic table."""
    import pandas as pd

    from compactnas.search.study import run_search
    from compactnas.spaces.nb201 import OPS, nb201_spec, to_nb201_string

    rows = []
    for ops in itertools.product(OPS, repeat=6):
        convs = sum(op.startswith("nor_conv") for op in ops)
        rows.append(
            {
                "arch": to_nb201_string(nb201_spec(ops)),
                "acc": 50 + 4 * convs + (ops[0] == ops[5]),
                "ms": 1 + 3 * convs + sum(op != "none" for op in ops),
            }
        )
    path = tmp_path / "toy.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    config = {
        "space": "nb201",
        "data": f"table:{path}",
        "table_accuracy": "acc",
        "table_latency": "ms",
        "objectives": ["accuracy", "latency"],
        "trials": 14,
        "out": str(tmp_path / "out"),
    }
    result = run_search(config, quiet=True)
    done = result.trials[result.trials["state"] == "COMPLETE"]
    assert len(done) == 14
    cells = [
        nb201_canonical(dict(zip([f"edge_{i}" for i in range(6)], _ops(a), strict=True)))
        for a in done["arch"]
    ]
    keys = [tuple(c.values()) for c in cells]
    assert len(set(keys)) == len(keys)


def _ops(arch: str) -> tuple[str, ...]:
    from compactnas.spaces.nb201 import cell_ops

    return cell_ops(arch)


def test_every_sampler_name_in_the_readme_is_accepted():
    from pathlib import Path

    from compactnas.search.config import SearchConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Search strategies", 1)[1].split("\n### ", 1)[0]
    names = set(re.findall(r"`((?:nsga2|nsga3|guided|tpe|gp|random)(?:-p\d+)?)`", section))
    names |= set(re.findall(r"--sampler ([\w-]+)", readme))
    assert {"guided", "nsga2", "nsga2-p16", "random"} <= names
    for name in names:
        assert SearchConfig(sampler=name).sampler == name


@pytest.mark.slow
def test_search_runs_with_a_population_in_the_sampler_name(tmp_path):
    import json

    from compactnas.cli import main

    out = tmp_path / "p"
    argv = ["search", "--sampler", "nsga2-p4", "--trials", "3", "--epochs", "1", "--out", str(out)]
    assert main([*argv, "--quiet", "--workers", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_complete"] == 3 and summary["config"]["sampler"] == "nsga2-p4"
