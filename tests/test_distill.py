"""Distillation: the loss is Hinton et al.'s, bad teachers are one-line errors, and ``compactnas distill``
records both arms in distill.json and as MLflow runs nested under the search's run."""

import json
import math

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from compactnas.cli import main
from compactnas.evaluators.distill import TeacherLogits, distillation_loss, distillation_loss_fn
from compactnas.evaluators.teacher import FORMAT, create_teacher


def test_distillation_loss_matches_hand_computation():
    # s = [2, 1, 0], t = [1, 3, 0], y = 0, T = 2, alpha = 0.25
    e = math.e
    z_s = e**1.0 + e**0.5 + 1.0  # softmax(s / T) over [1, 0.5, 0]
    p_s = [e**1.0 / z_s, e**0.5 / z_s, 1.0 / z_s]
    z_t = e**0.5 + e**1.5 + 1.0  # softmax(t / T) over [0.5, 1.5, 0]
    p_t = [e**0.5 / z_t, e**1.5 / z_t, 1.0 / z_t]
    kl = sum(
        pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True)
    )  # KL(p_t || p_s)
    ce = -math.log(e**2 / (e**2 + e + 1.0))
    expected = 0.25 * 2.0**2 * kl + 0.75 * ce
    assert expected == pytest.approx(
        0.5345251302677628, abs=1e-12
    )  # the same numbers, worked out once

    s, t, y = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 3.0, 0.0]]), torch.tensor([0])
    got = distillation_loss(s, t, y, temperature=2.0, alpha=0.25)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # Averaged over the batch: two copies of the example give the same loss.
    got2 = distillation_loss(
        s.repeat(2, 1), t.repeat(2, 1), y.repeat(2), temperature=2.0, alpha=0.25
    )
    assert float(got2) == pytest.approx(expected, rel=1e-6)


def test_distillation_loss_limits():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    ce = nn.functional.cross_entropy(s, y)
    assert float(distillation_loss(s, t, y, temperature=3.0, alpha=0.0)) == pytest.approx(float(ce))
    assert float(distillation_loss(s, s, y, temperature=3.0, alpha=1.0)) == pytest.approx(
        0.0, abs=1e-6
    )


