"""Compression: structured pruning keeps the string's promise, fake quantization has the right levels, and
a compressed search trial runs end to end and saves a checkpoint that loads into its rebuilt structure."""

import pytest
import torch
from torch import nn

from compactnas.evaluators import TrainConfig, accuracy, build_compressed_model, count_parameters
from compactnas.evaluators.compression import CompressEvaluator, CompressionConfig, plan_epochs
from compactnas.evaluators.pruning import prune_structured, prune_unstructured, sparse_size_bytes
from compactnas.evaluators.quantization import (
    QuantConv2d,
    QuantLinear,
    activation_fake_quant,
    attach_fake_quant,
    fake_quantize_weight,
    post_training_quantize,
    quantized_layers,
    spec_bits,
)
from compactnas.spaces import create_model, parse_arch
from compactnas.spaces.layers import count_params, hidden_channels

SHAPE = (1, 8, 8)

# One string per block kind that has hidden channels; {pr} is filled in per test.
STRINGS = {
    "ir": "stem_k3_s1_c16-ir_r2_k3_s1_e4_c16_pr{pr}-ds_r1_k3_s2_e1_c24-ir_r1_k5_s2_e6_c32_pr{pr}-head_c64",
    "ir_se": "stem_k3_s1_c8-ir_r2_k3_s1_e6_c16_se0.25_pr{pr}-ir_r1_k3_s2_e3_c24_se0.25_pr{pr}-head_c0",
    "fire": "stem_k3_s1_c16-fire_r2_s1_q8_c16_pr{pr}-fire_r1_s2_q12_c32_pr{pr}-fire_r1_s2_q6_c48-head_c0",
}


@pytest.mark.parametrize("pr", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("kind", sorted(STRINGS))
def test_pruning_gives_the_promised_parameter_count(kind, pr):
    spec = parse_arch(STRINGS[kind].format(pr=pr))
    torch.manual_seed(0)
    model = create_model(spec, num_classes=10, in_chans=1)
    dense = count_parameters(model)
    assert dense == count_params(spec.without_compression(), SHAPE, 10)
    prune_structured(model, spec, fraction=0.5)  # gradual: half-way first
    halfway = count_parameters(model)
    prune_structured(model, spec, fraction=1.0)
    assert count_parameters(model) == count_params(spec, SHAPE, 10)
    assert dense > halfway > count_parameters(model)
    assert model(torch.randn(2, *SHAPE)).shape == (2, 10)
    # Stage outputs are untouched: every stage still hands on the string's channels.
    x = torch.randn(2, *SHAPE)
    h = model.stem(x)
    for stage, st in zip(model.stages, spec.stages, strict=True):
        h = stage(h)
        assert h.shape[1] == st.channels


def test_pruning_removes_the_weakest_channels():
    spec = parse_arch("stem_k3_s1_c8-ir_r1_k3_s1_e4_c8_pr0.25-head_c0")
    model = create_model(spec, num_classes=10, in_chans=1)
    block = model.stages[0][0]
    dense, target = hidden_channels(spec.stages[0], 8)
    weak = list(range(0, dense, 4))[: dense - target]
    with torch.no_grad():
        block.conv_pw.weight[weak] *= 1e-3
    strong = block.conv_pw.weight.detach().clone()
    keep = [i for i in range(dense) if i not in weak]
    prune_structured(model, spec, importance="l1")
    assert torch.equal(block.conv_pw.weight.detach(), strong[keep])


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_fake_quant_has_2_pow_b_minus_1_levels_per_channel(bits):
    # Symmetric narrow range: integers -(2^(b-1)-1) .. 2^(b-1)-1, i.e. 2^b - 1 levels, zero exact.
    w = torch.stack([torch.linspace(-1, 1, 4001) * s for s in (0.5, 1.0, 3.0)])
    q = fake_quantize_weight(w, bits)
    for c in range(3):
        levels = torch.unique(q[c])
        assert len(levels) == 2**bits - 1
        assert (levels == 0).any()
        assert torch.allclose(levels, -levels.flip(0))  # symmetric
    assert fake_quantize_weight(w, 32) is w


def test_weight_fake_quant_is_per_channel_and_straight_through():
    w = torch.tensor([[0.1, -0.05, 0.02], [10.0, -5.0, 2.0]], requires_grad=True)
    q = fake_quantize_weight(w, 8)
    # Each channel keeps its own scale: the small channel is not flattened to zero by the large one.
    half_step = torch.tensor([[0.1], [10.0]]) / 127 / 2
    assert ((q - w).abs() <= half_step + 1e-7).all() and (q[0] != 0).all()
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_activation_fake_quant_has_2_pow_b_levels():
    # Affine per-tensor activations: 2^b levels (0 .. 255 at 8 bits).
    fq = activation_fake_quant(8)
    x = torch.linspace(-2, 6, 20001)
    fq(x)  # observe the range
    assert len(torch.unique(fq(x))) == 256
    assert isinstance(activation_fake_quant(32), nn.Identity)


def test_fake_quant_follows_each_stages_bits():
    spec = parse_arch(
        "stem_k3_s1_c8_wb8_ab8-ir_r1_k3_s1_e4_c8_wb2-ds_r1_k3_s2_e1_c16_wb4_ab8-ds_r1_k3_s2_e1_c16-head_c32_wb8"
    )
    model = attach_fake_quant(create_model(spec, num_classes=10, in_chans=1), spec_bits(spec))
    layers = quantized_layers(model)
    assert layers["stem.0"] == (8, 8)
    assert layers["stages.0.0.conv_pw"] == (2, 32) and layers["stages.0.0.conv_pwl"] == (2, 32)
    assert layers["stages.1.0.conv_dw"] == (4, 8)
    assert not any(n.startswith("stages.2") for n in layers)  # 32/32 layers stay plain modules
    assert layers["head.0"] == (8, 32) and layers["classifier"] == (8, 32)
    assert isinstance(model.classifier, QuantLinear) and isinstance(model.stem[0], QuantConv2d)
    assert model(torch.randn(2, *SHAPE)).shape == (2, 10)


def test_post_training_int8_stays_close_to_float():
    torch.manual_seed(0)
    spec = parse_arch("stem_k3_s1_c8-ir_r1_k3_s1_e4_c16-ds_r1_k3_s2_e1_c16-head_c32")
    model = create_model(spec, num_classes=10, in_chans=1).eval()
    x = torch.randn(64, *SHAPE)
    ref = model(x).detach()
    post_training_quantize(model, [x[:32], x[32:]])
    out = model(x).detach()
    assert len(quantized_layers(model)) == sum(
        1 for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)
    )
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_unstructured_pruning_and_sparse_size():
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(
            torch.tensor([[1.0, 0.1, 2.0, 0.2], [0.3, 3.0, 0.05, 4.0], [5.0, 0.01, 0.4, 6.0]])
        )
    model = nn.Sequential(lin)
    assert prune_unstructured(model, 0.5) == pytest.approx(0.5)
    assert int((lin.weight == 0).sum()) == 6  # the six smallest magnitudes
    # CSR: 6 nonzeros x 1 byte (8 bits) + 6 column indices x 1 byte + 4 row offsets x 1 byte; 3 biases x 4.
    assert sparse_size_bytes(model, weight_bits=8) == 6 + 6 + 4 + 12


