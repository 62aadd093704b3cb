"""Quantization-aware fine-tuning with fake quantization, and post-training int8 as the cheaper option.

Every convolution and linear layer is swapped for a Quant* subclass that fake-quantizes

- its weight per output channel, symmetric, at the layer's weight bits (2, 4 or 8; 32 = left in float):
  integer levels ``-(2^(b-1) - 1) .. 2^(b-1) - 1``, i.e. **2^b - 1 levels** (narrow range, zero exact),
  with ``torch.fake_quantize_per_channel_affine``, whose gradient is the clipped straight-through
  estimator; 2 bits are ternary weights (-1, 0, +1 times the channel's scale). At 1 bit the weights
  are binary, XNOR-Net's scaled signs: ``a_c sign(w)`` with ``a_c`` the mean magnitude of the channel's
  weights (the scale that minimises the squared error), trained through BinaryConnect's
  straight-through estimator (the gradient passes to the float weight unchanged). A weight that
  pruning zeroed stays zero (``sign(0) = 0``), so sparsity and binary weights compose;
- its input per tensor, affine, at the layer's activation bits (8; 32 = left in float), with
  ``torch.ao.quantization.FakeQuantize`` and a moving-average min/max observer: 2^b levels.

A layer's bits come from the stage it belongs to; the stem and the head/classifier follow their own
``wb``/``ab``. Batch norm is not folded first: with per-channel symmetric weight scales, folding a batch
norm multiplies each output channel by a constant, which scales that channel's grid with it, so the
folded weights quantize to exactly the folded quantized weights. Fake quantization simulates the
integer arithmetic; it does not make a CPU any faster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.ao.quantization import (
    FakeQuantize,
    MovingAverageMinMaxObserver,
    disable_fake_quant,
    disable_observer,
    enable_fake_quant,
    enable_observer,
)

from compactnas.spaces.arch import ArchSpec

# Clipping fractions of max|w| tried per channel at low bit-widths; at 2 bits the max-based grid puts
# almost every weight on zero, a tighter clip keeps the distribution's bulk on non-zero levels.
_CLIP_GRID = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


def weight_qrange(bits: int) -> tuple[int, int]:
    """Integer range of symmetric narrow-range weights: 2^bits - 1 levels around an exact zero; at
    1 bit the binary levels -1 and +1 (no zero level: a pruned weight's zero is coded apart)."""
    if bits == 1:
        return -1, 1
    if not 2 <= bits <= 16:
        raise ValueError(f"weight bits must be in 1..16, got {bits}")
    q = 2 ** (bits - 1) - 1
    return -q, q


@torch.no_grad()
def weight_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel scale: max|w| / qmax at 8 bits and more, the MSE-best clip below, the mean
    magnitude of the non-zero weights at 1 bit."""
    if bits == 1:
        mag = weight.detach().flatten(1).abs()
        return (mag.sum(dim=1) / (mag > 0).sum(dim=1).clamp_min(1)).clamp_min(1e-8)
    _, qmax = weight_qrange(bits)
    w = weight.detach().flatten(1)
    amax = w.abs().amax(dim=1).clamp_min(1e-8)
    if bits >= 8:
        return amax / qmax
    best_scale, best_err = amax / qmax, None
    for frac in _CLIP_GRID:
        scale = amax * frac / qmax
        q = (w / scale[:, None]).round().clamp(-qmax, qmax) * scale[:, None]
        err = (q - w).pow(2).sum(dim=1)
        if best_err is None:
            best_err = err
        else:
            better = err < best_err
            best_scale = torch.where(better, scale, best_scale)
            best_err = torch.where(better, err, best_err)
    return best_scale


@torch.no_grad()
def weight_levels(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What a ``bits``-bit layer stores: integer levels (weight's shape) and per-channel scales, with
    ``levels x scale`` the weight ``fake_quantize_weight`` computes."""
    scale = weight_scale(weight, bits).float()
    flat = weight.detach().flatten(1)
    if bits == 1:
        q = torch.sign(flat)
    else:
        qmin, qmax = weight_qrange(bits)
        q = (flat / scale[:, None]).round().clamp(qmin, qmax)
    return q.reshape(weight.shape), scale


class _Binary(torch.autograd.Function):
    """Forward the binary weight exactly (sign x the channel's scale); backward the identity's
    gradient (BinaryConnect's straight-through estimator)."""

    @staticmethod
    def forward(ctx: object, weight: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        scale = weight_scale(weight, 1).to(weight.dtype)
        return torch.sign(weight) * scale.reshape(-1, *([1] * (weight.dim() - 1)))

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return grad


def fake_quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-channel (axis 0) symmetric fake quantization; identity at 32 bits."""
    if bits >= 32:
        return weight
    if bits == 1:
        return _Binary.apply(weight)
    qmin, qmax = weight_qrange(bits)
    scale = weight_scale(weight, bits).float()
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, qmin, qmax)


def activation_fake_quant(bits: int) -> nn.Module:
    """Per-tensor affine fake quantization of activations (2^bits levels); identity at 32 bits."""
    if bits >= 32:
        return nn.Identity()
    return FakeQuantize(
        observer=MovingAverageMinMaxObserver,
        quant_min=0,
        quant_max=2**bits - 1,
        dtype=torch.quint8,
        qscheme=torch.per_tensor_affine,
    )


class QuantConv2d(nn.Conv2d):
    """A Conv2d that fake-quantizes its input and weight; the float weight stays the stored parameter."""

    weight_bits: int = 32
    act_bits: int = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x)
        return self._conv_forward(x, fake_quantize_weight(self.weight, self.weight_bits), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, wb={self.weight_bits}, ab={self.act_bits}"


class QuantLinear(nn.Linear):
    weight_bits: int = 32
    act_bits: int = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x)
        return nn.functional.linear(
            x, fake_quantize_weight(self.weight, self.weight_bits), self.bias
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, wb={self.weight_bits}, ab={self.act_bits}"


def _swap(module: nn.Module, wbits: int, abits: int) -> nn.Module:
    # Built on the meta device and handed the original parameters: nothing is copied or re-initialised.
    if isinstance(module, nn.Conv2d):
        q: nn.Module = QuantConv2d(
            module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
            module.dilation, module.groups, module.bias is not None, module.padding_mode, device="meta",
        )  # fmt: skip
    else:
        q = QuantLinear(
            module.in_features, module.out_features, module.bias is not None, device="meta"
        )
    q.weight = module.weight
    q.bias = module.bias
    q.weight_bits, q.act_bits = wbits, abits
    q.input_quant = activation_fake_quant(abits)
    q.train(module.training)
    return q


def spec_bits(spec: ArchSpec) -> Callable[[str], tuple[int, int]]:
    """Module name -> (weight bits, activation bits): stages.i.* take stage i's, stem and head their own."""

    def bits(name: str) -> tuple[int, int]:
        top, _, rest = name.partition(".")
        if top == "stem":
            return spec.stem.wbits, spec.stem.abits
        if top == "stages":
            st = spec.stages[int(rest.partition(".")[0])]
            return st.wbits, st.abits
        return spec.head.wbits, spec.head.abits

    return bits


def attach_fake_quant(model: nn.Module, bits: Callable[[str], tuple[int, int]]) -> nn.Module:
    """Swap every Conv2d/Linear (in place) for its fake-quantizing form at ``bits(name)``.

    Layers left at 32/32 bits are not swapped, so an unquantized network keeps its plain modules and
    state-dict keys. Returns ``model``.
    """
    targets = [
        (name, m)
        for name, m in model.named_modules()
        if type(m) in (nn.Conv2d, nn.Linear) and bits(name) != (32, 32)
    ]
    for name, m in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _swap(m, *bits(name)))
    return model


class StaticActQuant(nn.Module):
    """A frozen activation quantizer written with elementary operators: round(x / s) + z clamped to the
    integer range, back to float. It computes what the trained ``FakeQuantize`` computes (both
    round half to even) without its observer flags, whose data-dependent branches stop graph capture
    (LiteRT, ExecuTorch), and without ONNX QuantizeLinear/DequantizeLinear pairs, which onnxruntime
    fuses into int8 kernels that re-quantize the weights too."""

    def __init__(self, scale: float, zero_point: int, quant_min: int, quant_max: int) -> None:
        super().__init__()
        self.scale, self.zero_point = scale, zero_point
        self.quant_min, self.quant_max = quant_min, quant_max
        # As PyTorch's kernel: multiply by the float32 reciprocal, not divide (they round differently).
        one, sc = torch.tensor(1.0), torch.tensor(scale, dtype=torch.float32)
        self.inv_scale = float(one / sc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.round(x * self.inv_scale) + self.zero_point
        return (torch.clamp(q, self.quant_min, self.quant_max) - self.zero_point) * self.scale


def freeze_activation_quant(model: nn.Module) -> nn.Module:
    """Replace (in place) every activation ``FakeQuantize`` by its ``StaticActQuant``; returns ``model``."""
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, FakeQuantize)]
    for name, fq in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        frozen = StaticActQuant(
            float(fq.scale), int(fq.zero_point), int(fq.quant_min), int(fq.quant_max)
        )
        setattr(parent, child, frozen)
    return model


