import os

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
    import compactnas

    out = tmp_path_factory.mktemp("trained_search") / "out"
    compactnas.run_search({"trials": 2, "epochs": 4, "seed": 0, "out": str(out)}, quiet=True)
    return out


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