def test_teacher_logits_are_computed_once_per_distinct_input():
    calls = []

    class Counting(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return x.flatten(1)[:, :3]

    logits = TeacherLogits(Counting())
    x = torch.randn(4, 1, 2, 2)
    first = logits(x)
    again = logits(x[[2, 0]])
    assert calls == [4] and torch.equal(again, first[[2, 0]])
    loss = distillation_loss_fn(logits, temperature=2.0, alpha=0.5)
    out = loss(torch.randn(4, 3, requires_grad=True), torch.tensor([0, 1, 2, 0]), x)
    out.backward()
    assert calls == [4]


@pytest.fixture(scope="module")
def search_out(tmp_path_factory, digits):
    from compactnas.search import SearchConfig, run_search

    out = tmp_path_factory.mktemp("distill_search")
    run_search(
        SearchConfig(out=str(out), trials=2, epochs=1, population=2, seed=0),
        data=digits,
        quiet=True,
    )
    return out


def _teacher_ckpt(path, **over):
    ckpt = {
        "format": FORMAT,
        "model": "resnet10t",
        "num_classes": 10,
        "in_chans": 1,
        "image_size": 8,
        **over,
    }
    model = create_teacher("resnet10t", num_classes=ckpt["num_classes"], in_chans=1, image_size=8)
    ckpt["state_dict"] = model.state_dict()
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: p.write_bytes(b"definitely not a checkpoint") and p,
            "is not a PyTorch checkpoint",
        ),
        (lambda p: _teacher_ckpt(p, num_classes=5), "was trained for 5 classes; the data has 10"),
        (lambda p: _teacher_ckpt(p, model="resnet18"), "does not fit resnet18"),
        (
            lambda p: torch.save({"arch": "stem_k3_s1_c8", "state_dict": {}}, p) or p,
            "is not a teacher checkpoint",
        ),
        (lambda p: p.parent / "missing.pt", "teacher checkpoint not found"),
    ],
    ids=["garbage", "wrong-classes", "wrong-model", "not-a-teacher", "missing"],
)
def test_bad_teacher_is_a_one_line_error(search_out, tmp_path, capsys, make, message):
    path = make(tmp_path / "teacher.pt")
    rc = main(
        [
            "distill",
            str(search_out),
            "--top",
            "1",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--teacher",
            str(path),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("compactnas: error:") and message in err


def test_teacher_cli_rejects_unknown_model(tmp_path, capsys):
    assert (
        main(["teacher", "--data", "digits", "--out", str(tmp_path), "--model", "no_such_net"]) == 2
    )
    assert "unknown teacher model 'no_such_net'" in capsys.readouterr().err


@pytest.mark.slow  # a whole search: the full suite runs it
def test_distill_end_to_end(search_out, tmp_path, capsys):
    teachers = tmp_path / "teachers"
    assert main(["teacher", "--data", "digits", "--out", str(teachers), "--epochs", "1"]) == 0
    assert main(["teacher", "--data", "digits", "--out", str(teachers), "--epochs", "1"]) == 0
    assert "(cached," in capsys.readouterr().out
    (ckpt,) = teachers.glob("teacher-digits-resnet10t-*.pt")
    argv = [
        "distill",
        str(search_out),
        "--top",
        "1",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--teacher",
        str(ckpt),
        "-q",
    ]
    assert main(argv) == 0
    report = json.loads((search_out / "distill.json").read_text())
    (m,) = report["models"]
    for arm in ("distilled", "baseline"):
        assert len(m[arm]["test_accuracy"]["values"]) == 2
    assert (
        report["settings"]["temperature"] == 4.0 and report["teacher"]["params"] > 2 * m["params"]
    )
    state = torch.load(m["checkpoint"], weights_only=True)
    assert state["arch"] == m["arch"]

    summary = json.loads((search_out / "summary.json").read_text())
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    runs = [client.get_run(r) for r in report["mlflow"]["run_ids"]]
    assert len(runs) == 2
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == summary["mlflow"]["run_id"]
        assert r.data.tags["compactnas.kind"] == "distill"
        assert "test_accuracy_mean" in r.data.metrics


def test_an_interrupted_distill_keeps_its_results_and_the_earlier_checkpoint(
    search_out, tmp_path, monkeypatch
):
    import shutil

    import compactnas.search.workflows.distill as distill_module

    out = tmp_path / "copy"
    shutil.copytree(search_out, out, ignore=shutil.ignore_patterns("distill*", "mlartifacts"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pareto"]
    best = max(summary["pareto"], key=lambda r: r["accuracy"])
    earlier = out / "distilled" / f"trial_{best['trial']}.pt"
    earlier.parent.mkdir()
    earlier.write_bytes(b"an earlier distilled checkpoint")

    real, calls = distill_module.retrain, []

    def crash_on_the_second_seed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # seed 0 ran both arms; seed 1's first run dies
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(distill_module, "retrain", crash_on_the_second_seed)
    teacher = _teacher_ckpt(tmp_path / "teacher.pt")
    argv = ["distill", str(out), "--top", "1", "--seeds", "2", "--epochs", "1"]
    assert main([*argv, "--teacher", str(teacher), "-q"]) == 130

    report = json.loads((out / "distill.json").read_text())
    assert report["complete"] is False and report["teacher"]["path"] == str(teacher)
    (m,) = report["models"]
    assert m["trial"] == best["trial"] and m["seeds_done"] == 1 and m["checkpoint"] is None
    for arm in ("distilled", "baseline"):
        assert len(m[arm]["test_accuracy"]["values"]) == 1
    assert earlier.read_bytes() == b"an earlier distilled checkpoint"
    assert [p.name for p in earlier.parent.iterdir()] == [earlier.name]  # no temporary left behind
