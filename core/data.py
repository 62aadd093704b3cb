"""Data sets, all read from local files: nothing is ever downloaded.

Sources (``--data``):
    digits          scikit-learn's bundled 8x8 handwritten digits (the default)
    npz:PATH        arrays ``x`` (N,H,W or N,C,H,W or N,H,W,C; uint8 or float) and ``y`` (N,) integer labels
    folder:PATH     an image folder: one sub-folder per class holding image files
    cifar10:PATH    a local copy of CIFAR-10 (the python pickles, ``cifar-10-batches-py``)
    table:PATH      a CSV of already measured architectures (``arch`` column plus metric columns, e.g.
                    NAS-Bench-201 with device latencies): candidates are looked up, never trained

Each is split once, stratified, by a fixed seed into train/val/test; ``npz`` may carry its own split
as ``x_test``/``y_test`` and cifar10 uses its official test batch.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from compactnas.core.errors import DataError
from compactnas.core.table_source import TableSource, existing_path, read_table

_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# The fewest examples of each class a split may hold: one cannot be both trained on and measured.
MIN_PER_CLASS = 2


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # float32, N x C x H x W, normalised
    y: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    classes: tuple[str, ...]
    # Per-channel statistics of the training split applied to every split (pixels scaled to [0, 1]
    # first): what a deployed model's inputs must get too.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def image_size(self) -> int:
        return max(self.input_shape[1:])


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        # Channels-last when the last axis is small and the second is not.
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            return x.transpose(0, 3, 1, 2)
        return x
    raise DataError(
        f"{where}: 'x' must have 3 (N,H,W) or 4 (N,C,H,W / N,H,W,C) dimensions, got shape {x.shape}"
    )


def _as_float(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: 'x' must be numeric (uint8 or float), got {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{where}: 'x' holds NaN or infinite values")
    return x


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{where}: 'y' must be a 1-d array of {n} labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{where}: 'y' must hold integer class labels, got {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0")
    return y.astype(np.int64)


def _split_indices(y: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Stratified split: each class is shuffled and cut in the same proportions."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        cuts = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for p, chunk in zip(parts, np.split(idx, cuts), strict=True):
            p.extend(chunk.tolist())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def _check_classes(name: str, ys: list[np.ndarray]) -> int:
    """The number of classes, once every class has at least 2 examples in each of the three splits.

    One class cannot be learned (every model scores 1.0); a class with 0 or 1 examples in a split cannot
    be trained on, or measured, so the search would report numbers that mean nothing.
    """
    labels = np.concatenate(ys)
    present = np.unique(labels)
    if len(present) < 2:
        raise DataError(
            f"{name}: every example has label {int(present[0])}; classification needs at least 2 classes"
        )
    num_classes = int(present.max()) + 1
    for split, y in zip(("training", "validation", "test"), ys, strict=True):
        counts = np.bincount(y, minlength=num_classes)
        low = int(np.argmin(counts))
        if counts[low] < MIN_PER_CLASS:
            raise DataError(
                f"{name}: class {low} has {counts[low]} example(s) in the {split} split; every class "
                f"0..{num_classes - 1} needs at least {MIN_PER_CLASS} in each of training, validation "
                "and test (add examples of it, or remove it and number the classes without gaps)"
            )
    return num_classes


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or max(x.shape[-2:]) == size and x.shape[-2] == x.shape[-1]:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _normalise(
    train: np.ndarray, *others: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    # Statistics from the training split only, per channel.
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    return [(a - mean) / std for a in (train, *others)], mean.ravel(), std.ravel()


def _make(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    resize: int | None,
    classes: tuple[str, ...] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> Dataset:
    if len(y) < 10:
        raise DataError(f"{name}: needs at least 10 examples, got {len(y)}")
    if test is None:
        tr, va, te = _split_indices(
            y, (1 - val_fraction - test_fraction, val_fraction, test_fraction), seed
        )
        xs = [x[tr], x[va], x[te]]
        ys = [y[tr], y[va], y[te]]
    else:
        tr, va = _split_indices(y, (1 - val_fraction, val_fraction), seed)
        xs = [x[tr], x[va], test[0]]
        ys = [y[tr], y[va], test[1]]
    num_classes = _check_classes(name, ys)
    xs, mean, std = _normalise(*xs)
    splits = [
        Split(
            _resize(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), resize),
            torch.from_numpy(b),
        )
        for a, b in zip(xs, ys, strict=True)
    ]
    return Dataset(
        name=name,
        train=splits[0],
        val=splits[1],
        test=splits[2],
        num_classes=num_classes,
        classes=classes or tuple(str(i) for i in range(num_classes)),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )


def _digits(seed: int, resize: int | None) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    return _make("digits", x, d.target.astype(np.int64), seed=seed, resize=resize)


def _npz(path: str, seed: int, resize: int | None) -> Dataset:
    p = existing_path(path, "npz")
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:
        raise DataError(f"npz: cannot read {p}: {e}") from None
    with z:
        if "x" not in z or "y" not in z:
            raise DataError(
                f"npz: {p} must hold arrays 'x' and 'y' (found: {', '.join(z.files) or 'none'})"
            )
        x = _as_float(_to_nchw(z["x"], f"npz {p}"), f"npz {p}")
        y = _labels(z["y"], x.shape[0], f"npz {p}")
        test = None
        if "x_test" in z and "y_test" in z:
            xt = _as_float(_to_nchw(z["x_test"], f"npz {p} x_test"), f"npz {p}")
            test = (xt, _labels(z["y_test"], xt.shape[0], f"npz {p} y_test"))
    return _make(f"npz:{p.name}", x, y, seed=seed, resize=resize, test=test)


def _folder(path: str, seed: int, resize: int | None) -> Dataset:
    from PIL import Image

    root = existing_path(path, "folder")
    if not root.is_dir():
        raise DataError(f"folder: {root} is not a directory")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(
            f"folder: {root} needs one sub-folder per class (at least 2), found {len(class_dirs)}"
        )
    images, labels = [], []
    size = None
    for label, d in enumerate(class_dirs):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in _IMAGE_EXTS)
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
            except Exception as e:
                raise DataError(f"folder: cannot read image {f}: {e}") from None
            # Without --resize every image takes the first image's (square) size.
            size = size or resize or max(im.size)
            if im.size != (size, size):
                im = im.resize((size, size))
            arr = np.asarray(im, dtype=np.uint8)
            images.append(arr if arr.ndim == 3 else arr[:, :, None])
            labels.append(label)
    if not images:
        raise DataError(f"folder: no images ({', '.join(sorted(_IMAGE_EXTS))}) under {root}")
    chans = max(a.shape[2] for a in images)
    x = np.stack(
        [np.repeat(a, chans // a.shape[2], axis=2) if a.shape[2] != chans else a for a in images]
    )
    x = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return _make(
        f"folder:{root.name}",
        x,
        np.array(labels),
        seed=seed,
        resize=None,
        classes=tuple(d.name for d in class_dirs),
    )


def _cifar10(path: str, seed: int, resize: int | None) -> Dataset:
    root = existing_path(path, "cifar10")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)]
    missing = [n for n in [*names, "test_batch"] if not (root / n).is_file()]
    if missing:
        raise DataError(
            f"cifar10: {root} lacks {', '.join(missing)} (expected the python version of CIFAR-10)"
        )

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            with open(root / name, "rb") as f:
                d = pickle.load(f, encoding="bytes")  # noqa: S301 - the user's own local copy
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            return x.astype(np.float32) / 255.0, np.asarray(d[b"labels"], dtype=np.int64)
        except Exception as e:
            raise DataError(f"cifar10: cannot read {root / name}: {e}") from None

    parts = [read(n) for n in names]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    classes = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    return _make(
        "cifar10",
        x,
        y,
        seed=seed,
        resize=resize,
        classes=classes,
        test=read("test_batch"),
        val_fraction=0.1,
    )


def take_subset(
    data: Dataset, *, train: int | None = None, val: int | None = None, seed: int = 0
) -> Dataset:
    """The same data with at most ``train`` training and ``val`` validation examples, stratified by
    class (cheaper proxy training); the test split and the normalisation statistics are kept."""
    from dataclasses import replace

    if not isinstance(data, Dataset) or (train is None and val is None):
        return data  # a table source has no images to cut

    def cut(split: Split, n: int | None, what: str) -> Split:
        if n is None or n >= len(split):
            return split
        if n < 2:
            raise DataError(f"{what} subset must hold at least 2 examples, got {n}")
        y = split.y.numpy()
        keep, rest = _split_indices(y, (n / len(y), 1 - n / len(y)), seed)
        # Per-class rounding may miss n by a few: trim or top up at random to exactly n.
        rng = np.random.default_rng(seed)
        if len(keep) > n:
            keep = rng.choice(keep, n, replace=False)
        elif len(keep) < n:
            keep = np.concatenate([keep, rng.choice(rest, n - len(keep), replace=False)])
        keep = torch.from_numpy(np.sort(keep))
        return Split(split.x[keep], split.y[keep])

    return replace(
        data, train=cut(data.train, train, "training"), val=cut(data.val, val, "validation")
    )


DATA_SOURCES = ("digits", "npz:PATH", "folder:PATH", "cifar10:PATH", "table:PATH")


def load_data(
    source: str = "digits",
    *,
    seed: int = 0,
    resize: int | None = None,
    num_classes: int | None = None,
) -> Dataset | TableSource:
    """Load a data set by source string (see the module docstring); errors are one-line DataErrors.

    ``num_classes`` only applies to a table (its networks' classifier width; guessed from its columns).
    """
    if resize is not None and not 4 <= resize <= 512:
        raise DataError(f"resize must be between 4 and 512 pixels, got {resize}")
    kind, _, path = source.partition(":")
    if kind == "table":
        return read_table(path, resize, num_classes)
    if kind == "digits" and not path:
        return _digits(seed, resize)
    loaders = {"npz": _npz, "folder": _folder, "cifar10": _cifar10}
    if kind not in loaders:
        raise DataError(f"unknown data source '{source}' (use one of: {', '.join(DATA_SOURCES)})")
    return loaders[kind](path, seed, resize)
