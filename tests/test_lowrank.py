"""Low-rank factorisation (the grammar's ``lr`` key): parsing, the factorised structure, its count in
the size model, training and export."""

import numpy as np
import pytest
import torch

import compactnas
from compactnas.core.errors import ArchStringError
from compactnas.evaluators import count_parameters
from compactnas.evaluators.compression import CompressEvaluator
from compactnas.evaluators.train import TrainConfig
from compactnas.search.export.formats import build_model, deployable, write_onnx
from compactnas.search.export.packed import load_packed, write_packed
from compactnas.search.export.runners import OnnxModel, torch_logits
from compactnas.spaces import create_model, parse_arch
from compactnas.spaces.arch import rank_of
from compactnas.spaces.layers import count_params

ARCH = "stem_k3_s1_c8-ir_r2_k3_s2_e4_c32_lr0.25-ds_r1_k3_s1_e1_c48_lr0.5_wb8_ab8-head_c0"


def test_the_factorised_pair_is_the_best_rank_r_approximation():
    from compactnas.spaces.build import factorised

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 16, 1, bias=False)
    pair = factorised(conv, 0.5)
    x = torch.randn(4, 24, 3, 3)
    w = conv.weight.reshape(16, 24).double()
    s = torch.linalg.svdvals(w)
    err = (pair(x) - conv(x)).double()
    # the pair's weight is W's rank-8 truncation: its error on W is the dropped singular values
    pw = (pair[1].weight.reshape(16, 8) @ pair[0].weight.reshape(8, 24)).double()
    assert torch.linalg.matrix_norm(pw - w).item() == pytest.approx(
        s[8:].pow(2).sum().sqrt().item(), rel=1e-4
    )
    assert err.abs().max() < conv(x).abs().max()
    full = factorised(conv, 0.99)  # rank 16 of 16: exact
    assert torch.allclose(full(x), conv(x), atol=1e-5)


def test_lr_round_trips_and_is_refused_where_it_has_no_meaning():
    assert str(parse_arch(ARCH)) == ARCH
    assert parse_arch(ARCH).stages[0].lowrank == 0.25 and parse_arch(ARCH).stages[0].compressed
    for bad, msg in (
        ("ir_r1_k3_s2_e4_c16_pr0.5_lr0.5", "lr and pr both"),
        ("ir_r1_k3_s2_e4_c16_lr1", "rank fraction must be in"),
        ("fire_r1_s2_q8_c16_lr0.5", "unknown key 'lr' for fire"),
        ("ir_r1_k3_s2_e4_c16_sp0.5_lr0.5", "keys must appear in the order"),
    ):
        with pytest.raises(ArchStringError, match=msg):
            parse_arch(f"stem_k3_s1_c8-{bad}-head_c0")


def test_the_projection_is_two_convolutions_through_the_rank_and_counted_so():
    assert isinstance(
        create_model(ARCH, num_classes=10, in_chans=1).stages[0][0].conv_pwl, torch.nn.Conv2d
    )
    model = build_model(ARCH, num_classes=10, in_chans=1)  # compression applied: factorised
    proj = model.stages[0][0].conv_pwl
    hidden, out = 8 * 4, 32  # 8 input channels x expansion 4
    assert [c.out_channels for c in proj] == [rank_of(hidden, out, 0.25), out]
    assert rank_of(hidden, out, 0.25) == 8
    assert model.stages[1][0].conv_pw[0].out_channels == rank_of(32, 48, 0.5) == 16
    assert count_params(ARCH, (1, 8, 8), 10) == count_parameters(model)
    dense = ARCH.replace("_lr0.25", "").replace("_lr0.5", "")
    assert count_params(ARCH, (1, 8, 8), 10) < count_params(dense, (1, 8, 8), 10)


def test_a_low_rank_model_trains_and_exports_within_the_tolerances(digits, tmp_path):
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=10, in_chans=1)  # dense, as a search trains it first
    CompressEvaluator(train_config=TrainConfig(epochs=8)).evaluate(model, ARCH, digits)
    model.eval()
    # factorised from the trained projections' SVD, then fine-tuned: the structure build_model gives
    rebuilt = build_model(ARCH, num_classes=10, in_chans=1)
    rebuilt.load_state_dict(model.state_dict())
    x = digits.test.x[:128]
    ref = torch_logits(model, x)
    assert (ref.argmax(1) == digits.test.y[:128].numpy()).mean() > 0.5  # it learned
    path = tmp_path / "m.onnx"
    write_onnx(deployable(model), (1, 8, 8), path)
    # 8-bit activations: held to top-1 agreement in every format (README, exporting)
    assert (OnnxModel(path)(x).argmax(1) == ref.argmax(1)).mean() >= 0.98
    packed = tmp_path / "m.cnz"
    write_packed(model, ARCH, 10, (1, 8, 8), packed)
    assert (torch_logits(load_packed(packed), x).argmax(1) == ref.argmax(1)).mean() >= 0.98
    assert isinstance(compactnas.load_exported(packed), torch.nn.Module)
    assert np.isfinite(ref).all()