def test_epoch_plan_shares_the_budget():
    spec = parse_arch("stem_k3_s1_c8-ir_r1_k3_s1_e4_c8_pr0.5_wb4_ab8-head_c0")
    plan = plan_epochs(spec, 15, CompressionConfig())
    assert plan.total == 15 and len(plan.prune) == 2 and plan.qat >= 1
    dense_only = plan_epochs(spec.without_compression(), 15, CompressionConfig())
    assert dense_only.total == 15 and not dense_only.prune and dense_only.qat == 0


def test_compressed_fire_candidate_end_to_end(digits):
    spec = parse_arch(
        "stem_k3_s1_c8_wb8_ab8-fire_r1_s1_q8_c16_pr0.5_wb4_ab8-fire_r1_s2_q8_c24_pr0.25_wb2-head_c0_wb8"
    )
    torch.manual_seed(0)
    model = create_model(spec, num_classes=10, in_chans=1)
    ev = CompressEvaluator(train_config=TrainConfig(epochs=3))
    m = ev.evaluate(model, spec, digits)
    assert count_parameters(model) == count_params(spec, SHAPE, 10)
    assert m["accuracy"] > 0.2
    rebuilt = build_compressed_model(str(spec), num_classes=10, in_chans=1)
    rebuilt.load_state_dict(model.state_dict())
    assert accuracy(rebuilt, digits.val.x, digits.val.y) == m["accuracy"]


def test_compressed_search_end_to_end(tmp_path, digits):
    from compactnas.search import SearchConfig, run_search

    cfg = SearchConfig(out=str(tmp_path), compress=True, trials=3, epochs=2, population=4, seed=0)
    result = run_search(cfg, data=digits, quiet=True)
    s = result.summary
    assert s["n_complete"] >= 2
    assert s["pareto"] and all(
        any(k in r["arch"] for k in ("_pr", "_wb", "_ab")) for r in s["pareto"]
    )
    for r in s["pareto"]:
        spec = parse_arch(r["arch"])
        assert r["params"] == count_params(spec, SHAPE, 10)
        ckpt = torch.load(tmp_path / "checkpoints" / f"trial_{r['trial']}.pt", weights_only=True)
        assert ckpt["compressed"]
        model = build_compressed_model(ckpt["arch"], num_classes=ckpt["num_classes"], in_chans=1)
        model.load_state_dict(ckpt["state_dict"])
        assert accuracy(model, digits.val.x, digits.val.y) == pytest.approx(r["accuracy"])


def test_stopped_candidate_is_still_measured_compressed(digits):
    # A report that stops dense training early skips fine-tuning, but the model is still pruned and
    # quantized, so the accuracy recorded is the compressed model's.
    spec = parse_arch(
        "stem_k3_s1_c8-ir_r1_k3_s1_e4_c8_pr0.5_wb4_ab8-ds_r1_k3_s2_e1_c16_wb8-head_c0"
    )
    model = create_model(spec, num_classes=10, in_chans=1)
    ev = CompressEvaluator(train_config=TrainConfig(epochs=6))
    m = ev.evaluate(model, spec, digits, report=lambda step, value: True)
    assert m["stopped_early"] == 1.0 and m["epochs"] == 1.0
    assert count_parameters(model) == count_params(spec, SHAPE, 10)
    assert quantized_layers(model)["stages.0.0.conv_pw"] == (4, 8)
