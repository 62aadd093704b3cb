"""The table data source and evaluator: a search over a measured benchmark, with no training."""

import itertools
import json
import subprocess
import sys

import pandas as pd
import pytest

from compactnas.core.data import TableSource, load_data
from compactnas.core.errors import ConfigError, DataError
from compactnas.evaluators import create_evaluator
from compactnas.search import SearchConfig, run_search
from compactnas.search.export.base import ExportError
from compactnas.search.export.pipeline import export
from compactnas.spaces import format_arch
from compactnas.spaces.nb201 import OPS, nb201_spec, to_nb201_string


def _table(path, *, drop_convs=False):
    rows = []
    for ops in itertools.product(OPS, repeat=6):
        if drop_convs and "nor_conv_3x3" in ops:
            continue  # a table that lacks these architectures
        convs = sum(o.startswith("nor_conv") for o in ops)
        rows.append(
            {
                "arch": to_nb201_string(nb201_spec(ops)),
                "acc": 40.0 + 5 * convs,
                "dev_ms": 1.0 + convs,
            }
        )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_table_source_and_lookup(tmp_path):
    path = _table(tmp_path / "t.csv")
    data = load_data(f"table:{path}")
    assert (
        isinstance(data, TableSource) and data.input_shape == (3, 32, 32) and data.num_classes == 10
    )
    ev = create_evaluator("table", options={"accuracy": "acc", "latency": "dev_ms"})
    assert ev.trains is False
    spec = nb201_spec(
        ("nor_conv_3x3", "none", "skip_connect", "nor_conv_1x1", "none", "avg_pool_3x3")
    )
    out = ev.evaluate(None, spec, data)
    assert out == {"accuracy": pytest.approx(0.50), "latency_ms": 3.0}  # percent scaled to [0, 1]
    # A table may key the same network by our grammar instead.
    ours = tmp_path / "ours.csv"
    pd.DataFrame([{"arch": format_arch(spec), "acc": 0.7}]).to_csv(ours, index=False)
    out = create_evaluator("table", options={"accuracy": "acc"}).evaluate(
        None, spec, load_data(f"table:{ours}")
    )
    assert out == {"accuracy": 0.7}


def test_missing_architecture_and_bad_columns_are_clear(tmp_path):
    data = load_data(f"table:{_table(tmp_path / 't.csv', drop_convs=True)}")
    ev = create_evaluator("table", options={"accuracy": "acc"})
    with pytest.raises(DataError, match="is not in the table"):
        ev.evaluate(None, nb201_spec(("nor_conv_3x3",) * 6), data)
    with pytest.raises(ConfigError, match="no numeric column 'nope'"):
        create_evaluator("table", options={"accuracy": "nope"}).evaluate(
            None, nb201_spec(("none",) * 6), data
        )
    (tmp_path / "bad.csv").write_text("name,acc\nx,1\n")
    with pytest.raises(DataError, match="needs an 'arch' column"):
        load_data(f"table:{tmp_path / 'bad.csv'}")


def test_search_over_a_table(tmp_path):
    path = _table(tmp_path / "t.csv", drop_convs=True)
    cfg = SearchConfig(
        space="nb201", data=f"table:{path}", table_accuracy="acc", table_latency="dev_ms",
        trials=12, population=4, out=str(tmp_path / "run"), device="rpi4",
    )  # fmt: skip
    result = run_search(cfg, quiet=True)
    trials = result.trials
    assert len(trials) == 12
    done = trials[trials.state == "COMPLETE"]
    assert len(done) > 0
    for _, row in done.iterrows():
        code = row["arch"].split("_o")[1][:6]
        assert row["latency_ms"] == 1.0 + code.count(
            "2"
        )  # the table's measurement, not the profile's
        assert row["accuracy"] == pytest.approx(0.40 + 0.05 * code.count("2"))
        assert row["predicted_latency_ms"] > 0
    failed = trials[trials.state == "FAIL"]
    assert all(
        "is not in the table" in e for e in failed.error
    )  # only a cell with a 3x3 conv is missing
    assert all("3" not in a.split("_o")[1][:6] for a in done.arch)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_complete"] == len(done)
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained, nothing saved
    exported = export(tmp_path / "run", pick="accuracy", formats="arch", mlflow=False)
    text = exported.files["arch"].read_text().strip()
    assert text in set(done.arch) and exported.card["nb201"] == to_nb201_string(text)
    with pytest.raises(ExportError, match="trains no weights"):
        export(
            tmp_path / "run",
            pick="accuracy",
            formats="onnx",
            mlflow=False,
            dest=str(tmp_path / "x"),
        )


@pytest.mark.slow
def test_cli_column_errors_exit_2(tmp_path):
    path = _table(tmp_path / "t.csv", drop_convs=True)
    base = [
        sys.executable,
        "-m",
        "compactnas",
        "search",
        "--space",
        "nb201",
        "--data",
        f"table:{path}",
    ]
    r = subprocess.run(
        [*base, "--out", str(tmp_path / "a"), "--trials", "2"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "--table-accuracy" in r.stderr
    r = subprocess.run(
        [*base, "--table-accuracy", "nope", "--out", str(tmp_path / "b"), "--trials", "2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and "no numeric column 'nope'" in r.stderr
