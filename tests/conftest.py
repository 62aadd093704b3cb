import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests run on small shared machines: one torch thread keeps timings and CPU use predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def digits():
    from compactnas.core.data import load_data

    return load_data("digits", seed=0)


@pytest.fixture
def profile_dir(tmp_path, monkeypatch):
    """Profiles saved by the test land in a folder of its own, not in the user's."""
    folder = tmp_path / "profiles"
    monkeypatch.setenv("COMPACTNAS_PROFILE_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def trained_search(tmp_path_factory):
    """A tiny real search on digits, shared by the export tests: two trials of four epochs (its
    first trial reaches about 0.93 accuracy, enough that int8 rounding does not flip near-ties
    wholesale). Tests export from it into folders of their own and never write into it."""
    from filelock import FileLock

    import compactnas

    # Under pytest-xdist the workers share one run: the first to get here trains it, in the folder
    # all the workers' temporary folders sit in, and the others wait for it and read it.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = Path(root) / "trained_search" / "out"
    with FileLock(str(out.parent) + ".lock"):
        if not (out / "summary.json").is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            compactnas.run_search(
                {"trials": 2, "epochs": 4, "seed": 0, "out": str(out)}, quiet=True
            )
    return out


# Files whose tests take minutes (clusters, servers, several trainings), started first so that under
# `pytest -n 2 --dist loadfile` (`make test`) the other worker works through the many short files
# meanwhile, rather than one long file running alone at the end. Order changes nothing else.
LONG_FILES = (
    "test_ray.py",
    "test_supernet_ray.py",
    "test_arena.py",
    "test_notebooks.py",
    "test_tracking_outage.py",
    "test_resume.py",
    "test_supernet_search.py",
    "test_export_edge.py",
    "test_supernet_train.py",
    "test_tracking_ui.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


@pytest.fixture
def evaluator_for_test():
    """Register evaluators for one test only: ``evaluator_for_test("name", Factory)``."""
    from compactnas.evaluators import register_evaluator, unregister_evaluator

    added: list[str] = []

    def register(name, factory):
        register_evaluator(name)(factory)
        added.append(name)
        return name

    yield register
    for name in added:
        unregister_evaluator(name)
