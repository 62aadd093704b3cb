"""Lottery-ticket rewinding (the grammar's ``rw`` key): parsing, the rewind itself, its place in the
compress evaluator, the search's sampling, and the export of a rewound model."""

import optuna
import pytest
import torch

import compactnas.evaluators.compression as compression
from compactnas.core.errors import ArchStringError
from compactnas.evaluators.clustering import model_codings, sparsify, spec_coding
from compactnas.evaluators.compression import CompressEvaluator, build_compressed_model
from compactnas.evaluators.rewinding import Snapshots, rewind, rewind_epoch, spec_rewind
from compactnas.evaluators.train import TrainConfig, train
from compactnas.search.export.formats import deployable, write_onnx
from compactnas.search.export.packed import load_packed, write_packed
from compactnas.search.export.runners import OnnxModel, torch_logits
from compactnas.spaces import create_model, create_space, parse_arch
from compactnas.spaces.layers import size_bytes

ARCH = "stem_k3_s1_c8-ir_r1_k3_s1_e4_c16_sp0.75_rw0.3-ir_r1_k3_s2_e4_c24_sp0.5-head_c32_sp0.5_rw0.3"


def test_rw_round_trips_and_is_refused_where_it_has_no_meaning():
    spec = parse_arch(ARCH)
    assert str(spec) == ARCH
    assert spec.stages[0].rewind == 0.3 and spec.stages[1].rewind == 0 and spec.head.rewind == 0.3
    assert spec.without_compression().stages[0].rewind == 0
    # rewinding changes how the kept weights are found, not how many: the size model sees sp alone
    assert size_bytes(spec, (1, 8, 8), 10) == size_bytes(ARCH.replace("_rw0.3", ""), (1, 8, 8), 10)
    for bad, msg in (
        ("ir_r1_k3_s2_e4_c16_rw0.1", "needs sp on the same segment"),
        ("ir_r1_k3_s2_e4_c16_pr0.5_sp0.5_rw0.1", "excludes pr on the same stage"),
        ("ir_r1_k3_s2_e4_c16_lr0.5_sp0.5_rw0.1", "excludes lr on the same stage"),
        ("ir_r1_k3_s2_e4_c16_sp0.5_rw1", "share of dense training in"),
        ("ir_r1_k3_s2_e4_c16_rw0.1_sp0.5", "keys must appear in the order"),
    ):
        with pytest.raises(ArchStringError, match=msg):
            parse_arch(f"stem_k3_s1_c8-{bad}-head_c0")


def test_the_rewind_epoch_is_within_dense_training():
    assert rewind_epoch(0.1, 10) == 1
    assert rewind_epoch(0.3, 10) == 3
    assert rewind_epoch(0.31, 10) == 4
    assert rewind_epoch(0.01, 4) == 1  # never the initialisation
    assert rewind_epoch(0.99, 3) == 3


