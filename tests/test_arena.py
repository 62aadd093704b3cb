"""benchmarks/arena.py on digits with tiny budgets; baselines as built; the report section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import arena  # noqa: E402
import arena_models  # noqa: E402
import arena_report  # noqa: E402

# A whole arena on digits.
pytestmark = [pytest.mark.slow]

MCU = BENCH.parent.parent / "shared" / "data" / "mcu" / "mcu_reference.json"


def test_small_input_form_keeps_resolution_longer():
    built, info = arena_models.build_baseline("lcnet_050", num_classes=10, in_chans=3)
    small, info_s = arena_models.build_baseline("lcnet_050@s1", num_classes=10, in_chans=3)
    assert info["form"] == "as built" and info_s["form"].startswith("small-input")
    x = torch.zeros(1, 3, 32, 32)
    built.eval(), small.eval()
    assert small.forward_features(x).shape[-1] == 2 * built.forward_features(x).shape[-1]
    resnet8, _ = arena_models.build_baseline("resnet8", num_classes=10, in_chans=3)
    assert sum(p.numel() for p in resnet8.parameters()) == 77946  # ~78k, MLPerf Tiny's ResNet-8


def test_mcu_block_list_becomes_an_architecture_string():
    net = {
        "architecture": {
            "first_conv": {"kernel": 3, "stride": 2, "out_channels": 16},
            "blocks": [
                {"kernel": 3, "expand_ratio": 1, "in_channels": 16, "mid_channels": 16,
                 "out_channels": 8, "stride": 1, "residual": False, "has_expand_conv": False},
                {"kernel": 5, "expand_ratio": 3, "in_channels": 8, "mid_channels": 24,
                 "out_channels": 8, "stride": 1, "residual": True, "has_expand_conv": True},
                {"kernel": 3, "expand_ratio": 5, "in_channels": 8, "mid_channels": 40,
                 "out_channels": 16, "stride": 2, "residual": False, "has_expand_conv": True},
            ],
            "final_1x1_conv": {"out_channels": 64},
        }
    }  # fmt: skip
    text, notes = arena_models.mcu_arch_string(net)
    assert text == (
        "stem_k3_s2_c16-ds_r1_k3_s1_e1_c8-ir_r1_k5_s1_e3_c8-ir_r1_k3_s2_e5_c16-head_c64"
    )
    # 8 x 5 = 40 hidden channels; timm rounds to 40 too, so only the activation differs.
    assert notes == ["ReLU where the network uses ReLU6"]


@pytest.mark.skipif(not MCU.is_file(), reason=f"{MCU} absent")
def test_published_mcu_networks_build_from_the_file():
    nets = arena_models.load_mcu(MCU)
    for name in arena_models.MCU_BASELINES:
        model, info = arena_models.build_baseline(name, num_classes=10, in_chans=3, mcu=nets)
        assert info["arch"].startswith("stem_")
        assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_arena_on_digits_writes_verdicts_and_report(tmp_path):
    out = tmp_path / "arena_digits.json"
    names = "resnet8,lcnet_050,lcnet_050@s1"
    rc = arena.main(
        ["--data", "digits", "--trials", "2", "--search-epochs", "1", "--final-epochs", "1",
         "--seeds", "2", "--subset", "200", "--rounds", "2", "--baselines", names,
         "--out", str(out), "--work", str(tmp_path / "work")]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["status"] == "complete" and doc["input_shape"] == [1, 32, 32]  # digits resized to 32
    assert set(doc["steps"]) == {"search_s", "retrain_s", "baselines_s", "measure_s"}
    assert doc["found"], "the front must hold at least one model"
    assert set(doc["baselines"]) == set(names.split(","))
    for e in [*doc["found"], *doc["baselines"].values()]:
        assert len(e["test_accuracy"]["values"]) == 2  # two seeds
        assert e["train_loss"]["mean"] > 0
        t = e["timing"]
        assert 0 < t["ort_p10_ms"] <= t["ort_median_ms"] and t["torch_median_ms"] > 0
        assert e["predicted_stm32f746"]["precision"] == "int8"
        assert isinstance(e["predicted_stm32f746"]["fits"], bool)
        assert e["params"] > 0 and e["macs"] > 0
    for b in doc["baselines"].values():
        for where in ("measured", "rpi4", "cortex_a76", "stm32f746"):
            assert isinstance(b[f"dominated_{where}"], bool)
            assert b[f"verdict_{where}"]["dominated"] == b[f"dominated_{where}"]
    lines = arena_report.render_one(doc, tmp_path, tmp_path / "REPORT.md")
    text = "\n".join(lines)
    assert (
        "found trial" in text
        and "lcnet_050@s1" in text
        and (tmp_path / "arena_digits.png").is_file()
    )
    # --resume keeps every baseline training (same data, recipe, examples) and redoes the rest.
    rc = arena.main(
        ["--data", "digits", "--trials", "2", "--search-epochs", "1", "--final-epochs", "1",
         "--seeds", "2", "--subset", "200", "--rounds", "2", "--baselines", names,
         "--out", str(out), "--work", str(tmp_path / "work2"), "--resume"]
    )  # fmt: skip
    assert rc == 0
    again = json.loads(out.read_text())
    assert again["status"] == "complete" and again["baselines_reused"] == 6
    for n, b in doc["baselines"].items():
        assert again["baselines"][n]["test_accuracy"] == b["test_accuracy"]
        assert again["baselines"][n]["timing"]["ort_median_ms"] > 0  # timed again
    assert "kept from an earlier run" in "\n".join(
        arena_report.render_one(again, tmp_path, tmp_path / "REPORT.md")
    )


def test_summary_counts_verdicts_flags_unconverged_and_says_by_how_much():
    def entry(acc, ms, rpi, loss=1.0):
        return {"test_accuracy": {"mean": acc}, "timing": {"ort_median_ms": ms},
                "predicted_rpi4": {"latency_ms": rpi}, "train_loss": {"mean": loss}}  # fmt: skip

    fast = {"trial": 1, **entry(0.60, 0.10, 1.0)}
    slow = {"trial": 2, **entry(0.80, 0.45, 4.0)}
    doc = {"num_classes": 10, "found": [fast, slow], "baselines": {
        "beaten": {**entry(0.50, 0.20, 2.0), "dominated_measured": True,
                   "verdict_measured": {"dominated": True}},
        "stuck": {**entry(0.10, 0.30, 3.0, loss=2.30), "dominated_measured": True,
                  "verdict_measured": {"dominated": True}},
        "strong": {**entry(0.85, 1.00, 9.0), "dominated_measured": False,
                   "verdict_measured": {"dominated": False, "accuracy_lead_points": 5.0,
                                        "latency_lead_ratio": None}},
    }}  # fmt: skip
    text = "\n".join(arena_report.summary_lines(doc))
    assert "ONNX Runtime on this host: 2 of 3 baselines dominated" in text
    assert "Not converged" in text and "stuck" in text.split("Not converged")[1].split("\n")[0]
    assert "strong is not dominated on measured latency: +5.0 points" in text
    assert "no found model is as accurate" in text
    # Most accurate baseline 85%: no found model reaches it.
    assert "Most accurate baseline: strong (85.0%" in text and "as accurate: 0" in text
    doc["found"].append({"trial": 3, **entry(0.86, 0.40, 4.0)})
    text = "\n".join(arena_report.summary_lines(doc))
    assert "<= 0.5x its measured and rpi4 latency: 1 (trial 3)" in text


def test_unknown_baseline_is_refused(capsys):
    assert arena.main(["--data", "digits", "--baselines", "alexnet"]) == 2
    assert "unknown baseline" in capsys.readouterr().err


def test_resume_keeps_a_search_made_before_a_new_option_existed():
    """--resume compares search settings; an option added since (at its default) changes nothing,
    any setting that differs does."""
    from compactnas.search.config import SearchConfig

    now = SearchConfig(trials=3, seed=0).to_dict()
    before = {k: v for k, v in now.items() if k != "exits"}  # written by code without the option
    assert arena.same_search(before, now)
    assert not arena.same_search(before, {**now, "exits": True})
    assert not arena.same_search({**before, "trials": 4}, now)
    assert not arena.same_search(None, now)
