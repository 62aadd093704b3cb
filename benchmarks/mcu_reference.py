"""The published microcontroller measurements (mcu_reference.json) as layer lists and fitted runtimes.

Each named network's layer-by-layer description becomes our int8 layer list (spaces/layers.py's Layer),
so peak SRAM (activations alive at once), weights and MACs are counted the way the device profiles count
them. Per (board, runtime) with latency rows, a few coefficients are fitted by non-negative least
squares on relative error: milliseconds per MAC (one effective int8 rate), per operator and per network;
SRAM = the runtime's own activation plan (hw_profiles/memory_plan.py: TF-Lite Micro's greedy arena,
CMSIS-NN's scratch on top, TinyEngine's in-place depthwise, Cube.AI's overlapping buffers) + a runtime
constant, flash = weights + a runtime constant (medians). Errors are reported leave-one-network-out: each
row is predicted by a fit that saw no row of its network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.optimize import nnls

from compactnas.hw_profiles.analysis import peak_activation_bytes, weight_bytes
from compactnas.hw_profiles.memory_plan import arena_bytes
from compactnas.spaces.layers import Layer, conv_layer

# The activation planner each runtime uses (hw_profiles/memory_plan.py).
PLANNER = {"tflm": "tflm", "cmsisnn": "cmsisnn", "cubeai": "overlap", "tinyengine": "inplace"}
# Rows documented in the reference file as another quantity than the engine's peak SRAM
# (ambiguity "mcunet-readme-sram"): reported, never used to fit a constant.
OTHER_SRAM_SOURCES = ("mit-han-lab/mcunet",)
RUNTIMES = {
    "TF-Lite Micro": "tflm",
    "CMSIS-NN": "cmsisnn",
    "STM32Cube.AI (X-CUBE-AI)": "cubeai",
    "TinyEngine": "tinyengine",
}


def board_of(row: dict[str, Any]) -> str | None:
    text = f"{row.get('mcu', '')} {row.get('board', '')}"
    for name in ("H743", "H747", "F769", "F746", "F412"):
        if name in text:
            return f"stm32{name.lower()}"
    return None


def _q(layer: Layer) -> Layer:
    from dataclasses import replace

    return replace(layer, wbits=8, abits=8)


def _ir_layers(a: dict[str, Any], classes: int) -> list[Layer]:
    c, hw = a["input_channels"], a["input_resolution"]
    fc = a["first_conv"]
    out = [conv_layer("stem", c, fc["out_channels"], fc["kernel"], fc["stride"], hw, hw)]
    for i, b in enumerate(a["blocks"]):
        p, h = f"stages.{i}.0", b["in_hw"]
        mid = b["mid_channels"] if b.get("has_expand_conv") else b["in_channels"]
        if b.get("has_expand_conv"):
            out.append(conv_layer(f"{p}.conv_pw", b["in_channels"], mid, 1, 1, h, h))
        dw = conv_layer(f"{p}.conv_dw", mid, mid, b["kernel"], b["stride"], h, h, groups=mid)
        out.append(dw)
        out.append(conv_layer(f"{p}.conv_pwl", mid, b["out_channels"], 1, 1, dw.hout, dw.wout))
        if b.get("residual"):
            n = b["out_channels"]
            out.append(Layer(name=f"{p}.add", op="add", cin=n, cout=n, hin=dw.hout, win=dw.wout, hout=dw.hout, wout=dw.wout))  # fmt: skip
    last = out[-1]
    ch, h = last.cout, last.hout
    mix = a.get("final_1x1_conv")
    if mix:
        out.append(conv_layer("head", ch, mix["out_channels"], 1, 1, h, h))
        ch = mix["out_channels"]
    out.append(Layer(name="pool", op="gap", cin=ch, cout=ch, hin=h, win=h, stage=-2))
    n = a["classifier"].get("num_classes", classes)
    out.append(Layer(name="classifier", op="linear", cin=ch, cout=n, weights=ch * n, extra_params=n, stage=-2))  # fmt: skip
    return out


def _flat_layers(a: dict[str, Any]) -> list[Layer]:
    out: list[Layer] = []
    for i, spec in enumerate(a["layers"]):
        t, name = spec["type"], f"stages.{i}.0.{spec['type']}"
        if "in_channels" in spec and t not in ("dense",):
            h = spec["in_hw"]
            layer = conv_layer(name, spec["in_channels"], spec["out_channels"], spec["kernel"], spec["stride"], h, h,
                               groups=spec.get("groups", 1), bn=False, bias=spec.get("bias", False))  # fmt: skip
            out.append(layer)
        elif t in ("max_pool", "avg_pool"):
            c = spec.get("channels") or (out[-1].cout if out else 1)
            h = spec.get("in_hw") or (out[-1].hout if out else 1)
            k = spec.get("kernel", h)
            s = spec.get("stride", k)
            ho = spec.get("out_hw") or max(1, (h - k) // s + 1)
            out.append(Layer(name=name, op="pool", cin=c, cout=c, kernel=k, stride=s, hin=h, win=h, hout=ho, wout=ho))  # fmt: skip
        elif t == "global_avg_pool" and out:
            p = out[-1]
            out.append(
                Layer(
                    name=name, op="gap", cin=p.cout, cout=p.cout, hin=p.hout, win=p.wout, stage=-2
                )
            )
        elif t == "add_relu" and out:
            p = out[-1]
            out.append(Layer(name=name, op="add", cin=p.cout, cout=p.cout, hin=p.hout, win=p.wout, hout=p.hout, wout=p.wout))  # fmt: skip
        elif t == "dense":
            cin, cout = (
                spec.get("in_features", spec.get("in_channels")),
                spec.get("out_features", spec.get("out_channels")),
            )
            out.append(Layer(name=name, op="linear", cin=cin, cout=cout, weights=cin * cout, extra_params=cout, stage=-2))  # fmt: skip
    return out


def network_layers(net: dict[str, Any]) -> list[Layer]:
    a = net["architecture"]
    layers = _ir_layers(a, 1000) if a.get("blocks") else _flat_layers(a)
    return [_q(x) for x in layers]


def features(layers: Iterable[Layer]) -> dict[str, float]:
    layers = list(layers)
    return {
        "macs": float(sum(x.macs for x in layers)),
        "layers": float(len(layers)),
        "peak_act_kb": peak_activation_bytes(tuple(layers)) / 1024,
        "weights_kb": weight_bytes(tuple(layers)) / 1024,
        **{f"arena_{p}_kb": arena_bytes(tuple(layers), p) / 1024 for p in set(PLANNER.values())},
    }


def number(row: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        v = row.get(k)
        if isinstance(v, int | float) and v > 0:
            return float(v)
    return None


def fit_latency(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ms = a * MACs + b * operators + c, non-negative, on relative error."""
    coef, _ = nnls(x / y[:, None], np.ones(len(y)))
    return coef


def loo(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions (the fit without row i predicts row i)."""
    pred = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        pred[i] = x[i] @ fit_latency(x[keep], y[keep])
    return pred


def loo_constants(values: np.ndarray, groups: list[str], fit: np.ndarray) -> np.ndarray:
    """Per row, the median of ``values`` over the rows allowed to fit (``fit``) of every other group: the
    constant a row would get from a fit that never saw its network."""
    out = np.empty(len(values))
    for i, g in enumerate(groups):
        keep = fit & np.array([h != g for h in groups])
        out[i] = np.median(values[keep]) if keep.any() else np.median(values[fit])
    return out


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
