import optuna
import pytest

from compactnas.core.errors import ArchStringError
from compactnas.spaces import create_space, format_arch, list_spaces, parse_arch
from compactnas.spaces.arch import ArchSpec, BlockSpec

VALID = [
    "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-ir_r2_k5_s2_e6_c24_se0.25-head_c128",
    "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-ir_r2_k5_s2_e6_c24_se0.25_pr0.25_wb4_ab8-fire_r1_s1_q8_c32-head_c128",
    "stem_k3_s2_c8_wb8_ab8-fire_r2_s2_q4_c16_pr0.5-head_c0_wb8",
    "stem_k5_s1_c24-ir_r1_k7_s1_e2.5_c40_wb2-head_c0",
]


@pytest.mark.parametrize("text", VALID)
def test_round_trip_exact(text):
    spec = parse_arch(text)
    assert format_arch(spec) == text
    assert parse_arch(format_arch(spec)) == spec


def test_round_trip_sampled_specs():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert list_spaces()
    for name in list_spaces():
        for compress in (False, True):
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
            space = create_space(name, compress=compress)
            for _ in range(25):
                spec = space.sample(study.ask())
                text = format_arch(spec)
                assert parse_arch(text) == spec
                assert format_arch(parse_arch(text)) == text


def test_compression_keys_parse_to_fields():
    spec = parse_arch(VALID[1])
    ir = spec.stages[1]
    assert (ir.kind, ir.repeats, ir.kernel, ir.stride, ir.expansion, ir.channels) == (
        "ir",
        2,
        5,
        2,
        6.0,
        24,
    )
    assert (ir.se, ir.prune, ir.wbits, ir.abits) == (0.25, 0.25, 4, 8)
    assert spec.stages[2] == BlockSpec(kind="fire", repeats=1, stride=1, squeeze=8, channels=32)
    assert ir.compressed and not spec.stages[0].compressed
    dense = spec.without_compression()
    assert not any(s.compressed for s in dense.stages)
    assert "pr" not in format_arch(dense) and "wb" not in format_arch(dense)


def test_default_spec_formats():
    spec = ArchSpec(stages=(BlockSpec(kind="ds", channels=16),))
    assert format_arch(spec) == "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-head_c0"


@pytest.mark.parametrize(
    "text, token",
    [
        ("stem_k3_s1_c16-xx_r1_k3_s1_e1_c16-head_c0", "'xx'"),
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6_c16_z9-head_c0", "'z9'"),
        ("stem_k3_s1_c16-ir_r1_k3_s1_c16_e6-head_c0", "'e6'"),  # out of order
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6.0_c16-head_c0", "'e6.0'"),  # non-canonical number
        (
            "stem_k3_s1_c16-ir_r1_k3_s1_e6_c16_p0.25-head_c0",
            "'p0.25'",
        ),  # timm's projection-kernel key
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6_c16_pr1.5-head_c0", "pr1.5"),
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6_c16_wb3-head_c0", "wb3"),
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6_c16_ab4-head_c0", "ab4"),
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6_c16_wb32-head_c0", "'wb32'"),  # default written out
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6_c16_c16-head_c0", "'c16'"),  # twice
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6-head_c0", "c"),  # missing key
        ("stem_k3_s1_c16-ds_r1_k3_s1_e1_c16_pr0.5-head_c0", "pr"),  # ds has nothing to prune
        ("stem_k3_s1_c16-fire_r1_s1_q4_c15-head_c0", "even"),
        ("stem_k3_s1_c16-ir_r1_k4_s1_e6_c16-head_c0", "kernel"),
        ("stem_k3_s1_c16-ir_r1_k3_s3_e6_c16-head_c0", "stride"),
        ("ir_r1_k3_s1_e6_c16-stem_k3_s1_c16-head_c0", "'ir'"),
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6_c16", "stem, at least one stage and a head"),
        ("stem_k3_s1_c16--head_c0", "empty segment"),
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6_c16-stem_k3_s1_c8", "'stem'"),
        ("", "empty"),
        (" stem_k3_s1_c16-ir_r1_k3_s1_e6_c16-head_c0", "whitespace"),
        ("stem_k3_s1_c16-ir_r1_k3_s1_e6_ck-head_c0", "'ck'"),
    ],
)
def test_malformed_strings_name_the_problem(text, token):
    with pytest.raises(ArchStringError) as info:
        parse_arch(text)
    msg = str(info.value)
    assert token in msg
    assert "\n" not in msg
