"""Device profiles: schema, registry, roofline/table models, energy and memory, calibration."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import compactnas.hw_profiles as hw
from compactnas.core.errors import ConfigError, DataError, RegistryError
from compactnas.hw_profiles import analysis
from compactnas.hw_profiles.units import build_block, network_units
from compactnas.spaces import create_space
from compactnas.spaces.arch import ArchSpec, BlockSpec, HeadSpec, StemSpec, parse_arch
from compactnas.spaces.layers import arch_layers, block_inputs
from compactnas.spaces.sampling import sample_archs

SHAPE = (1, 8, 8)
PUBLISHED = ("rpi4", "cortex-a76", "jetson-nano", "stm32f746")


pytestmark = pytest.mark.usefixtures("profile_dir")


def _doc() -> dict[str, Any]:
    return {
        "name": "x",
        "kind": "cpu",
        "throughput": {"fp32": 1e9, "int8": 2e9},
        "bandwidth": 1e9,
        "layer_overhead_ms": 0.01,
        "efficiency": {"conv": 0.5},
        "memory": {"sram_kb": 256, "flash_kb": 1024},
        "energy": {
            "fp32": {"mac_pj": 4.0, "byte_pj": 1.0},
            "int8": {"mac_pj": 0.3, "byte_pj": 1.0},
        },
        "sources": {
            "throughput": "t",
            "bandwidth": "b",
            "layer_overhead_ms": "o",
            "efficiency": "e",
            "memory": "m",
            "energy": "j",
        },
    }


def _set(doc: dict, path: str, value: Any) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()


def test_valid_doc_loads():
    p = hw.profile_from_dict(_doc(), label="x.json")
    assert p.name == "x" and p.throughput["int8"] == 2e9 and p.memory.sram_kb == 256


@pytest.mark.parametrize(
    ("path", "value", "field", "says"),
    [
        ("throughput.int8", -1, "throughput.int8", "must be a positive number"),
        ("throughput.int8", "fast", "throughput.int8", "must be a positive number"),
        ("throughput.fp32", _DELETE, "throughput.fp32", "is missing"),
        ("throughput.int3", 1e9, "throughput.int3", "is not a known field"),
        ("kind", "fpga", "kind", "must be one of"),
        ("name", _DELETE, "name", "is missing"),
        ("bandwidth", 0, "bandwidth", "must be a positive number"),
        ("layer_overhead_ms", -0.1, "layer_overhead_ms", "non-negative"),
        ("efficiency.dwconv", 1.5, "efficiency.dwconv", "<= 1.0"),
        ("memory.sram_kb", 0, "memory.sram_kb", "must be a positive number"),
        ("memory.flash_kb", _DELETE, "memory.flash_kb", "is missing"),
        ("energy.int8.mac_pj", _DELETE, "energy.int8.mac_pj", "is missing"),
        ("energy.fp32", _DELETE, "energy.fp32", "is missing"),
        ("speed", 3, "speed", "is not a known field"),
        ("sources.bandwidth", _DELETE, "bandwidth", "has no citation"),
        ("sources.throughput", "", "sources.throughput", "non-empty citation"),
        ("model", "table", "table", "is missing"),
    ],
)
def test_schema_error_names_the_field(path, value, field, says):
    with pytest.raises(ConfigError) as err:
        hw.profile_from_dict(_set(_doc(), path, value), label="x.json")
    msg = str(err.value)
    assert msg.startswith(f"profile 'x.json': field '{field}' ") and says in msg
    assert "\n" not in msg


def test_bad_json_file(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        hw.load_profile(f)


def test_packaged_profiles_round_trip():
    assert set(PUBLISHED) <= set(hw.list_devices())
    for name in PUBLISHED:
        p = hw.load_profile(name)
        assert p.name == name and p.sources
        again = hw.profile_from_dict(json.loads(p.to_json()), label=name)
        assert again == p


def test_unknown_device_lists_known():
    with pytest.raises(RegistryError) as err:
        hw.load_profile("no-such-device")
    assert "no-such-device" in str(err.value) and "rpi4" in str(err.value)
    with pytest.raises(RegistryError):
        hw.create_latency_model("no-such-device")


def test_register_path_profile_and_user_dir(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text(json.dumps(_set(_doc(), "name", "mine")))
    hw.register_device("mine", f)
    try:
        assert hw.load_profile("mine").name == "mine"
        assert "mine" in hw.list_devices()
    finally:
        hw.unregister_device("mine")
    hw.register_device("obj", hw.profile_from_dict(_doc(), label="x"))
    try:
        assert hw.load_profile("obj").name == "x"
    finally:
        hw.unregister_device("obj")
    user = hw.user_profile_dir()
    user.mkdir(parents=True)
    (user / "userdev.json").write_text(json.dumps(_set(_doc(), "name", "userdev")))
    assert "userdev" in hw.list_devices() and hw.load_profile("userdev").name == "userdev"
    (user / "misnamed.json").write_text(json.dumps(_doc()))
    with pytest.raises(ConfigError, match="named 'x'"):
        hw.load_profile("misnamed")
    assert hw.load_profile(str(f)).name == "mine"


# ---------------------------------------------------------------- published (roofline) profiles


@pytest.mark.parametrize("space", ["mobile", "squeeze"])
@pytest.mark.parametrize("compress", [False, True])
def test_published_profiles_predict_positive_finite(space, compress):
    specs = sample_archs(create_space(space, image_size=8, compress=compress), 12, seed=7)
    assert len(specs) == 12
    for name in PUBLISHED:
        model = hw.create_latency_model(name)
        for s in specs:
            t = model.predict_ms(s, SHAPE)
            assert math.isfinite(t) and t > 0, (name, str(s))
            assert model.predict_ms(str(s), SHAPE) == t
            e = model.energy_mj(s, SHAPE)
            assert e is None or (math.isfinite(e) and e > 0)


def _quantized(spec: ArchSpec, wb: int, ab: int) -> ArchSpec:
    return replace(
        spec,
        stem=replace(spec.stem, wbits=wb, abits=ab),
        stages=tuple(replace(s, wbits=wb, abits=ab) for s in spec.stages),
        head=replace(spec.head, wbits=wb, abits=ab),
    )


def test_int8_faster_than_fp32_where_supported():
    spec = parse_arch(
        "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-ir_r2_k5_s2_e6_c32_se0.25-ir_r1_k3_s2_e4_c64-head_c128"
    )
    q8 = _quantized(spec, 8, 8)
    for name in ("rpi4", "cortex-a76", "stm32f746"):
        model = hw.create_latency_model(name)
        assert "int8" in model.profile.throughput
        assert model.predict_ms(q8, SHAPE) < model.predict_ms(spec, SHAPE), name
    # Weight-only quantization keeps fp32 arithmetic: only weight bytes shrink, never slower.
    rpi = hw.create_latency_model("rpi4")
    assert rpi.predict_ms(_quantized(spec, 4, 32), SHAPE) <= rpi.predict_ms(spec, SHAPE)


def test_precision_fallback():
    nano = hw.load_profile("jetson-nano")
    assert nano.supported("int8") == "fp16" and nano.supported("int4") == "fp16"
    rpi = hw.load_profile("rpi4")
    assert rpi.supported("int4") == "int8" and rpi.supported("fp16") == "fp32"
    layers = arch_layers(
        _quantized(parse_arch("stem_k3_s1_c8-ds_r1_k3_s1_e1_c8-head_c0"), 4, 8), SHAPE, 10
    )
    assert {analysis.layer_precision(layer) for layer in layers} == {
        "int8"
    }  # W4A8 runs int8 kernels


def test_energy_only_where_known():
    spec = parse_arch("stem_k3_s1_c16-ir_r2_k3_s2_e4_c32-head_c64")
    assert hw.create_latency_model("rpi4").energy_mj(spec, SHAPE) is None
    mcu = hw.create_latency_model("stm32f746")
    fp32, int8 = mcu.energy_mj(spec, SHAPE), mcu.energy_mj(_quantized(spec, 8, 8), SHAPE)
    assert fp32 > int8 > 0


def test_stm32_feasibility():
    mcu = hw.create_latency_model("stm32f746")
    tiny = "stem_k3_s1_c8-ds_r1_k3_s1_e1_c8-ir_r1_k3_s2_e3_c16-head_c0"
    assert mcu.fits(tiny, SHAPE) is None
    assert mcu.fits(_quantized(parse_arch(tiny), 8, 8), (3, 64, 64)) is None
    reason = mcu.fits("stem_k3_s1_c32-ir_r2_k3_s2_e6_c64-head_c256", (3, 224, 224))
    assert reason is not None and reason.startswith("peak SRAM") and "> 320 KB" in reason
    wide, small = "stem_k3_s1_c64-ds_r4_k3_s1_e1_c512-head_c1024", (1, 4, 4)
    reason = mcu.fits(wide, small)
    assert reason is not None and reason.startswith("flash") and "> 1024 KB" in reason
    # 8-bit weights take a quarter of the flash.
    assert mcu.flash_kb(_quantized(parse_arch(wide), 8, 8), small) < mcu.flash_kb(wide, small) / 3
    assert hw.create_latency_model("rpi4").fits(wide, (3, 224, 224)) is None  # no limits known


def test_peak_sram_keeps_residual_alive():
    # The ideal planner ("live"); the runtimes' own planners are tested in test_memory_plan.py.
    prof = hw.load_profile("stm32f746")
    mcu = hw.create_latency_model(replace(prof, memory=replace(prof.memory, planner="live")))
    # ds block with a skip at 16x8x8 fp32: dw input + output + the kept block input = 3 x 4 KB.
    peak = mcu.peak_sram_kb("stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-head_c0", SHAPE)
    assert peak == pytest.approx(3 * 16 * 8 * 8 * 4 / 1024 + mcu.profile.memory.runtime_sram_kb)
    no_skip = mcu.peak_sram_kb("stem_k3_s1_c16-ds_r1_k3_s1_e1_c24-head_c0", SHAPE)
    assert no_skip == pytest.approx((16 + 24) * 64 * 4 / 1024 + mcu.profile.memory.runtime_sram_kb)


def test_prediction_needs_no_measurement():
    # How fast a first prediction is (under 5 ms for a published roofline) is measured by
    # benchmarks/latency_fidelity.py (timing.roofline_predict_first_call_ms), not timed here on a
    # shared machine. What a test can check: unseen architectures are predicted, and differ.
    model = hw.create_latency_model("rpi4")
    specs = sample_archs(create_space("mobile", image_size=8), 20, seed=11)
    assert len(specs) == 20
    predictions = [model.predict_ms(s, SHAPE) for s in specs]
    assert all(math.isfinite(t) and t > 0 for t in predictions)
    assert len(set(predictions)) > 1  # the architecture matters


# ---------------------------------------------------------------- measured tables


@dataclass(frozen=True, kw_only=True)
class TinySpace:
    """Two kernels x two depths of one ds stage: 4 unit keys, two unit counts."""

    name: str = "tiny"

    def sample(self, trial: Any) -> ArchSpec:
        k = trial.suggest_categorical("k", (3, 5))
        r = trial.suggest_categorical("r", (1, 2))
        return ArchSpec(
            stem=StemSpec(channels=8),
            stages=(BlockSpec(kind="ds", repeats=r, kernel=k, channels=8),),
            head=HeadSpec(channels=0),
        )


def _tiny_table(backend: str = "torch") -> hw.DeviceProfile:
    return hw.build_table_profile(
        f"tiny-{backend}",
        space=TinySpace(),
        backend=backend,
        patience=50,
        fit_archs=4,
        rounds=1,
        samples=3,
    )


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_table_build_and_prediction_is_sum_plus_overheads(backend):
    profile = _tiny_table(backend)
    assert profile.model == "table" and profile.measurement.backend == backend
    assert set(profile.table) == {
        "stem_k3_s1_c8@1x8x8", "ds_r1_k3_s1_e1_c8@8x8x8", "ds_r1_k5_s1_e1_c8@8x8x8", "head_c0@8x8x8"
    }  # fmt: skip
    assert all(t > 0 for t in profile.table.values())
    assert len(profile.measurement.fit_archs) == 4
    # Stored and reloaded: the schema accepts what the builder writes.
    again = hw.profile_from_dict(json.loads(profile.to_json()), label="tiny.json")
    assert again.table == profile.table
    model = hw.create_latency_model(again)
    spec = TinySpace().sample(_Fixed(k=5, r=2))
    units = network_units(spec, SHAPE)
    expected = sum(profile.table[u.key] for u in units)
    expected += len(units) * profile.measurement.unit_overhead_ms + profile.network_overhead_ms
    assert model.predict_ms(spec, SHAPE) == pytest.approx(expected)


class _Fixed:
    def __init__(self, **values: Any):
        self.values = values

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.values[name]


def test_missing_entry_is_named_or_measured():
    profile = _tiny_table()
    spec = "stem_k3_s1_c8-ds_r1_k7_s1_e1_c8-head_c0"
    with pytest.raises(DataError, match=r"'ds_r1_k7_s1_e1_c8@8x8x8'"):
        hw.create_latency_model(profile).predict_ms(spec, SHAPE)
    with pytest.raises(DataError, match=r"@1x16x16"):
        hw.create_latency_model(profile).predict_ms(
            "stem_k3_s1_c8-ds_r1_k3_s1_e1_c8-head_c0", (1, 16, 16)
        )
    model = hw.create_latency_model(profile, on_missing="measure")
    assert model.predict_ms(spec, SHAPE) > 0
    assert list(model.measured) == ["ds_r1_k7_s1_e1_c8@8x8x8"]


def test_unit_modules_match_the_layer_list():
    from compactnas.evaluators.counting import count_parameters

    spec = parse_arch(
        "stem_k3_s1_c16-ir_r2_k5_s2_e6_c24_se0.25_pr0.5_wb4_ab8-fire_r1_s2_q8_c32_pr0.25-ds_r1_k3_s1_e1_c32-head_c64"
    )
    layers = arch_layers(spec, SHAPE, 10)
    seen: dict[int, int] = {}
    for c, _, _, block, i in block_inputs(spec, SHAPE):
        j = seen[i] = seen.get(i, -1) + 1
        expected = sum(
            layer.params for layer in layers if layer.name.startswith(f"stages.{i}.{j}.")
        )
        assert count_parameters(build_block(block, c)) == expected, (i, j)
    keys = [u.key for u in network_units(spec, SHAPE)]
    assert keys[1] == "ir_r1_k5_s2_e6_c24_se0.25_pr0.5@16x8x8"  # bit-widths are not in host keys


# ---------------------------------------------------------------- calibration


def test_calibration_recovers_known_coefficients():
    start = hw.load_profile("stm32f746")
    true = replace(
        start,
        efficiency={"conv": 0.35, "dwconv": 0.2, "linear": 0.25},
        throughput={"fp32": start.throughput["fp32"], "int8": 3.0e8},
        layer_overhead_ms=0.02,
        network_overhead_ms=0.05,
    )
    truth = hw.create_latency_model(true)
    specs = sample_archs(create_space("mobile", image_size=8, compress=True), 40, seed=3)
    df = pd.DataFrame(
        {"arch": [str(s) for s in specs], "ms": [truth.predict_ms(s, SHAPE) for s in specs]}
    )
    new, report = hw.calibrate(start, df, method="roofline")
    assert new.name == "stm32f746-v2" and new.version == 2 and "stm32f746" in new.calibrated_from
    assert report["mape_before"] > 10 and report["mape_after"] < 0.1
    assert new.efficiency["conv"] == pytest.approx(0.35, rel=0.01)
    assert new.efficiency["dwconv"] == pytest.approx(0.2, rel=0.01)
    assert new.throughput["int8"] == pytest.approx(3.0e8, rel=0.01)
    assert (
        new.throughput["fp32"] == start.throughput["fp32"]
    )  # the reference precision anchors the scale
    assert new.layer_overhead_ms == pytest.approx(0.02, rel=0.01)
    assert new.network_overhead_ms == pytest.approx(0.05, rel=0.05)
    hw.profile_from_dict(json.loads(new.to_json()), label="new")  # still a valid profile
    again, _ = hw.calibrate(new, df, method="roofline")
    assert again.name == "stm32f746-v3" and again.version == 3


def test_calibrate_table_overheads():
    profile = _tiny_table()
    specs = [TinySpace().sample(_Fixed(k=k, r=r)) for k in (3, 5) for r in (1, 2)]
    sums = [sum(profile.table[u.key] for u in network_units(s, SHAPE)) for s in specs]
    counts = [len(network_units(s, SHAPE)) for s in specs]
    df = pd.DataFrame(
        {
            "arch": [str(s) for s in specs],
            "ms": [t + 0.1 + 0.02 * n for t, n in zip(sums, counts, strict=True)],
        }
    )
    new, report = hw.calibrate(profile, df)
    assert new.network_overhead_ms == pytest.approx(0.1, abs=1e-6)
    assert new.measurement.unit_overhead_ms == pytest.approx(0.02, abs=1e-6)
    assert report["mape_after"] < 1e-6


def test_calibration_input_errors(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("arch,latency\nx,1\n")
    with pytest.raises(DataError, match="lack column"):
        hw.calibrate("rpi4", f)
    f.write_text("arch,ms\nstem_k3_s1_c8-ds_r1_k3_s1_e1_c8-head_c0,1\nstem_k3-bad,2\n")
    with pytest.raises(DataError, match="line 3"):
        hw.calibrate("rpi4", f)
    f.write_text(
        "arch,ms\nstem_k3_s1_c8-ds_r1_k3_s1_e1_c8-head_c0,1\nstem_k3_s1_c8-ds_r1_k5_s1_e1_c8-head_c0,-2\n"
    )
    with pytest.raises(DataError, match="positive"):
        hw.calibrate("rpi4", f)
    with pytest.raises(ConfigError, match="no measurements file"):
        hw.calibrate("rpi4", tmp_path / "missing.csv")


def test_validate_scores_helper():
    from compactnas.hw_profiles.validate import scores

    y = np.array([1.0, 2.0, 3.0, 4.0])
    s = scores(y * 1.05, y)
    assert (
        s["spearman"] == pytest.approx(1.0)
        and s["within_10pct"] == 1.0
        and s["mape"] == pytest.approx(5.0)
    )


def test_every_packaged_profile_names_a_registered_runtime():
    from compactnas.hw_profiles.registry import list_devices
    from compactnas.hw_profiles.runtimes import RUNTIMES

    for name in list_devices():
        assert hw.load_profile(name).runtime in RUNTIMES, name


def test_the_export_format_follows_the_runtime_field_not_the_description(tmp_path):
    from compactnas.core.errors import ConfigError
    from compactnas.hw_profiles.profile_io import profile_from_dict
    from compactnas.search.export.edge import format_for_device

    doc = hw.load_profile("stm32f746").to_dict()
    doc.update(
        name="words-say-tflm", description="a board running TF Lite Micro", runtime="onnxruntime"
    )
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    fmt, note = format_for_device(str(path))
    assert fmt == "onnx" and "runs ONNX Runtime" in note
    doc.pop("runtime")
    path.write_text(json.dumps(doc))
    fmt, note = format_for_device(str(path))  # no runtime named: the description is not read
    assert fmt == "onnx" and "names no runtime" in note
    with pytest.raises(ConfigError, match="unknown runtime 'coreml'"):
        profile_from_dict({**doc, "runtime": "coreml"}, label="x")
