"""Contract tests over every registered search space (timm's test_models style)."""

import optuna
import pytest
import torch

from compactnas.core.errors import RegistryError
from compactnas.evaluators import count_macs as measured_macs
from compactnas.evaluators import count_parameters
from compactnas.spaces import create_model, create_space, list_spaces, parse_arch
from compactnas.spaces.layers import count_macs, count_params, size_bytes

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_required_spaces_registered():
    assert {"mobile", "squeeze", "nb201"} <= set(list_spaces())


def test_unknown_space_is_a_clear_error():
    with pytest.raises(RegistryError, match="unknown search space 'nope'.*mobile"):
        create_space("nope")


@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("image_size, in_chans", [(8, 1), (32, 3)])
def test_space_builds_and_runs(name, compress, image_size, in_chans):
    torch.manual_seed(0)
    space = create_space(name, image_size=image_size, compress=compress)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask()
        spec = space.sample(trial)
        # Pure define-by-run: the same parameters give the same architecture.
        assert space.sample(optuna.trial.FixedTrial(trial.params)) == spec
        model = create_model(spec, num_classes=7, in_chans=in_chans).eval()
        x = torch.randn(2, in_chans, image_size, image_size)
        out = model(x)
        assert out.shape == (2, 7)
        assert torch.isfinite(out).all()
        dense = spec.without_compression()
        shape = (in_chans, image_size, image_size)
        assert count_parameters(model) == count_params(dense, shape, 7)
        assert measured_macs(model, shape) == count_macs(dense, shape, 7)
        assert size_bytes(spec, shape, 7) <= size_bytes(dense, shape, 7)


def test_model_from_string_matches_spec():
    text = "stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-ir_r2_k5_s2_e6_c24_se0.25-fire_r1_s2_q8_c32-head_c64"
    a = create_model(text, num_classes=10, in_chans=1)
    b = create_model(parse_arch(text), num_classes=10, in_chans=1)
    assert count_parameters(a) == count_parameters(b) == count_params(text, (1, 8, 8), 10)
    assert a.stages[1][0].conv_dw.kernel_size == (5, 5)  # built through timm's InvertedResidual
    assert a.stages[1][0].conv_pw.out_channels == 96  # 16 * 6 expanded channels
    assert len(a.stages[1]) == 2


def test_size_counts_bit_widths():
    dense = "stem_k3_s1_c16-ir_r1_k3_s1_e6_c32-head_c0"
    quant = "stem_k3_s1_c16-ir_r1_k3_s1_e6_c32_wb4-head_c0"
    d, q = size_bytes(dense, (1, 8, 8), 10), size_bytes(quant, (1, 8, 8), 10)
    assert q < d
    # The ir stage's conv weights shrink 8x (32 -> 4 bits) and gain one 32-bit scale per output
    # channel (expansion 96, depthwise 96, projection 32); BN and classifier stay.
    ir_weights = 16 * 96 + 96 * 9 + 96 * 32
    assert d - q == pytest.approx(ir_weights * (4 - 0.5) - (96 + 96 + 32) * 4)
