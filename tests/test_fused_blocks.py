"""Plain (cn) and fused inverted-residual (er) blocks: grammar, built models, layer lists, profiles."""

import optuna
import pytest
import torch

from compactnas.core.errors import ArchStringError
from compactnas.evaluators import count_macs, count_parameters
from compactnas.hw_profiles import create_latency_model
from compactnas.hw_profiles.units import build_network, network_units
from compactnas.spaces import create_model, create_space, format_arch, parse_arch
from compactnas.spaces.layers import arch_layers, count_params
from compactnas.spaces.layers import count_macs as spec_macs

FUSED = [
    "stem_k3_s2_c16-cn_r2_k3_s1_c24-er_r2_k3_s2_e4_c32_se0.25-ir_r1_k3_s2_e6_c48-head_c64",
    "stem_k3_s1_c16-er_r1_k5_s1_e3_c16-cn_r1_k5_s2_c32_wb8_ab8-head_c0",
    "stem_k3_s1_c16-er_r2_k3_s1_e4_c16_se0.25_pr0.5_wb8-cn_r1_k3_s2_c32_wb4-head_c0",
]


@pytest.mark.parametrize("text", FUSED)
def test_round_trip_and_counts_match_built_model(text):
    spec = parse_arch(text)
    assert format_arch(spec) == text
    shape = (3, 16, 16)
    model = build_network(spec, shape, num_classes=10)  # pruned er blocks narrowed as deployed
    assert count_parameters(model) == count_params(spec, shape, 10)
    assert count_macs(model, shape) == spec_macs(spec, shape, 10)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_kinds_build_timm_blocks():
    model = create_model(FUSED[0], num_classes=10, in_chans=3)
    names = {type(m).__name__ for m in model.stages.modules()}
    assert {"ConvBnAct", "EdgeResidual", "InvertedResidual"} <= names
    layers = arch_layers(FUSED[0], (3, 32, 32), 10)
    ops = {(layer.name.rsplit(".", 1)[-1], layer.op) for layer in layers}
    assert ("conv", "conv") in ops and ("conv_exp", "conv") in ops


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("stem_k3_s1_c16-cn_r1_k3_s1_e1_c16-head_c0", "unknown key 'e'"),
        ("stem_k3_s1_c16-cn_r1_k3_s1_c16_pr0.5-head_c0", "no hidden channels"),
        ("stem_k3_s1_c16-cn_r1_k4_s1_c16-head_c0", "kernel must be"),
        ("stem_k3_s1_c16-er_r1_k3_s1_c16-head_c0", "lacks required key(s): e"),
    ],
)
def test_bad_strings_name_the_problem(text, needle):
    with pytest.raises(ArchStringError, match=None) as err:
        parse_arch(text)
    assert needle in str(err.value)


def test_profiles_predict_fused_blocks_and_units_key_them():
    rpi4 = create_latency_model("rpi4")
    mcu = create_latency_model("stm32f746")
    for text in FUSED:
        # The fused stage is costed, not skipped: taking it out makes the network faster on both.
        segments = text.split("-")
        fused = next(i for i, seg in enumerate(segments) if seg.startswith(("cn_", "er_")))
        without = "-".join(segments[:fused] + segments[fused + 1 :])
        for model in (rpi4, mcu):
            assert model.predict_ms(text, (3, 32, 32)) > model.predict_ms(without, (3, 32, 32)) > 0
    keys = [u.key for u in network_units(FUSED[0], (3, 32, 32))]
    assert any(k.startswith("cn_r1_k3_s1_c24@16x16x16") for k in keys)
    assert any(k.startswith("er_r1_k3_s2_e4_c32_se0.25@24x") for k in keys)
    # A wider plain conv costs more on the same device: the prediction follows the layer list.
    small = rpi4.predict_ms("stem_k3_s2_c16-cn_r1_k3_s1_c16-head_c0", (3, 32, 32))
    big = rpi4.predict_ms("stem_k3_s2_c16-cn_r1_k3_s1_c64-head_c0", (3, 32, 32))
    assert big > small


def test_mobile_space_searches_all_four_kinds():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = create_space("mobile", image_size=32, compress=True)
    kinds = set()
    for _ in range(40):
        spec = space.sample(study.ask())
        assert parse_arch(format_arch(spec)) == spec
        kinds |= {s.kind for s in spec.stages}
    assert kinds == {"ds", "ir", "cn", "er"}
