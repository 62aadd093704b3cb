"""Early exits in an architecture: which stages have one, and the network as far as an exit."""

from __future__ import annotations

from dataclasses import replace

from compactnas.spaces.arch import ArchSpec, HeadSpec, as_spec


def exit_stages(spec: ArchSpec | str) -> tuple[int, ...]:
    """Indices of the stages with an exit after them (``ex``), in order of depth."""
    return tuple(i for i, b in enumerate(as_spec(spec).stages) if b.exit > 0)


def without_exits(spec: ArchSpec | str) -> ArchSpec:
    spec = as_spec(spec)
    return replace(spec, stages=tuple(replace(b, exit=0.0) for b in spec.stages))


def truncated(spec: ArchSpec | str, stage: int) -> ArchSpec:
    """The network as far as an exit after ``stage``: its stages up to there and a classifier on
    their pooled output (no head convolution), which is what an input leaving there has run."""
    spec = without_exits(spec)
    return replace(spec, stages=spec.stages[: stage + 1], head=HeadSpec(channels=0))
