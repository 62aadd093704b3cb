import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests run on small shared machines: one torch thread keeps timings and CPU use predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def digits():
    from compactnas.core.data import load_data

    return load_data("digits", seed=0)
