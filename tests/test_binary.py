"""Binary weights (the grammar's ``wb1``): XNOR-Net's scaled signs trained straight-through, counted at
one bit per weight, composed with sparsity, stored in the packed export and exported to ONNX."""

import optuna
import pytest
import torch

from compactnas.core.errors import ArchStringError
from compactnas.evaluators.compression import CompressEvaluator
from compactnas.evaluators.quantization import fake_quantize_weight, weight_levels, weight_scale
from compactnas.evaluators.train import TrainConfig
from compactnas.search.export.formats import deployable, write_onnx
from compactnas.search.export.packed import load_packed, pack_levels, unpack_levels, write_packed
from compactnas.search.export.runners import OnnxModel, torch_logits
from compactnas.spaces import create_model, create_space, parse_arch
from compactnas.spaces.layers import arch_layers, size_bytes

SHAPE = (1, 8, 8)
BINARY = "stem_k3_s1_c16_wb8-ir_r1_k3_s1_e4_c24_wb1-ir_r1_k3_s2_e4_c32_wb1-head_c64_wb8"
SPARSE_BINARY = (
    "stem_k3_s1_c16_wb8-ir_r1_k3_s1_e4_c24_sp0.5_wb1-ir_r1_k3_s2_e4_c32_wb1-head_c64_wb8"
)


def test_wb1_round_trips_and_counts_one_bit_per_weight():
    assert str(parse_arch(BINARY)) == BINARY
    with pytest.raises(ArchStringError, match="weight bits must be one of"):
        parse_arch(BINARY.replace("wb1", "wb3"))
    layers = arch_layers(parse_arch(BINARY), SHAPE, 10)
    four = size_bytes(BINARY.replace("wb1", "wb4"), SHAPE, 10)
    binary = size_bytes(BINARY, SHAPE, 10)
    stage_weights = sum(la.weights for la in layers if la.stage >= 0)
    # 4 bits -> 1 bit per stage weight: three bits of each saved, scales and the rest unchanged
    assert four - binary == pytest.approx(stage_weights * 3 / 8, abs=2)


def test_binary_weights_are_scaled_signs_with_the_least_squared_error():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3)
    w[0, 0] = 0.0  # a pruned weight stays zero
    wb = fake_quantize_weight(w, 1)
    alpha = weight_scale(w, 1)
    nz = w.flatten(1) != 0
    assert torch.allclose(alpha, (w.flatten(1).abs() * nz).sum(1) / nz.sum(1))
    assert torch.equal(wb, torch.sign(w) * alpha[:, None, None, None])
    assert (wb[0, 0] == 0).all() and set(wb[1].abs().unique().tolist()) == {alpha[1].item()}
    err = lambda a: ((torch.sign(w) * a[:, None, None, None] - w) ** 2).sum()  # noqa: E731
    assert err(alpha) < err(alpha * 0.9) and err(alpha) < err(alpha * 1.1)
    levels, scale = weight_levels(w, 1)
    assert torch.equal(levels * scale[:, None, None, None], wb)
    # straight-through: the float weight gets the gradient the binary one does
    p = w.clone().requires_grad_()
    (fake_quantize_weight(p, 1) * torch.arange(p.numel()).reshape(p.shape)).sum().backward()
    assert torch.equal(p.grad, torch.arange(p.numel()).reshape(p.shape).float())
    # applying it again changes nothing (a reloaded binary layer computes the same weights)
    assert torch.allclose(fake_quantize_weight(wb, 1), wb)


def test_one_bit_levels_pack_to_one_bit_each():
    q = torch.tensor([1, -1, -1, 1, 1, 1, -1, 1, -1]).numpy()
    blob = pack_levels(q, 1)
    assert len(blob) == 2
    assert (unpack_levels(blob, 1, len(q)) == q).all()


@pytest.mark.parametrize("arch", [BINARY, SPARSE_BINARY], ids=["binary", "sparse-binary"])
def test_a_binary_model_trains_and_exports_at_its_counted_size(digits, tmp_path, arch):
    spec = parse_arch(arch)
    torch.manual_seed(0)
    model = create_model(spec, num_classes=10, in_chans=1)
    result = CompressEvaluator(train_config=TrainConfig(epochs=10)).evaluate(model, spec, digits)
    assert result["accuracy"] > 0.6  # it learned through binary weights
    binary = [m for m in model.modules() if getattr(m, "weight_bits", 32) == 1]
    assert binary
    for m in binary:  # every output channel holds one magnitude (zeros where pruned)
        w = fake_quantize_weight(m.weight, 1).detach().flatten(1)
        for row in w:
            assert len(row[row != 0].abs().unique()) == 1
    searched = result.get("size_bytes", size_bytes(spec, SHAPE, 10))
    path = tmp_path / "m.cnz"
    write_packed(model, arch, 10, SHAPE, path)
    assert 0.9 * searched <= path.stat().st_size <= 1.1 * searched
    model.eval()
    x = digits.test.x[:128]
    ref = torch_logits(model, x)
    assert abs(torch_logits(load_packed(path), x) - ref).max() <= 1e-4
    onnx = tmp_path / "m.onnx"
    write_onnx(deployable(model), SHAPE, onnx)
    assert abs(OnnxModel(onnx)(x) - ref).max() <= 1e-4


def test_compress_samples_binary_weights():
    space = create_space("mobile", image_size=8, compress=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {b.wbits for _ in range(30) for b in space.sample(study.ask()).stages}
    assert 1 in seen and 2 in seen


@pytest.mark.slow
def test_a_binary_rewound_trial_exports_and_passes_the_checks(trained_search, tmp_path, digits):
    """``compactnas export`` of a trial whose stages carry wb1 and sp+rw: every format's own fidelity
    check passes, and the packed file reloads the model it stores."""
    import dataclasses
    import shutil

    import compactnas

    out = tmp_path / "copy"
    shutil.copytree(trained_search, out, ignore=shutil.ignore_patterns("mlartifacts"))
    ckpt_path = out / "checkpoints" / "trial_1.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    spec = parse_arch(ckpt["arch"])
    first, *rest = spec.stages
    coded = dataclasses.replace(
        spec,
        stages=(
            dataclasses.replace(first, sparsity=0.5, rewind=0.1, prune=0.0, lowrank=0.0),
            *(dataclasses.replace(b, wbits=1) for b in rest),
        ),
    )
    arch = str(coded)
    assert "rw0.1" in arch and "wb1" in arch
    torch.manual_seed(0)
    model = create_model(coded, num_classes=10, in_chans=1)
    CompressEvaluator(train_config=TrainConfig(epochs=6)).evaluate(model, coded, digits)
    torch.save(dict(ckpt, arch=arch, state_dict=model.state_dict()), ckpt_path)
    res = compactnas.export(
        out, trial=1, formats="onnx,packed,state-dict", dest=str(tmp_path / "e"), mlflow=False
    )
    for fmt in ("onnx", "packed", "state-dict"):
        assert res.card["exports"][fmt]["checks"]["passed"], fmt
    assert res.card["exports"]["onnx"]["max_abs_diff"] <= 1e-4
    loaded = compactnas.load_exported(res.files["packed"])
    model.eval()
    x = digits.test.x[:64]
    assert abs(torch_logits(loaded, x) - torch_logits(model, x)).max() <= 1e-4
