"""The examples in the README's "Python API" section run, in order, at a small budget."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _section() -> str:
    m = re.search(r"^## Python API\n(.*?)(?=^## |\Z)", README.read_text(), flags=re.S | re.M)
    assert m, "README.md lacks its '## Python API' section"
    return m.group(1)


def _blocks(section: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)


def _small(code: str) -> str:
    code = re.sub(r'"trials": \d+', '"trials": 2', code)
    return re.sub(r'"epochs": \d+', '"epochs": 1', code)


@pytest.mark.slow
def test_python_api_examples_run(tmp_path, monkeypatch, capsys):
    blocks = _blocks(_section())
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)  # the examples write to relative paths such as runs/api
    namespace: dict = {"__name__": "__docs__"}
    try:
        for i, code in enumerate(blocks, 1):
            exec(compile(_small(code), f"README Python API block {i}", "exec"), namespace)  # noqa: S102
    finally:
        import mlflow

        mlflow.set_tracking_uri(None)
    out = capsys.readouterr().out
    assert "torch.Size([2, 10])" in out
    assert (tmp_path / "runs" / "api" / "export" / "card.json").is_file()


def test_the_budget_shrinker_reaches_every_search():
    searches = [code for code in _blocks(_section()) if "run_search(" in code]
    assert searches, "the README's Python API section runs no search"
    for code in searches:
        assert '"trials": 2' in _small(code) and '"epochs": 1' in _small(code)
