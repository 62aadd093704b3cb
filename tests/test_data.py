import pickle

import numpy as np
import pytest
import torch

from compactnas.core.data import load_data
from compactnas.core.errors import DataError


def test_digits_split_is_fixed_stratified_and_disjoint(digits):
    again = load_data("digits", seed=0)
    assert torch.equal(digits.test.x, again.test.x) and torch.equal(digits.test.y, again.test.y)
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    n = len(digits.train) + len(digits.val) + len(digits.test)
    assert n == 1797
    for split in (digits.train, digits.val, digits.test):
        counts = torch.bincount(split.y, minlength=10).float()
        share = counts / counts.sum()
        assert share.min() > 0.07 and share.max() < 0.13  # each class ~10% of every split
    other = load_data("digits", seed=1)
    assert not torch.equal(other.test.y, digits.test.y)


def test_digits_resize():
    d = load_data("digits", resize=16)
    assert d.input_shape == (1, 16, 16)


@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_npz_layouts(tmp_path, layout, dtype):
    rng = np.random.default_rng(0)
    n, h = 60, 12
    x = rng.integers(
        0, 255, size=(n, h, h, 3) if layout == "nhwc" else (n, 3, h, h), dtype=np.uint8
    )
    if layout == "nhw":
        x = x[:, 0]
    x = x.astype(dtype) / (255.0 if dtype == "float32" else 1)
    y = np.arange(n) % 3
    path = tmp_path / "d.npz"
    np.savez(path, x=x.astype(dtype), y=y)
    d = load_data(f"npz:{path}")
    assert d.input_shape == ((1 if layout == "nhw" else 3), h, h)
    assert d.num_classes == 3
    assert len(d.train) + len(d.val) + len(d.test) == n


def test_npz_with_own_test_split(tmp_path):
    x = np.random.default_rng(0).random((40, 8, 8), dtype=np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(40) % 2, x_test=x[:10], y_test=np.arange(10) % 2)
    d = load_data(f"npz:{path}")
    assert len(d.test) == 10 and len(d.train) + len(d.val) == 40


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    d = load_data(f"folder:{tmp_path}", resize=8)
    assert d.input_shape == (3, 8, 8) and d.classes == ("cat", "dog")


def test_local_cifar10_copy(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        n = 20 if name == "test_batch" else 40  # enough of each class for a 10% validation split
        batch = {
            b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
            b"labels": list(range(10)) * (n // 10),
        }
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    d = load_data(f"cifar10:{tmp_path}")
    assert d.input_shape == (3, 32, 32) and len(d.test) == 20 and d.classes[0] == "airplane"


@pytest.mark.parametrize(
    "source, message",
    [
        ("npz:/no/such/file.npz", "no such file"),
        ("folder:/no/such/dir", "no such file"),
        ("cifar10:/no/such/dir", "no such file"),
        ("npz:", "needs a path"),
        ("imagenet:/x", "unknown data source"),
    ],
)
def test_bad_sources(source, message):
    with pytest.raises(DataError, match=message):
        load_data(source)


def test_malformed_npz(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, images=np.zeros((10, 8, 8)))
    with pytest.raises(DataError, match="must hold arrays 'x' and 'y'"):
        load_data(f"npz:{p}")
    np.savez(p, x=np.zeros((10, 8, 8)), y=np.zeros(9))
    with pytest.raises(DataError, match="1-d array of 10 labels"):
        load_data(f"npz:{p}")
    (tmp_path / "junk.npz").write_text("not an archive")
    with pytest.raises(DataError, match="cannot read"):
        load_data(f"npz:{tmp_path / 'junk.npz'}")


def test_incomplete_cifar_copy(tmp_path):
    with pytest.raises(DataError, match="lacks data_batch_1"):
        load_data(f"cifar10:{tmp_path}")


def test_normalisation_statistics_are_kept(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(60, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(60) % 3)
    d = load_data(f"npz:{path}")
    assert len(d.mean) == len(d.std) == 3
    mean = torch.tensor(d.mean).view(1, 3, 1, 1)
    std = torch.tensor(d.std).view(1, 3, 1, 1)
    raw = d.train.x * std + mean  # back to pixels in [0, 1]
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    assert torch.allclose(raw.mean(dim=(0, 2, 3)), mean.flatten(), atol=1e-5)
    # Every value is a uint8 level divided by 255, so the statistics undo the standardisation exactly.
    assert torch.allclose(raw * 255, (raw * 255).round(), atol=1e-3)


def _npz(tmp_path, y, name="d.npz"):
    rng = np.random.default_rng(0)
    path = tmp_path / name
    np.savez(path, x=rng.integers(0, 255, size=(len(y), 8, 8), dtype=np.uint8), y=np.asarray(y))
    return path


def test_a_single_class_is_refused(tmp_path):
    with pytest.raises(DataError, match="every example has label 3; .* at least 2 classes"):
        load_data(f"npz:{_npz(tmp_path, [3] * 40)}")


@pytest.mark.parametrize(
    "labels, message",
    [
        (
            [0, 1] * 20 + [2],
            r"class 2 has [01] example\(s\) in the (training|validation|test) split",
        ),
        ([0, 2] * 20, r"class 1 has 0 example\(s\) in the training split"),  # a gap in the labels
        ([0] * 30 + [1] * 4, r"class 1 has [01] example\(s\) in the validation split"),
    ],
    ids=["one-example", "missing-class", "too-few-for-validation"],
)
def test_a_class_with_fewer_than_two_examples_in_a_split_is_refused(tmp_path, labels, message):
    with pytest.raises(DataError, match=message):
        load_data(f"npz:{_npz(tmp_path, labels)}")


def test_own_test_split_needs_every_class(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.arange(40) % 2, x_test=x[:10], y_test=np.zeros(10, dtype=int))
    with pytest.raises(DataError, match=r"class 1 has 0 example\(s\) in the test split"):
        load_data(f"npz:{path}")


def test_single_class_data_is_a_one_line_cli_error(tmp_path, capsys):
    from compactnas.cli import main

    path = _npz(tmp_path, [0] * 40)
    rc = main(
        ["search", "--data", f"npz:{path}", "--trials", "1", "--out", str(tmp_path / "o"), "-q"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "at least 2 classes" in err, err
