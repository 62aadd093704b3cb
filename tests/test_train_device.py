"""Where training runs: device resolution and its errors, mixed precision on the CPU, weight averaging,
the recipes, the GPUs local workers are given. (Ray trials and their GPU fraction: test_search_loop's
Ray search, on a Ray instance that declares two logical GPUs.)"""

import pytest
import torch

from compactnas.cli import main
from compactnas.core.errors import ConfigError
from compactnas.evaluators import TrainConfig
from compactnas.evaluators import device as devmod
from compactnas.evaluators.device import resolve_precision, resolve_train_device, worker_gpus
from compactnas.evaluators.recipes import RECIPES
from compactnas.evaluators.train import _Ema, accuracy, train
from compactnas.search.config import config_from_mapping
from compactnas.spaces import create_model

NET = "stem_k3_s1_c8-ir_r1_k3_s2_e4_c16-ir_r1_k3_s1_e4_c24-head_c0"
HAS_CUDA = torch.cuda.is_available()


def test_auto_is_the_cpu_without_an_accelerator():
    if HAS_CUDA:
        assert resolve_train_device("auto").type == "cuda"
    elif not devmod._mps_available():
        assert resolve_train_device("auto") == torch.device("cpu")
    assert resolve_train_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_an_absent_gpu_is_one_line(name):
    with pytest.raises(ConfigError, match="not available here|does not exist") as e:
        resolve_train_device(name)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", ""])
def test_a_malformed_train_device_is_refused(name):
    with pytest.raises(ConfigError, match="unknown train device"):
        TrainConfig(train_device=name)
    with pytest.raises(ConfigError, match="unknown train device"):
        config_from_mapping({"train_device": name})


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")
def test_search_on_an_absent_gpu_exits_2_in_one_line(tmp_path, capsys):
    code = main(["search", "--train-device", "cuda", "--trials", "1", "--out", str(tmp_path / "s")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train device 'cuda' is not available" in err
    assert not (tmp_path / "s" / "study.db").exists()  # refused before anything ran


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert not resolve_precision("auto", cpu).enabled  # fp32 on the CPU unless asked
    amp = resolve_precision("amp", cpu)
    assert amp.enabled and amp.dtype == torch.bfloat16 and not amp.scaled
    with pytest.raises(ConfigError, match="unknown precision"):
        resolve_precision("fp8", cpu)
    with pytest.raises(ConfigError, match="unknown precision"):
        TrainConfig(precision="half")


def _fit(digits, **kw):
    torch.manual_seed(0)
    model = create_model(NET, in_chans=1)
    tc = TrainConfig(epochs=6, seed=0, **kw)
    stats = train(model, digits.train.x, digits.train.y, tc)
    return model, tc, stats


def test_bf16_autocast_on_the_cpu_trains_as_well_as_fp32(digits):
    m32, tc32, s32 = _fit(digits, precision="fp32")
    m16, tc16, s16 = _fit(digits, precision="amp")
    assert torch.isfinite(torch.tensor(s16["loss"]))
    a32 = accuracy(m32, digits.val.x, digits.val.y, tc32)
    a16 = accuracy(m16, digits.val.x, digits.val.y, tc16)
    assert a32 > 0.6 and a16 > 0.6
    assert abs(a16 - a32) < 0.06, (a16, a32)  # 270 validation images: within noise
    # The weights stay fp32 (autocast casts per operation); the model is back on its device.
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in m16.parameters())


def test_ema_averages_parameters_and_batch_norm_statistics():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = _Ema(net, decay=0.5)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(4.0)
    ema.update()  # step 1: the ramped decay is min(0.5, 2/11)
    d = 2 / 11
    ema.swap()
    assert torch.allclose(net[0].weight, d * start + (1 - d) * (start + 1))
    assert torch.allclose(net[1].running_mean, torch.full((2,), (1 - d) * 4.0))
    ema.swap()  # the live values come back
    assert torch.allclose(net[0].weight, start + 1)


def test_training_with_ema_returns_the_averaged_weights(digits):
    m0, _, _ = _fit(digits)
    m1, tc, s = _fit(digits, ema=0.99)
    # Same seed and steps: only the averaging differs, so the weights must too, and still work.
    w0, w1 = m0.state_dict(), m1.state_dict()
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if w0[k].is_floating_point())
    assert accuracy(m1, digits.val.x, digits.val.y, tc) > 0.6


def test_flip_tta_applies_to_colour_images_only():
    torch.manual_seed(0)
    model = create_model("stem_k3_s1_c8-cn_r1_k3_s2_c16-head_c0", in_chans=3).eval()
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    tta = TrainConfig(tta=True)
    with torch.no_grad():
        both = model(x) + model(x.flip(-1))
    expect = float((both.argmax(1) == y).float().mean())
    assert accuracy(model, x, y, tta) == pytest.approx(expect)
    # Single-channel 8x8 digits are never mirrored in training, so never at test time either.
    g = create_model(NET, in_chans=1).eval()
    xd = torch.randn(32, 1, 8, 8)
    yd = torch.randint(0, 10, (32,))
    assert accuracy(g, xd, yd, tta) == accuracy(g, xd, yd)


