"""The notebooks run top to bottom at a small budget (set through their COMPACTNAS_NB_* variables)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["quickstart.ipynb", "custom_device.ipynb", "measure_your_board.ipynb"]
)
def test_notebook_runs(name, tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
    # The kernel inherits this environment.
    monkeypatch.setenv("COMPACTNAS_NB_TRIALS", "3")
    monkeypatch.setenv("COMPACTNAS_NB_EPOCHS", "2")
    monkeypatch.setenv("COMPACTNAS_NB_ARCHS", "12")
    monkeypatch.setenv("COMPACTNAS_NB_REPEATS", "5")
    monkeypatch.setenv("COMPACTNAS_NB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("COMPACTNAS_PROFILE_DIR", str(tmp_path / "profiles"))
    # Jupyter's own default, which the suite-wide Agg setting would otherwise override.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the notebook's plots did not render"
    assert (tmp_path / "out").is_dir()
