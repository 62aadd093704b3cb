"""The sub-space a weight-sharing supernet covers: the mobile space with one block kind per stage.

Every stage is an inverted residual (``ir``): it is the kind whose kernel, expansion, depth and width
can all shrink inside one set of shared weights (a ``ds`` block has no expansion, a ``cn`` or ``er``
block's dense k x k convolution would tie kernel and width into one large tensor), and it is the
MobileNetV2/V3 block once-for-all and BigNAS train. Squeeze-excite is left off and compression keys
are never part of a sub-network. A compressed candidate (``CompressedElastic``, a search with
``--compress``) is read off the supernet through ``subnetwork``: a stage's pruning ratio removes that
share of its hidden (expanded) channels, which is the supernet's expansion choice nearest to
``e * (1 - ratio)``; bit-widths are applied when the chosen model is fine-tuned.

Per stage: kernel 3/5/7 (the centre of the shared 7x7 kernel), expansion 3/4/6, depth 1-3 (the first
blocks kept), width from the mobile space's per-stage list (the first channels kept); stem and head
widths are elastic too (head 0 means no head convolution, as in the mobile space).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from compactnas.core.errors import ConfigError
from compactnas.spaces.arch import ArchSpec, BlockSpec, HeadSpec, StemSpec, as_spec
from compactnas.spaces.compression import sample_compression
from compactnas.spaces.layout import stage_layout
from compactnas.spaces.sampling import RandomTrial

KIND = "ir"
KERNELS = (3, 5, 7)
EXPANSIONS = (3, 4, 6)
DEPTHS = (1, 2, 3)
STEM_WIDTHS = (8, 16, 24)
HEAD_WIDTHS = (0, 64, 128)


@dataclass(frozen=True, kw_only=True)
class ElasticSpace:
    """A define-by-run space (``sample(trial)``) whose every answer is a sub-network of one supernet."""

    name: str = "mobile"
    image_size: int = 8
    stem_stride: int = 1
    strides: tuple[int, ...] = ()
    widths: tuple[tuple[int, ...], ...] = ()
    kernels: tuple[int, ...] = KERNELS
    expansions: tuple[int, ...] = EXPANSIONS
    depths: tuple[int, ...] = DEPTHS
    stem_widths: tuple[int, ...] = STEM_WIDTHS
    head_widths: tuple[int, ...] = HEAD_WIDTHS

    @classmethod
    def for_image(cls, image_size: int) -> ElasticSpace:
        stem_stride, strides, widths = stage_layout(image_size)
        return cls(image_size=image_size, stem_stride=stem_stride, strides=strides, widths=widths)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElasticSpace:
        tupled = {
            k: tuple(tuple(w) for w in v)
            if k == "widths"
            else (tuple(v) if isinstance(v, list) else v)
            for k, v in d.items()
        }
        return cls(**tupled)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sample(self, trial: Any) -> ArchSpec:
        stem = StemSpec(
            kernel=3,
            stride=self.stem_stride,
            channels=trial.suggest_categorical("stem_c", self.stem_widths),
        )
        stages = tuple(
            BlockSpec(
                kind=KIND,
                repeats=trial.suggest_categorical(f"s{i}_r", self.depths),
                kernel=trial.suggest_categorical(f"s{i}_k", self.kernels),
                stride=stride,
                expansion=float(trial.suggest_categorical(f"s{i}_e", self.expansions)),
                channels=trial.suggest_categorical(f"s{i}_c", choices),
            )
            for i, (stride, choices) in enumerate(zip(self.strides, self.widths, strict=True))
        )
        head = HeadSpec(channels=trial.suggest_categorical("head_c", self.head_widths))
        return ArchSpec(stem=stem, stages=stages, head=head)

    def _extreme(self, pick: Any) -> ArchSpec:
        class _Pick:
            def suggest_categorical(self, name: str, choices: Any) -> Any:
                return pick(choices)

        return self.sample(_Pick())

    def largest(self) -> ArchSpec:
        return self._extreme(max)

    def smallest(self) -> ArchSpec:
        """The cheapest sub-network; head 0 (no head conv) is its head."""
        return self._extreme(min)

    def random(self, rng: Any) -> ArchSpec:
        return self.sample(RandomTrial(rng))

    def check(self, spec_or_string: ArchSpec | str) -> ArchSpec:
        """The spec, or ConfigError saying why it is no sub-network of this space."""
        spec = as_spec(spec_or_string)
        where = f"'{spec}' is not a sub-network of the supernet"
        if spec.stem.kernel != 3 or spec.stem.stride != self.stem_stride:
            raise ConfigError(f"{where}: the stem must be k3_s{self.stem_stride}")
        if spec.stem.channels not in self.stem_widths:
            raise ConfigError(f"{where}: stem width must be one of {self.stem_widths}")
        if len(spec.stages) != len(self.strides):
            raise ConfigError(f"{where}: it needs {len(self.strides)} stages")
        for i, (b, stride, choices) in enumerate(
            zip(spec.stages, self.strides, self.widths, strict=True)
        ):
            ok = (
                b.kind == KIND
                and b.stride == stride
                and b.kernel in self.kernels
                and b.expansion in self.expansions
                and b.repeats in self.depths
                and b.channels in choices
                and not b.se
                and not b.compressed
            )
            if not ok:
                raise ConfigError(
                    f"{where}: stage {i + 1} must be {KIND} with stride {stride}, kernel in "
                    f"{self.kernels}, expansion in {self.expansions}, depth in {self.depths}, "
                    f"width in {choices}, no se and no compression"
                )
        if (
            spec.head.channels not in self.head_widths
            or spec.head.wbits < 32
            or spec.head.abits < 32
        ):
            raise ConfigError(f"{where}: head width must be one of {self.head_widths}")
        if spec.stem.wbits < 32 or spec.stem.abits < 32:
            raise ConfigError(f"{where}: no compression keys in a sub-network")
        return spec

    def subnetwork(self, spec_or_string: ArchSpec | str) -> ArchSpec:
        """The sub-network whose inherited accuracy stands for a (possibly compressed) candidate: each
        pruned stage takes the expansion choice nearest to what pruning leaves of its hidden channels
        (ties to the smaller; a ratio leaving less than the smallest choice maps to the smallest);
        bit-widths are dropped. An uncompressed sub-network maps to itself."""
        spec = as_spec(spec_or_string)
        plain = self.check(spec.without_compression())
        stages = tuple(
            replace(
                p,
                expansion=float(
                    min(self.expansions, key=lambda e: (abs(e - b.expansion * (1 - b.prune)), e))
                ),
            )
            if b.prune
            else p
            for b, p in zip(spec.stages, plain.stages, strict=True)
        )
        return replace(plain, stages=stages)


@dataclass(frozen=True)
class CompressedElastic:
    """The supernet's sub-space with per-stage pruning ratios and bit-widths sampled on top."""

    space: ElasticSpace

    @property
    def name(self) -> str:
        return self.space.name

    def sample(self, trial: Any) -> ArchSpec:
        spec = self.space.sample(trial)
        stages = tuple(
            replace(b, **sample_compression(trial, i)) for i, b in enumerate(spec.stages)
        )
        return replace(spec, stages=stages)

    def subnetwork(self, spec_or_string: ArchSpec | str) -> ArchSpec:
        return self.space.subnetwork(spec_or_string)