def test_rewind_puts_the_early_weights_back_under_the_late_masks(digits):
    """The snapshot is the marked segments' state at the end of the rewind epoch; after a
    magnitude-pruning round a layer holds exactly those weights where the mask, computed from the
    trained weights, keeps them, and its batch norm is back at that epoch too."""
    spec = parse_arch(ARCH)
    torch.manual_seed(0)
    model = create_model(spec, num_classes=10, in_chans=1)
    snaps = Snapshots(model, spec_rewind(spec), 4)
    assert set(snaps.epoch_of.values()) == {2}  # ceil(0.3 x 4)
    assert all(
        n.startswith(("stages.0", "classifier", "head", "lastact")) for n in snaps.epoch_of
    ), snaps.epoch_of
    train(model, digits.train.x, digits.train.y, TrainConfig(epochs=4), on_epoch=snaps.after_epoch)
    assert not snaps.missing
    name = "stages.0.0.conv_pw"
    late = model.get_submodule(name).weight.detach().clone()
    early = snaps.state[name]["weight"]
    bn = model.get_submodule("stages.0.0.bn1")
    early_bn = snaps.state["stages.0.0.bn1"]
    assert not torch.allclose(late, early)  # two more epochs moved it
    assert not torch.equal(bn.running_mean, early_bn["running_mean"])
    sparsify(model, spec_coding(spec))
    m = model.get_submodule(name)
    want_mask = late.abs() > late.abs().flatten().kthvalue(round(0.75 * late.numel())).values
    assert torch.equal(m.weight_mask.bool(), want_mask)
    other = model.get_submodule("stages.1.0.conv_pw")
    late_other = other.weight.detach().clone()
    assert rewind(model, snaps.state) == len(snaps.epoch_of)
    assert torch.equal(m.weight.detach(), early * want_mask)
    assert torch.equal(bn.running_mean, early_bn["running_mean"])
    assert torch.equal(bn.weight.detach(), early_bn["weight"])
    # a layer without rw is left where training took it
    assert "stages.1.0.conv_pw" not in snaps.state and hasattr(other, "weight_mask")
    assert torch.equal(other.weight.detach(), late_other)


def test_the_compress_evaluator_rewinds_each_round_and_the_model_exports(
    digits, tmp_path, monkeypatch
):
    calls = []

    def counted(model, state):
        n = rewind(model, state)
        calls.append(n)
        return n

    monkeypatch.setattr(compression, "rewind", counted)
    spec = parse_arch(ARCH)
    torch.manual_seed(0)
    model = create_model(spec, num_classes=10, in_chans=1)
    result = CompressEvaluator(train_config=TrainConfig(epochs=20)).evaluate(model, spec, digits)
    plan = compression.plan_epochs(spec, 20, compression.CompressionConfig())
    assert len(calls) == len(plan.sparse) >= 2 and all(n > 0 for n in calls)
    # it trained again after each rewind (benchmarks/compression.py step 6 compares with fine-tuning)
    assert result["accuracy"] > 0.6
    for c in model_codings(model, lambda _n: 32):
        sp = spec_coding(spec)(c.name)[0]
        assert c.nonzero <= round(c.weights * (1 - sp)) + 1, c.name
    # the same stored form as sp alone: it reloads, exports and passes the fidelity tolerances
    again = build_compressed_model(spec, num_classes=10, in_chans=1)
    again.load_state_dict(model.state_dict())
    model.eval()
    x = digits.test.x[:128]
    ref = torch_logits(model, x)
    assert (torch_logits(again, x) == ref).all()
    path = tmp_path / "m.onnx"
    write_onnx(deployable(model), (1, 8, 8), path)
    assert abs(OnnxModel(path)(x) - ref).max() <= 1e-4
    packed = tmp_path / "m.cnz"
    write_packed(model, ARCH, 10, (1, 8, 8), packed)
    assert abs(torch_logits(load_packed(packed), x) - ref).max() <= 1e-4


def test_a_training_stopped_early_is_not_rewound(digits, monkeypatch):
    """Stopped by the pruner, compress prunes in one step without retraining: rewinding then would
    leave early weights untrained, so it does not happen."""
    calls = []
    monkeypatch.setattr(compression, "rewind", lambda m, s: calls.append(1) or 0)
    spec = parse_arch(ARCH)
    model = create_model(spec, num_classes=10, in_chans=1)
    stats = compression.compress(
        model, spec, digits, TrainConfig(epochs=6), report=lambda epoch, acc: epoch >= 1
    )
    assert stats["stopped_early"] == 1 and calls == []


def test_share_weights_samples_rw_only_where_it_applies():
    space = create_space("mobile", image_size=8, share_weights=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        spec = space.sample(trial)
        for st in spec.stages:
            if st.rewind:
                assert st.sparsity > 0 and st.prune == 0 and st.lowrank == 0
            seen.add(st.rewind)
        assert str(parse_arch(str(spec))) == str(spec)
    assert seen == {0.0, 0.1}
