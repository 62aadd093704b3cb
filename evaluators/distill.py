"""Knowledge distillation (Hinton, Vinyals and Dean, 2015) as a loss for ``train(loss_fn=...)``.

    loss = alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE(s, y)
    p_t = softmax(t / T), p_s = softmax(s / T)

with student logits ``s``, teacher logits ``t``, labels ``y`` and temperature ``T``. The KL term has the
teacher's distribution as its target, as in Hinton et al. (``F.kl_div(log p_s, p_t)``):
sum_k p_t[k] * (log p_t[k] - log p_s[k]), summed over classes and averaged over the batch; the cross
entropy is averaged over the batch too. The T^2 factor is Hinton et al.'s: the soft term's gradients
scale as 1/T^2, so multiplying by T^2 keeps the two terms' relative weight ``alpha`` independent of T.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compactnas.core.errors import ConfigError
from compactnas.evaluators.compression import compress, is_compressed
from compactnas.evaluators.train import LossFn, TrainConfig, accuracy, train
from compactnas.spaces.arch import as_spec
from compactnas.spaces.build import create_model


def check_distill_settings(temperature: float, alpha: float) -> None:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ConfigError(f"temperature must be a positive number, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y); see the module docstring."""
    t = float(temperature)
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits.detach() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, targets)
    return alpha * t * t * soft + (1.0 - alpha) * hard


class TeacherLogits:
    """The teacher's logits for a batch, memoised per distinct input.

    Augmentation here only shifts images by whole pixels, so the inputs a training run meets are a small
    finite set: after the first epochs every batch is a cache hit and the (large) teacher costs nothing,
    across seeds and students too. ``max_entries`` bounds memory for large data sets; past it, batches
    are computed without caching.
    """

    def __init__(self, teacher: nn.Module, *, max_entries: int = 200_000):
        self.teacher = teacher.eval()
        self.max_entries = max_entries
        self._cache: dict[bytes, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()
        if x.device.type != "cpu":
            # On an accelerator the teacher runs beside the student, uncached: a forward pass there
            # costs less than copying the batch back to hash it.
            if next(self.teacher.parameters()).device != x.device:
                self.teacher.to(x.device)
            return self.teacher(x)
        flat = x.detach().contiguous().reshape(len(x), -1).numpy()
        keys = [row.tobytes() for row in flat]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            computed = self.teacher(x[missing])
            if len(self._cache) + len(missing) > self.max_entries:
                self.misses += len(x)
                if len(missing) == len(x):
                    return computed
                return self.teacher(x)
            for i, row in zip(missing, computed, strict=True):
                self._cache[keys[i]] = row
        self.misses += len(missing)
        self.hits += len(x) - len(missing)
        return torch.stack([self._cache[k] for k in keys])


def distillation_loss_fn(
    teacher: nn.Module | TeacherLogits, *, temperature: float = 4.0, alpha: float = 0.7
) -> LossFn:
    """A ``train()`` loss: teacher logits are computed on the same (augmented) inputs as the student's."""
    check_distill_settings(temperature, alpha)
    logits = teacher if isinstance(teacher, TeacherLogits) else TeacherLogits(teacher)

    def loss(
        student_logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor
    ) -> torch.Tensor:
        return distillation_loss(
            student_logits, logits(inputs), targets, temperature=temperature, alpha=alpha
        )

    return loss


def retrain(
    spec: Any,
    data: Any,
    cfg: TrainConfig,
    *,
    loss_fn: LossFn | None = None,
    init: dict[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """Train an architecture from scratch (``torch.manual_seed(cfg.seed)`` first, so two calls with the
    same seed start from the same weights), compressing it as its string says; returns the model and its
    validation and test accuracy. ``init``: starting weights instead (a supernet's, say)."""
    spec = as_spec(spec)
    torch.manual_seed(cfg.seed)
    model = create_model(spec, num_classes=data.num_classes, in_chans=data.input_shape[0])
    if init is not None:
        model.load_state_dict(init)
    if is_compressed(spec):
        compress(model, spec, data, cfg, loss_fn=loss_fn)
    else:
        train(model, data.train.x, data.train.y, cfg, loss_fn=loss_fn)
    return model, {
        "accuracy": accuracy(model, data.val.x, data.val.y, cfg),
        "test_accuracy": accuracy(model, data.test.x, data.test.y, cfg),
    }