def quantized_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {
        n: (m.weight_bits, m.act_bits)
        for n, m in model.named_modules()
        if isinstance(m, QuantConv2d | QuantLinear)
    }


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Set activation ranges from data with quantization off (post-training calibration)."""
    was_training = model.training
    model.eval()
    model.apply(disable_fake_quant)
    model.apply(enable_observer)
    for xb in batches:
        model(xb)
    model.apply(enable_fake_quant)
    model.train(was_training)


def freeze_observers(model: nn.Module) -> None:
    """Fix the activation ranges: evaluating must not move them (nor the test split leak into them)."""
    model.apply(disable_observer)


def calibration_batches(
    x: torch.Tensor, *, batches: int, batch_size: int, seed: int = 0
) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=gen)[: batches * batch_size]
    return [x[idx[i : i + batch_size]] for i in range(0, len(idx), batch_size)]


def post_training_quantize(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    *,
    weight_bits: int = 8,
    act_bits: int = 8,
) -> nn.Module:
    """Post-training quantization (in place), simulated: every layer at ``weight_bits``/``act_bits``.

    Weight scales come from the weights; activation ranges from the calibration batches. No training.
    """
    attach_fake_quant(model, lambda _name: (weight_bits, act_bits))
    calibrate(model, calibration)
    freeze_observers(model)
    return model
