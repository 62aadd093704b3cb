"""Augmentation, training subsets and host-latency runtimes."""

from pathlib import Path

import pytest
import torch

from compactnas.core.data import load_data, take_subset
from compactnas.core.errors import ConfigError, DataError
from compactnas.evaluators import measure_latency_ms
from compactnas.evaluators.train import TrainConfig, augment_mode, crop_flip
from compactnas.search.config import SearchConfig
from compactnas.spaces import create_model


def test_auto_augmentation_by_input_shape():
    assert augment_mode("auto", (3, 32, 32)) == "crop-flip"
    assert augment_mode("auto", (1, 8, 8)) == "shift"  # digits: no mirrored glyphs
    assert augment_mode("auto", (3, 16, 16)) == "shift"
    assert augment_mode("off", (3, 32, 32)) == "off"
    assert TrainConfig(augment=True).augment == "auto"
    assert TrainConfig(augment=False).augment == "off"
    with pytest.raises(ConfigError, match="unknown augmentation"):
        TrainConfig(augment="mixup")


def test_crop_flip_is_a_per_example_crop_of_the_padded_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) + 1
    x = x.repeat(64, 1, 1, 1)
    out = crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets, flips = set(), 0
    for i in range(len(x)):
        match = None
        for dy in range(5):
            for dx in range(5):
                win = padded[i, :, dy : dy + 6, dx : dx + 6]
                if torch.equal(out[i], win):
                    match = (dy, dx, False)
                elif torch.equal(out[i], win.flip(-1)):
                    match = (dy, dx, True)
        assert match is not None, f"example {i} is not a (flipped) crop"
        offsets.add(match[:2])
        flips += match[2]
    assert len(offsets) > 5  # offsets differ across the batch
    assert 0 < flips < len(x)


def test_take_subset_is_stratified_and_keeps_test():
    d = load_data("digits")
    s = take_subset(d, train=200, val=50, seed=1)
    assert len(s.train) == 200 and len(s.val) == 50 and len(s.test) == len(d.test)
    assert set(s.train.y.tolist()) == set(range(10))
    assert s.mean == d.mean
    assert take_subset(d).train is d.train
    with pytest.raises(DataError, match="at least 2"):
        take_subset(d, train=1)


def test_config_validates_new_settings():
    assert SearchConfig().host_runtime == "onnxruntime"
    with pytest.raises(ConfigError, match="host runtime"):
        SearchConfig(host_runtime="tvm")
    with pytest.raises(ConfigError, match="subset"):
        SearchConfig(subset=1)
    with pytest.raises(ConfigError, match="augmentation"):
        SearchConfig(augment="cutout")


def test_latency_in_both_runtimes():
    model = create_model("stem_k3_s1_c8-cn_r1_k3_s2_c16-er_r1_k3_s1_e2_c16-head_c0", in_chans=1)
    for runtime in ("onnxruntime", "torch"):
        ms = measure_latency_ms(model, (1, 8, 8), runtime=runtime, min_run_time=0.02)
        assert 0 < ms < 100
    assert model.training  # mode restored
    with pytest.raises(ConfigError, match="host runtime"):
        measure_latency_ms(model, (1, 8, 8), runtime="tvm")


def test_latency_export_happens_before_the_quiet_spell(monkeypatch):
    """A parallel search pauses its other workers while a candidate is timed: only the timing loop
    may run in that spell, not the ONNX export (often longer than the timing itself)."""
    import contextlib

    import torch

    state = {"inside": False, "exports_inside": 0, "exports": 0, "entered": 0}
    real_export = torch.onnx.export

    def export(*a, **k):
        state["exports"] += 1
        state["exports_inside"] += state["inside"]
        return real_export(*a, **k)

    @contextlib.contextmanager
    def quiet():
        state["entered"] += 1
        state["inside"] = True
        try:
            yield
        finally:
            state["inside"] = False

    monkeypatch.setattr(torch.onnx, "export", export)
    model = create_model("stem_k3_s1_c8-cn_r1_k3_s2_c16-head_c0", in_chans=1)
    ms = measure_latency_ms(model, (1, 8, 8), runtime="onnxruntime", min_run_time=0.02, quiet=quiet)
    assert ms > 0
    assert state == {"inside": False, "exports_inside": 0, "exports": 1, "entered": 1}


CIFAR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10_20k.npz"


@pytest.mark.skipif(not CIFAR.is_file(), reason=f"{CIFAR} absent")
def test_cifar_gets_crop_flip_and_a_4x4_last_map():
    from compactnas.spaces import create_space
    from compactnas.spaces.sampling import sample_archs

    d = take_subset(load_data(f"npz:{CIFAR}"), train=256, val=64)
    assert d.input_shape == (3, 32, 32) and augment_mode("auto", d.input_shape) == "crop-flip"
    for spec in sample_archs(create_space("mobile", image_size=32), 5, seed=0):
        assert spec.total_stride == 8  # 32 -> 4x4
        model = create_model(spec, num_classes=10, in_chans=3)
        assert model(d.train.x[:2]).shape == (2, 10)
