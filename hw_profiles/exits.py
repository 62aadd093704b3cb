"""What early exits cost on a device: an input that leaves at exit j has run the stem, the stages up
to j and every exit classifier it passed on the way. ``expected`` averages that over where a set of
inputs left (evaluators/early_exit.exit_outcome); ``worst`` is an input that passes every exit."""

from __future__ import annotations

from typing import Any

from compactnas.hw_profiles.analysis import network_layers, roofline_ms
from compactnas.spaces.arch import ArchSpec, as_spec
from compactnas.spaces.exits import exit_stages, truncated, without_exits


def exit_latency_ms(
    latency_model: Any, spec: ArchSpec | str, input_shape, fractions, *, num_classes: int
) -> dict[str, float]:
    """Expected latency over the inputs that left as ``fractions`` says (one share per exit, the
    network's output last), the worst case (every exit passed), and the network without exits.
    An exit's classifier is priced by ``exit_head_ms``."""
    spec = as_spec(spec)
    stages = exit_stages(spec)
    plain = without_exits(spec)

    def ms(s: ArchSpec) -> float:
        return float(latency_model.predict_ms(s, input_shape, num_classes=num_classes))

    full = ms(plain)
    reach = [ms(truncated(spec, i)) for i in stages]  # up to exit j, that exit included
    head = [exit_head_ms(latency_model, spec, input_shape, i, num_classes) for i in stages]
    # Leaving at exit j: the network up to j and its classifier, plus the classifiers passed before.
    costs = [reach[j] + sum(head[:j]) for j in range(len(stages))]
    costs.append(full + sum(head))
    expected = sum(f * c for f, c in zip(fractions, costs, strict=True))
    return {"expected_ms": expected, "worst_ms": costs[-1], "no_exits_ms": full}


def exit_head_ms(
    latency_model: Any, spec: ArchSpec, input_shape, stage: int, num_classes: int
) -> float:
    """The device's price of one exit classifier (global pool and linear layer on the stage's
    output), from its per-layer model, without the network's fixed overhead."""
    layers = network_layers(truncated(spec, stage), tuple(input_shape), num_classes)
    tail = tuple(layer for layer in layers if layer.stage == -2)
    profile = latency_model.profile
    return max(0.0, roofline_ms(profile, tail) - profile.network_overhead_ms)
