"""Early exits (the grammar's ``ex`` key): parsing, the built exits, fitting them on a trained
network's frozen features, where inputs leave, and the expected and worst-case latency."""

import numpy as np
import pytest
import torch

from compactnas.core.errors import ArchStringError
from compactnas.evaluators import TrainConfig
from compactnas.evaluators.early_exit import exit_outcome, fit_exits
from compactnas.evaluators.train import train
from compactnas.hw_profiles import create_latency_model
from compactnas.hw_profiles.exits import exit_latency_ms
from compactnas.search.export.formats import write_onnx
from compactnas.search.export.runners import OnnxModel
from compactnas.spaces import create_model, parse_arch
from compactnas.spaces.exits import exit_stages, truncated

ARCH = "stem_k3_s1_c8-ir_r1_k3_s1_e4_c16_ex0.9-fire_r1_s2_q8_c32_pr0.5_ex0.95-ir_r1_k3_s2_e4_c48-head_c32"


def test_the_exit_key_round_trips_and_bad_thresholds_are_one_line():
    spec = parse_arch(ARCH)
    assert str(spec) == ARCH
    assert [b.exit for b in spec.stages] == [0.9, 0.95, 0.0]
    assert exit_stages(spec) == (0, 1)
    assert str(truncated(spec, 1)) == (
        "stem_k3_s1_c8-ir_r1_k3_s1_e4_c16-fire_r1_s2_q8_c32_pr0.5-head_c0"
    )
    for bad, msg in (
        ("ex1", "must be in \\(0, 1\\)"),
        ("ex0", "is the default"),
        ("ex1.5", "must be in \\(0, 1\\)"),
    ):
        with pytest.raises(ArchStringError, match=msg) as e:
            parse_arch(f"stem_k3_s1_c8-ir_r1_k3_s2_e4_c16_{bad}-head_c0")
        assert "\n" not in str(e.value)
    with pytest.raises(ArchStringError, match="keys must appear in the order"):
        parse_arch("stem_k3_s1_c8-ir_r1_k3_s2_e4_c16_ex0.9_wb8-head_c0")


def test_exits_leave_the_network_s_own_output_unchanged():
    torch.manual_seed(0)
    with_exits = create_model(ARCH, num_classes=10, in_chans=1).eval()
    torch.manual_seed(0)
    plain = create_model(
        ARCH.replace("_ex0.9", "").replace("_ex0.95", ""), num_classes=10, in_chans=1
    )
    plain.load_state_dict(with_exits.state_dict(), strict=False)
    x = torch.randn(4, 1, 8, 8)
    outs = with_exits.forward_exits(x)
    assert [o.shape for o in outs] == [(4, 10)] * 3
    assert torch.allclose(outs[-1], with_exits(x)) and torch.allclose(outs[-1], plain.eval()(x))


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = create_model(ARCH, num_classes=10, in_chans=1)
    train(model, digits.train.x, digits.train.y, TrainConfig(epochs=8))
    fit_exits(model, digits.train.x, digits.train.y, epochs=20)
    return model


def test_fitted_exits_answer_early_and_cost_less_than_the_whole_network(trained, digits):
    o = exit_outcome(trained, digits.test.x, digits.test.y)
    assert o.stages == (0, 1, -1)
    assert sum(o.fractions) == pytest.approx(1.0)
    assert o.fractions[0] + o.fractions[1] > 0.3  # the exits do take inputs
    assert o.accuracy >= o.final_accuracy - 0.05
    lm = create_latency_model("rpi4")
    lat = exit_latency_ms(lm, trained.spec, (1, 8, 8), o.fractions, num_classes=10)
    assert lat["expected_ms"] < lat["no_exits_ms"] < lat["worst_ms"]
    # all inputs at the output: the whole network plus every exit classifier passed on the way
    assert exit_latency_ms(lm, trained.spec, (1, 8, 8), (0, 0, 1), num_classes=10)[
        "expected_ms"
    ] == pytest.approx(lat["worst_ms"])


