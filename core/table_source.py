"""A benchmark table as a data source (``table:PATH``): architectures already measured, looked up
by the table evaluator instead of trained."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compactnas.core.errors import DataError

if TYPE_CHECKING:  # pandas is imported when a table is read, not with the data layer
    import pandas as pd


@dataclass(frozen=True)
class TableSource:
    """A benchmark table standing in for a data set: the table evaluator reads candidates' metrics from it.

    ``input_shape`` and ``num_classes`` are those the table's networks were measured at; they size the
    layer list (parameters, MACs, device predictions) of every candidate.
    """

    name: str
    frame: pd.DataFrame
    input_shape: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10

    @property
    def image_size(self) -> int:
        return max(self.input_shape[1:])

    def __getattr__(self, name: str):
        # Commands that need images (training, distillation, verifying an export) end in one clear line.
        if name in ("train", "val", "test", "classes", "mean", "std"):
            raise DataError(
                f"{self.name} is a table of measured architectures: it has no images ({name})"
            )
        raise AttributeError(name)


def existing_path(path: str, kind: str) -> Path:
    """The path of a ``kind:PATH`` data source, which must exist (one-line DataError otherwise)."""
    if not path:
        raise DataError(f"data source '{kind}:' needs a path, e.g. {kind}:/data/my_{kind}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{kind}: no such file or directory: {p}")
    return p


def _guess_classes(columns: list[str]) -> int:
    # NAS-Bench-201's tables name their data set in the metric columns.
    text = " ".join(columns).lower()
    if "cifar100" in text:
        return 100
    if "imagenet16" in text:
        return 120
    return 10


def read_table(path: str, resize: int | None, num_classes: int | None) -> TableSource:
    """``table:PATH``: a CSV with an ``arch`` column, one row per architecture (the first of repeats)."""
    import pandas as pd

    p = existing_path(path, "table")
    try:
        frame = pd.read_csv(p)
    except Exception as e:
        raise DataError(f"table: cannot read {p} as CSV: {str(e).splitlines()[0]}") from None
    if "arch" not in frame.columns:
        raise DataError(
            f"table: {p} needs an 'arch' column (found: {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise DataError(f"table: {p} holds no rows")
    frame = frame.drop_duplicates("arch", keep="first").set_index("arch", drop=False)
    size = resize or 32
    return TableSource(
        name=f"table:{p.name}",
        frame=frame,
        input_shape=(3, size, size),
        num_classes=num_classes or _guess_classes([str(c) for c in frame.columns]),
    )
