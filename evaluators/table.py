"""The table evaluator: a candidate's metrics looked up in a benchmark table instead of trained.

The data source is ``table:PATH`` (core.data.TableSource): a CSV with an ``arch`` column. A candidate is
found by its NAS-Bench-201 notation when it is a NAS-Bench-201 network, else by its canonical string;
a table may use either for NAS-Bench-201 networks. ``accuracy`` comes from the chosen column (scaled
from percent when the column is in percent), ``latency_ms`` from the latency column when one is chosen:
a measured latency replaces the device profile's prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compactnas.core.errors import ConfigError, DataError
from compactnas.spaces.arch import ArchSpec, as_spec, format_arch
from compactnas.spaces.nb201 import to_nb201_string


def check_table_columns(frame: Any, accuracy: str | None, latency: str | None) -> None:
    """ConfigError unless the accuracy column (required) and latency column (optional) are numeric."""
    if not accuracy:
        raise ConfigError("a table data source needs --table-accuracy COLUMN")
    numeric = [c for c in frame.columns if c != "arch" and frame[c].dtype.kind in "fiu"]
    for role, col in (("accuracy", accuracy), ("latency", latency)):
        if col is not None and col not in numeric:
            raise ConfigError(
                f"table has no numeric column '{col}' for {role} (numeric columns: {', '.join(map(str, numeric))})"
            )


def table_keys(spec: ArchSpec | str) -> list[str]:
    """The strings a table may know a candidate by, most specific first."""
    spec = as_spec(spec)
    keys = []
    if any(b.kind == "cell" for b in spec.stages):
        try:
            keys.append(to_nb201_string(spec))
        except ValueError:
            pass
    keys.append(format_arch(spec))
    return keys


class TableEvaluator:
    """Looks candidates up; ``options``: ``accuracy`` (column name, required), ``latency`` (column)."""

    name = "table"
    trains = False

    def __init__(self, *, options: Mapping[str, Any] | None = None, **_: Any):
        self.options = dict(options or {})
        self._scale: dict[int, float] = {}

    def _accuracy_scale(self, frame: Any, column: str) -> float:
        # One scale per table and column: a column whose values exceed 1 is in percent.
        key = id(frame)
        if key not in self._scale:
            self._scale[key] = 0.01 if float(frame[column].max()) > 1.0 else 1.0
        return self._scale[key]

    def evaluate(self, model: Any, spec: Any, data: Any, *, report: Any = None) -> dict[str, float]:
        frame = getattr(data, "frame", None)
        if frame is None:
            raise ConfigError("the table evaluator needs a table data source (--data table:PATH)")
        acc_col, lat_col = self.options.get("accuracy"), self.options.get("latency")
        check_table_columns(frame, acc_col, lat_col)
        keys = table_keys(spec)
        row = next((frame.loc[k] for k in keys if k in frame.index), None)
        if row is None:
            raise DataError(f"architecture {keys[0]} is not in the table {data.name}")
        out = {"accuracy": float(row[acc_col]) * self._accuracy_scale(frame, acc_col)}
        if lat_col is not None:
            out["latency_ms"] = float(row[lat_col])
        return out