def test_a_recipe_fills_what_is_not_given():
    final = config_from_mapping({"recipe": "final"})
    for key, value in RECIPES["final"].items():
        assert getattr(final, key) == value
    mixed = config_from_mapping({"recipe": "final", "lr": 0.05, "batch_size": 32})
    assert (mixed.lr, mixed.batch_size, mixed.optimizer) == (0.05, 32, "sgd")
    assert config_from_mapping({}).optimizer == RECIPES["proxy"]["optimizer"]
    with pytest.raises(ConfigError, match="unknown recipe 'fast'"):
        config_from_mapping({"recipe": "fast"})


def test_workers_get_gpus_round_robin(monkeypatch):
    monkeypatch.setattr(devmod, "gpu_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert worker_gpus("auto", 5) == ["0", "1", "0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert worker_gpus("cuda", 3) == ["3", "5", "3"]
    assert worker_gpus("cuda:1", 2) == [
        None,
        None,
    ]  # pinned: every worker sees what this process sees
    assert worker_gpus("cpu", 2) == [None, None]
    monkeypatch.setattr(devmod, "gpu_count", lambda: 0)
    assert worker_gpus("auto", 2) == [None, None]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_training_on_cuda_matches_the_cpu(digits):
    mc, tcc, _ = _fit(digits, train_device="cpu", precision="fp32")
    mg, tcg, sg = _fit(digits, train_device="cuda", precision="amp")
    assert next(mg.parameters()).device.type == "cpu"  # back where it was
    ac = accuracy(mc, digits.val.x, digits.val.y, tcc)
    ag = accuracy(mg, digits.val.x, digits.val.y, tcg)
    assert abs(ac - ag) < 0.08, (ac, ag)


@pytest.mark.parametrize("warmup", [0.0, 0.1, 0.5])
def test_any_warmup_share_trains_on_any_number_of_steps(warmup):
    """One-cycle's warm-up phase is warmup x steps - 1 long: 0.1 of 10 steps must not divide by zero."""
    torch.manual_seed(0)
    model = create_model(NET, in_chans=1)
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))
    for epochs in (1, 2, 5):
        tc = TrainConfig(epochs=epochs, batch_size=20, warmup=warmup, augment="off")
        assert torch.isfinite(torch.tensor(train(model, x, y, tc)["loss"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["retrain", "--recipe", "fast"], "unknown recipe 'fast'"),
        (["distill", "--recipe", "fast"], "unknown recipe 'fast'"),
        (["retrain", "--train-device", "tpu"], "unknown train device 'tpu'"),
        (["distill", "--precision", "half"], "unknown precision 'half'"),
    ],
)
def test_final_training_options_are_checked_in_one_line(tmp_path, capsys, argv, message):
    code = main([argv[0], str(tmp_path), *argv[1:]])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


class _Interrupted(Exception):
    pass


def test_a_training_stopped_mid_way_resumes_from_its_checkpoint_to_the_same_weights(
    digits, tmp_path
):
    """A training killed after epoch 2 of 4 and started again with its checkpoint ends where an
    uninterrupted one does, with the whole validation curve reported."""
    x, y = digits.train.x[:400], digits.train.y[:400]
    val = (digits.val.x, digits.val.y)
    cfg = TrainConfig(epochs=4, batch_size=64, lr=0.05, optimizer="sgd", ema=0.9, seed=3)

    def run(ckpt=None, stop_at=None):
        torch.manual_seed(0)
        model = create_model(NET, num_classes=10, in_chans=1)
        curve = []

        def report(epoch, acc):
            if epoch == stop_at:
                raise _Interrupted
            curve.append((epoch, acc))
            return False

        stats = train(model, x, y, cfg, val=val, report=report, checkpoint=ckpt)
        return model, curve, stats

    whole, whole_curve, whole_stats = run()
    ckpt = tmp_path / "t.pt"
    with pytest.raises(_Interrupted):
        run(ckpt, stop_at=3)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    resumed, curve, stats = run(ckpt)
    assert [e for e, _ in curve] == [1, 2, 3, 4]
    assert curve == whole_curve
    assert stats["resumed_from"] == 2 and whole_stats["resumed_from"] == 0
    assert {**stats, "resumed_from": 0} == whole_stats
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # other settings: the file is not this training's, so it starts over (and still ends the same)
    other = TrainConfig(**{**cfg.__dict__, "epochs": 3})
    torch.manual_seed(0)
    m = create_model(NET, num_classes=10, in_chans=1)
    seen = []
    # a report that returns None goes on
    train(m, x, y, other, val=val, report=lambda e, a: seen.append(e), checkpoint=ckpt)
    assert seen == [1, 2, 3]
