"""The runtime contract: a compressed search for a device offers only the bit-widths its runtime
executes, counts the size of the file that runtime loads, and every model it offers exports to that
runtime's format (hw_profiles/runtimes.py, spaces/storage.py)."""

from __future__ import annotations

import optuna
import pytest

from compactnas.core.errors import ConfigError
from compactnas.hw_profiles.registry import device_runtime, list_devices
from compactnas.hw_profiles.runtimes import RUNTIMES
from compactnas.search.config import SearchConfig
from compactnas.search.export.base import ExportError
from compactnas.search.export.checkpoint import check_formats
from compactnas.search.loop import runtime_precisions
from compactnas.search.metrics import searched_size_bytes
from compactnas.spaces import create_space
from compactnas.spaces.layers import size_bytes
from compactnas.spaces.storage import file_bytes, payload_bytes, precision_pairs

SHAPE = (1, 8, 8)


def _sample(space, n: int, seed: int = 0) -> list:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask()) for _ in range(n)]


@pytest.mark.parametrize("space_name", ["mobile", "squeeze"])
def test_a_float_or_int8_runtime_gets_one_precision_for_the_whole_network(space_name):
    cfg = SearchConfig(space=space_name, compress=True, device="rpi4")
    space = create_space(space_name, image_size=8, compress=True, **runtime_precisions(cfg))
    specs = _sample(space, 40)
    pairs = [precision_pairs(s) for s in specs]
    assert all(p in ({(8, 8)}, {(32, 32)}) for p in pairs), pairs
    assert {(8, 8)} in pairs and {(32, 32)} in pairs  # both are searched
    assert len({s.stages[0].prune for s in specs if s.stages[0].kind != "ds"}) > 1  # pruning stays


def test_a_microcontroller_runtime_gets_int8_only():
    cfg = SearchConfig(space="mobile", compress=True, device="stm32f746-tflm")
    assert runtime_precisions(cfg) == {"precisions": ((8, 8),)}
    space = create_space("mobile", image_size=8, compress=True, **runtime_precisions(cfg))
    assert all(precision_pairs(s) == {(8, 8)} for s in _sample(space, 20))


def test_without_a_restricting_runtime_bits_stay_per_stage():
    for cfg in (
        SearchConfig(space="mobile", compress=True),  # no device: host timing
        SearchConfig(space="mobile", compress=True, device="jetson-nano"),  # TensorRT from ONNX
        SearchConfig(space="mobile", compress=False, device="rpi4"),  # nothing compressed
    ):
        assert runtime_precisions(cfg) == {}
    space = create_space("mobile", image_size=8, compress=True)
    narrow = [s for s in _sample(space, 40) if any(w < 8 for w, _ in precision_pairs(s))]
    assert (
        narrow
    )  # 2- and 4-bit weights are offered where the file keeps the model's own quantization


def test_weight_sharing_for_a_dense_weight_runtime_is_refused_in_one_line():
    cfg = SearchConfig(space="mobile", share_weights=True, device="rpi4")
    with pytest.raises(ConfigError, match="store dense weights") as e:
        runtime_precisions(cfg)
    assert "\n" not in str(e.value)


def test_every_model_offered_for_a_device_passes_its_formats_check():
    """What blocks an int8 export is a bit-width under 8: no runtime that loads int8 files is offered
    one, while the same space without a device offers models the int8 formats refuse."""
    for device in list_devices():
        runtime = device_runtime(device)
        if runtime is None or runtime.precisions is None:
            continue
        cfg = SearchConfig(space="mobile", compress=True, device=device)
        space = create_space("mobile", image_size=8, compress=True, **runtime_precisions(cfg))
        for spec in _sample(space, 12, seed=1):
            fmt = runtime.format_for(precision_pairs(spec))
            int8_formats = [f for f in (fmt, runtime.int8_format) if f and f.endswith("int8")]
            check_formats(str(spec), int8_formats)  # raises if a key blocks it
    free = create_space("mobile", image_size=8, compress=True)
    blocked = next(s for s in _sample(free, 40) if any(w < 8 for w, _ in precision_pairs(s)))
    for fmt in ("tflite-int8", "executorch-int8", "onnx-int8"):
        with pytest.raises(ExportError, match="cannot represent"):
            check_formats(str(blocked), [fmt])


def test_runtimes_name_formats_that_exist():
    from compactnas.search.export.registry import FORMATS

    for r in RUNTIMES.values():
        assert r.export_format in FORMATS and (r.int8_format is None or r.int8_format in FORMATS)
        for w, a in r.precisions or ():
            assert w in (8, 32) and a in (8, 32)


def test_the_searched_size_is_the_device_file_estimate():
    int8 = "stem_k3_s1_c16_wb8_ab8-ir_r1_k3_s1_e4_c16_wb8_ab8-ds_r1_k3_s2_e1_c24_wb8_ab8-head_c64_wb8_ab8"
    fp32 = "stem_k3_s1_c16-ir_r1_k3_s1_e4_c16-ds_r1_k3_s2_e1_c24-head_c64"
    assert searched_size_bytes(int8, SHAPE, 10, "rpi4") == file_bytes(
        int8, SHAPE, 10, "tflite-int8"
    )
    assert searched_size_bytes(fp32, SHAPE, 10, "rpi4") == file_bytes(fp32, SHAPE, 10, "tflite")
    assert searched_size_bytes(int8, SHAPE, 10, None) == size_bytes(int8, SHAPE, 10)
    # a runtime whose file layout is not modelled (ExecuTorch, ONNX) counts the weights
    assert searched_size_bytes(int8, SHAPE, 10, "jetson-nano") == size_bytes(int8, SHAPE, 10)
    # an int8 file stores a byte per weight plus quantization parameters (24 bytes per output channel):
    # more than the bare weights, less than the float file
    assert payload_bytes(int8, SHAPE, 10, True) < file_bytes(int8, SHAPE, 10, "tflite-int8")
    assert file_bytes(int8, SHAPE, 10, "tflite-int8") < file_bytes(fp32, SHAPE, 10, "tflite")
