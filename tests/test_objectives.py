"""Objectives rank by their declared direction, whatever their name: a second maximised objective is
maximised, and the front and hypervolume follow."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from compactnas.core.errors import RegistryError
from compactnas.search.objectives import (
    OBJECTIVES,
    Objective,
    register_objective,
    resolve_objectives,
)
from compactnas.search.results import hypervolume, pareto_front, reference_point, to_minimisation


@pytest.fixture
def throughput():
    """A maximised objective without bounds, registered for this test only."""
    obj = register_objective(Objective("throughput", "images_per_s", "maximize", "images/s"))
    yield obj
    OBJECTIVES.pop(obj.name)


def _brute_front(rows, directions):
    def better_or_equal(a, b):
        return all(
            (x >= y) if d == "maximize" else (x <= y)
            for x, y, d in zip(a, b, directions, strict=True)
        )

    return {
        i for i, r in enumerate(rows)
        if not any(better_or_equal(q, r) and q != r for q in rows)
    }  # fmt: skip


def test_two_maximised_objectives_give_the_true_front(throughput):
    objectives = resolve_objectives(["accuracy", "throughput", "latency"])
    rng = np.random.default_rng(3)
    rows = [
        (float(a), float(t), float(lat))
        for a, t, lat in zip(
            rng.uniform(0.3, 0.9, 40), rng.uniform(50, 5000, 40), rng.uniform(1, 9, 40), strict=True
        )
    ]
    df = pd.DataFrame(rows, columns=["accuracy", "images_per_s", "latency_ms"])
    df["trial"], df["arch"] = range(len(df)), [f"a{i}" for i in range(len(df))]
    front = pareto_front(df, objectives)
    expected = _brute_front(rows, [o.direction for o in objectives])
    assert set(front["trial"]) == expected
    # The fastest-throughput candidate is never dominated: it must be on the front (a minimised
    # throughput would drop it and keep the slowest instead).
    assert int(df["images_per_s"].idxmax()) in set(front["trial"])
    assert int(df["images_per_s"].idxmin()) not in set(front["trial"]) or len(expected) == len(df)


def test_hypervolume_grows_with_a_maximised_objective(throughput):
    objectives = resolve_objectives(["accuracy", "throughput"])
    base = pd.DataFrame({"accuracy": [0.5, 0.7], "images_per_s": [1000.0, 400.0]})
    better = base.assign(images_per_s=[2000.0, 400.0])
    both = pd.concat([base, better])
    ref = reference_point(both, objectives)
    pts = to_minimisation(base, objectives)
    assert np.all(pts < ref), "every completed point lies inside the reference box"
    assert hypervolume(to_minimisation(better, objectives), ref) > hypervolume(pts, ref)


def test_objective_registration_is_checked():
    with pytest.raises(RegistryError, match="already registered"):
        register_objective(Objective("accuracy", "accuracy", "maximize", "x"))
    with pytest.raises(RegistryError, match="direction"):
        register_objective(Objective("speed", "speed", "faster", "x"))
    assert "speed" not in OBJECTIVES


def test_accuracy_is_error_and_its_reference_is_zero_accuracy():
    (acc,) = resolve_objectives(["accuracy"])
    assert acc.to_min(0.8) == pytest.approx(0.2)
    ref = reference_point(pd.DataFrame({"accuracy": [0.9, 0.4]}), [acc])
    assert ref.tolist() == [1.0]
    for a, b in itertools.combinations([0.1, 0.5, 0.9], 2):
        assert acc.to_min(a) > acc.to_min(b)  # higher accuracy, smaller quantity to minimise