def test_a_higher_threshold_sends_fewer_inputs_out_early(trained, digits):
    from dataclasses import replace

    early, spec = [], trained.spec
    try:
        for t in (0.6, 0.9, 0.999):
            trained.spec = replace(
                spec, stages=tuple(replace(b, exit=t if b.exit else 0.0) for b in spec.stages)
            )
            early.append(1 - exit_outcome(trained, digits.test.x, digits.test.y).fractions[-1])
    finally:
        trained.spec = spec
    assert early[0] >= early[1] >= early[2] and early[0] > early[2]


def test_a_network_with_exits_exports_its_output_exactly(trained, digits, tmp_path):
    path = tmp_path / "m.onnx"
    write_onnx(trained.eval(), (1, 8, 8), path)
    x = digits.test.x[:64]
    with torch.no_grad():
        ref = trained(x).numpy()
    assert np.abs(OnnxModel(path)(x) - ref).max() <= 1e-4


def test_the_exit_chain_export_runs_in_onnxruntime_and_leaves_where_pytorch_does(
    trained, digits, tmp_path
):
    """onnx-exits: the chain of ONNX segments reproduces the network's output and every exit's
    logits, and answering one input at a time it stops where the PyTorch model's outcome does."""
    from compactnas.search.export.exits import ExitChain, write_exits
    from compactnas.search.export.registry import FORMATS

    assert "onnx-exits" in FORMATS
    path = tmp_path / "m.exits.zip"
    info = write_exits(trained, (1, 8, 8), path, digits.val.x[:32])
    assert info["segments"] == 3 and info["exits"] == [0, 1]
    chain = ExitChain(path)
    x = digits.test.x
    with torch.no_grad():
        assert np.abs(chain(x) - trained.eval()(x).numpy()).max() <= 1e-4
    logits, where = chain.answer(x)
    o = exit_outcome(trained, x, digits.test.y)
    fractions = [float(np.mean(where == s)) for s in (0, 1, -1)]
    assert np.allclose(fractions, o.fractions, atol=0.01)
    assert abs(float(np.mean(logits.argmax(1) == digits.test.y.numpy())) - o.accuracy) <= 0.01


def test_onnx_exits_refuses_a_network_without_exits_in_one_line(tmp_path, digits):
    from compactnas.search.export.base import ExportError
    from compactnas.search.export.exits import write_exits

    model = create_model("stem_k3_s1_c8-ir_r1_k3_s2_e4_c16-head_c0", num_classes=10, in_chans=1)
    with pytest.raises(ExportError, match="needs an architecture with early exits"):
        write_exits(model, (1, 8, 8), tmp_path / "m.zip", digits.val.x[:4])


def test_the_size_model_counts_every_exit_classifier():
    from compactnas.evaluators import count_parameters
    from compactnas.spaces.layers import count_params

    dense = ARCH.replace("_pr0.5", "")  # create_model builds the unpruned shapes
    model = create_model(dense, num_classes=10, in_chans=1)
    assert count_params(dense, (1, 8, 8), 10) == count_parameters(model)
    plain = ARCH.replace("_ex0.9", "").replace("_ex0.95", "")
    assert count_params(ARCH, (1, 8, 8), 10) - count_params(plain, (1, 8, 8), 10) == (
        16 * 10 + 10 + 32 * 10 + 10
    )


@pytest.mark.slow
def test_a_search_with_exits_scores_expected_latency(tmp_path, capsys):
    """--exits samples ex keys; each trial with exits is scored at the device's expected latency
    over where validation images left, with the worst case beside it."""
    import pandas as pd

    import compactnas
    from compactnas.cli import main

    out = tmp_path / "s"
    compactnas.run_search(
        {"trials": 3, "epochs": 1, "seed": 0, "out": str(out), "exits": True, "device": "rpi4"},
        quiet=True,
    )
    trials = pd.read_csv(out / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    with_exits = done[done["arch"].str.contains("_ex0")]
    assert len(with_exits) >= 1
    assert (with_exits["latency_ms"] <= with_exits["worst_latency_ms"] + 1e-9).all()
    assert (with_exits["exited_early"].between(0, 1)).all()
    assert main(["search", "--exits", "--trials", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exits needs" in err[0] and "--device" in err[0]
