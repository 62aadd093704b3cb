"""Runtime activation planners (hw_profiles/memory_plan.py) and the profiles that name them."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import compactnas.hw_profiles as hw
from compactnas.core.errors import ConfigError
from compactnas.hw_profiles.analysis import network_layers, peak_activation_bytes
from compactnas.hw_profiles.memory_plan import (
    PLANNERS,
    Buffer,
    arena_bytes,
    greedy_arena,
    lifetimes,
    live_peak,
)
from compactnas.spaces.arch import parse_arch

ROOT = Path(__file__).resolve().parent.parent
MCU = ROOT.parent / "shared" / "data" / "mcu" / "mcu_reference.json"
MOBILE = "stem_k3_s2_c16-ir_r1_k3_s1_e1_c16-ir_r2_k3_s2_e6_c24-ir_r2_k5_s2_e6_c40-head_c64"
FIRE = "stem_k3_s2_c16-fire_r2_s1_q8_c32-head_c0"
SE = "stem_k3_s1_c16-ir_r2_k3_s1_e4_c16_se0.25-head_c0"


def _int8_spec(arch: str):
    spec = parse_arch(arch)
    return replace(
        spec,
        stem=replace(spec.stem, wbits=8, abits=8),
        stages=tuple(replace(s, wbits=8, abits=8) for s in spec.stages),
        head=replace(spec.head, wbits=8, abits=8),
    )


def _int8(arch: str, shape=(3, 32, 32)):
    return network_layers(_int8_spec(arch), shape, 10)


def test_greedy_reuses_what_is_dead():
    # A dies before C is written: both fit at offset 0 and B sits above them.
    bufs = [Buffer(100, 0, 1), Buffer(50, 1, 2), Buffer(100, 2, 3)]
    assert greedy_arena(bufs) == 150 == live_peak(bufs)
    # Alignment rounds every buffer up.
    assert greedy_arena([Buffer(10, 0, 0)], align=16) == 16
    # Everything alive at once: nothing to share.
    assert greedy_arena([Buffer(30, 0, 2), Buffer(20, 1, 2), Buffer(10, 2, 2)]) == 60


def test_residual_input_lives_until_the_add():
    layers = _int8(MOBILE)
    bufs = lifetimes(layers)
    adds = [i for i, x in enumerate(layers) if x.op == "add"]
    assert adds, "the mobile architecture has a residual block"
    # The block input of each add is still alive at that add.
    assert all(sum(1 for b in bufs if b.first < i <= b.last) >= 2 for i in adds)


@pytest.mark.parametrize("arch", [MOBILE, FIRE, SE])
def test_planners_order(arch):
    layers = _int8(arch)
    live = arena_bytes(layers, "live")
    assert live == peak_activation_bytes(layers)
    assert live_peak(lifetimes(layers)) == pytest.approx(live)
    tflm = arena_bytes(layers, "tflm")
    assert tflm > live  # greedy placement is never better than the ideal, plus the operators' state
    assert arena_bytes(layers, "cmsisnn") >= tflm  # the same plan with kernel scratch buffers
    assert all(arena_bytes(layers, p) > 0 for p in PLANNERS)


def test_inplace_depthwise_saves_memory():
    layers = _int8(MOBILE, (3, 64, 64))
    plain = greedy_arena(lifetimes(layers))
    inplace = greedy_arena(lifetimes(layers, inplace_dw=True))
    assert inplace < plain
    assert arena_bytes(layers, "overlap") < arena_bytes(layers, "live")


def test_profile_names_its_planner():
    prof = hw.load_profile("stm32h743-tinyengine")
    assert prof.memory is not None and prof.memory.planner == "inplace"
    doc = prof.to_dict()
    assert hw.profile_from_dict(doc, label="copy").memory.planner == "inplace"
    doc["memory"]["planner"] = "lifo"
    with pytest.raises(ConfigError, match="memory.planner"):
        hw.profile_from_dict(doc, label="bad")
    del doc["memory"]["planner"]
    assert hw.profile_from_dict(doc, label="plain").memory.planner == "live"
    # The model's peak SRAM follows the planner.
    model = hw.create_latency_model(prof)
    layers = _int8(MOBILE, (3, 64, 64))
    want = arena_bytes(layers, "inplace") / 1024 + prof.memory.runtime_sram_kb
    assert model.peak_sram_kb(_int8_spec(MOBILE), (3, 64, 64), num_classes=10) == pytest.approx(
        want
    )


@pytest.mark.skipif(not MCU.is_file(), reason=f"no MCU reference file at {MCU}")
def test_tinyengine_plan_matches_published_peaks():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import mcu_reference as mr

    ref = json.loads(MCU.read_text())
    rows = [
        r
        for r in ref["measurements"]
        if r.get("runtime") == "TinyEngine"
        and "tinyengine" in r["source"]["repo"]
        and mr.board_of(r) == "stm32h743"
        and r.get("peak_sram_kB")
    ]
    assert len(rows) >= 5
    for r in rows:
        layers = tuple(mr.network_layers(ref["networks"][r["network_id"]]))
        assert arena_bytes(layers, "inplace") / 1024 == pytest.approx(r["peak_sram_kB"], rel=0.05)
