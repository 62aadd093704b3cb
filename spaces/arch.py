"""The architecture-string grammar: decoding (string -> ArchSpec) and formatting (ArchSpec -> string).

A whole network is one string of segments joined by ``-``::

    stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-ir_r2_k5_s2_e6_c24_se0.25_pr0.25_wb4_ab8-fire_r1_s1_q8_c32-head_c128

Block segments extend timm's block strings (``ds``, ``ir``, ``cn``, ``er``) and add SqueezeNet's ``fire``. Keys appear in
one canonical order, so that ``format_arch(parse_arch(s)) == s`` holds for every valid string:

    stem  k s c            [sp rw cl wb ab]
    ds    r k s e c [se]   [pr lr sp rw cl wb ab ex]
    ir    r k s e c [se]   [pr lr sp rw cl wb ab ex]
    fire  r s q c          [pr sp rw cl wb ab ex]   q = squeeze channels; c = expand 1x1 + 3x3 channels
    cn    r k s c          [pr sp rw cl wb ab ex]   plain k x k convolution + BN + ReLU (no skip)
    er    r k s e c [se]   [pr lr sp rw cl wb ab ex]   fused inverted residual: k x k expansion, 1x1
                                                    projection
    head  c                [sp rw cl wb ab]         c0 = no 1x1 head convolution
    cell  r c o                            a NAS-Bench-201 cell; o = its six edge operators as digits
    res   r s c                            a ResNet basic block (NAS-Bench-201's reduction block)

A ``cell`` stage's ``o`` lists the operator of each edge in NAS-Bench-201's order (1<-0, 2<-0, 2<-1,
3<-0, 3<-1, 3<-2), one digit per edge: 0 none, 1 skip_connect, 2 nor_conv_1x1, 3 nor_conv_3x3,
4 avg_pool_3x3 (spaces/nb201.py; NAS-Bench-201's own notation ``|op~0|+|...|`` is read too).

Compression keys: ``pr`` structured pruning ratio of the stage's hidden channels (an ir or er block's
expanded channels, a fire block's squeeze channels; ds and cn blocks have none), ``sp`` unstructured
sparsity of the segment's weights (the fraction zeroed by magnitude), ``cl`` weight sharing (each
layer's weights take one of ``cl`` k-means values, stored as a codebook and entropy-coded indices;
evaluators/clustering.py; excludes ``wb``), ``wb`` weight bits, ``ab`` activation bits. Defaults
(pr0, sp0, rw0, cl0, wb32, ab32, se0, ex0) are omitted when formatting.

Lottery-ticket rewinding: ``rw`` beside ``sp`` finds that sparsity by iterative magnitude pruning with
rewinding (evaluators/rewinding.py): after each pruning round the segment's surviving weights go back
to their values early in dense training, at the end of epoch ``ceil(rw x dense epochs)``, and train
again, instead of being fine-tuned from where they were. It needs ``sp`` on the same segment and
excludes ``pr`` and ``lr`` there (their reshaped layers have no early weights to return to).

Low-rank factorisation: ``lr`` on a ds, ir or er stage replaces each block's 1x1 projection (cin x
cout) by two 1x1 convolutions through ``rank_of(cin, cout, lr)`` = ``max(1, round(lr x min(cin, cout)))``
channels; it excludes ``pr`` on the same stage.

Early exits: ``ex`` on a ds, ir, er, fire or cn stage adds an exit after it (global average pool and
a linear classifier on the stage's output); an input leaves there when the exit's top softmax
probability reaches ``ex`` (a threshold in (0, 1)), else it goes on (evaluators/early_exit.py). timm reads ``p`` and
``a`` as kernel sizes and ignores unknown keys, so compression keys never reach timm (see build.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from compactnas.core.errors import ArchStringError

BLOCK_KINDS = ("ds", "ir", "fire", "cn", "er", "cell", "res")
CELL_EDGES = 6
CELL_OPS = 5  # digits 0..4 of a cell's ``o`` key
WEIGHT_BITS = (1, 2, 4, 8, 32)
MAX_CLUSTERS = 256  # indices up to 8 bits (a clustered layer's weights are int16 indices in memory)
ACT_BITS = (8, 32)
_MAX_CHANNELS = 4096


def rank_of(cin: int, cout: int, fraction: float) -> int:
    """The inner width of a projection (cin -> cout) factorised at ``fraction`` of its smaller side:
    the one formula the builder (spaces/build.py) and the cost model (spaces/layers.py) share."""
    return max(1, round(fraction * min(cin, cout)))


def format_number(x: float) -> str:
    """Shortest text for a number: integers without a decimal point, others as Python's repr."""
    if float(x).is_integer():
        return str(int(x))
    return repr(float(x))


@dataclass(frozen=True, kw_only=True)
class StemSpec:
    kernel: int = 3
    stride: int = 1
    channels: int = 16
    sparsity: float = 0.0
    rewind: float = 0.0
    clusters: int = 0
    wbits: int = 32
    abits: int = 32


@dataclass(frozen=True, kw_only=True)
class BlockSpec:
    """One stage: ``repeats`` blocks of one kind; only the first block strides."""

    kind: str
    repeats: int = 1
    kernel: int = 3
    stride: int = 1
    expansion: float = 1.0
    channels: int = 16
    se: float = 0.0
    squeeze: int = 0
    prune: float = 0.0
    sparsity: float = 0.0
    rewind: float = 0.0
    clusters: int = 0
    wbits: int = 32
    abits: int = 32
    ops: str = ""  # a cell's edge operators, one digit per edge (see the module docstring)
    exit: float = 0.0  # confidence threshold of an exit after this stage; 0: no exit
    lowrank: float = 0.0  # rank of the 1x1 projection as a fraction of its smaller side; 0: full

    @property
    def compressed(self) -> bool:
        return (
            self.prune > 0
            or self.sparsity > 0
            or self.clusters > 0
            or self.wbits < 32
            or self.abits < 32
            or self.lowrank > 0
        )


@dataclass(frozen=True, kw_only=True)
class HeadSpec:
    channels: int = 0
    sparsity: float = 0.0
    rewind: float = 0.0
    clusters: int = 0
    wbits: int = 32
    abits: int = 32


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    stem: StemSpec = field(default_factory=StemSpec)
    stages: tuple[BlockSpec, ...] = ()
    head: HeadSpec = field(default_factory=HeadSpec)

    def __str__(self) -> str:
        return format_arch(self)

    @property
    def total_stride(self) -> int:
        s = self.stem.stride
        for st in self.stages:
            s *= st.stride
        return s

    @property
    def depth(self) -> int:
        return sum(st.repeats for st in self.stages)

    def without_compression(self) -> ArchSpec:
        """The same architecture with every pruning ratio and bit-width at its default."""
        return replace(
            self,
            stem=replace(self.stem, sparsity=0.0, rewind=0.0, clusters=0, wbits=32, abits=32),
            stages=tuple(
                replace(
                    s,
                    prune=0.0,
                    lowrank=0.0,
                    sparsity=0.0,
                    rewind=0.0,
                    clusters=0,
                    wbits=32,
                    abits=32,
                )
                for s in self.stages
            ),
            head=replace(self.head, sparsity=0.0, rewind=0.0, clusters=0, wbits=32, abits=32),
        )


# Weight sharing keys (evaluators/clustering.py): unstructured sparsity, how it is found (rewinding,
# evaluators/rewinding.py) and k-means clusters.
_CODED = (("sp", float, False), ("rw", float, False), ("cl", int, False))
# Canonical key order per segment kind: (key, type, required).
_KEYS: dict[str, tuple[tuple[str, type, bool], ...]] = {
    "stem": (("k", int, True), ("s", int, True), ("c", int, True), *_CODED, ("wb", int, False), ("ab", int, False)),
    "ds": (
        ("r", int, True), ("k", int, True), ("s", int, True), ("e", float, True), ("c", int, True),
        ("se", float, False), ("pr", float, False), ("lr", float, False), *_CODED,
        ("wb", int, False), ("ab", int, False), ("ex", float, False),
    ),
    "fire": (
        ("r", int, True), ("s", int, True), ("q", int, True), ("c", int, True),
        ("pr", float, False), *_CODED, ("wb", int, False), ("ab", int, False), ("ex", float, False),
    ),
    "head": (("c", int, True), *_CODED, ("wb", int, False), ("ab", int, False)),
    "cell": (("r", int, True), ("c", int, True), ("o", str, True)),
    "res": (("r", int, True), ("s", int, True), ("c", int, True)),
}  # fmt: skip
_KEYS["ir"] = _KEYS["er"] = _KEYS["ds"]
_KEYS["cn"] = (("r", int, True), ("k", int, True), ("s", int, True), ("c", int, True),
               ("pr", float, False), *_CODED, ("wb", int, False), ("ab", int, False),
               ("ex", float, False))  # fmt: skip
_DEFAULTS = {
    "se": 0.0, "pr": 0.0, "lr": 0.0, "sp": 0.0, "rw": 0.0, "cl": 0, "wb": 32, "ab": 32, "ex": 0.0,
}  # fmt: skip
_TOKEN = re.compile(r"^([a-z]+)(\d+(?:\.\d+)?)$")


def _parse_segment(seg: str, where: str) -> tuple[str, dict[str, float]]:
    if not seg:
        raise ArchStringError(f"empty segment {where}")
    tokens = seg.split("_")
    kind = tokens[0]
    if kind not in _KEYS:
        raise ArchStringError(
            f"bad token '{kind}' {where}: unknown segment kind (expected one of {', '.join(_KEYS)})"
        )
    spec = _KEYS[kind]
    order = [k for k, _, _ in spec]
    values: dict[str, float] = {}
    pos = 0
    for tok in tokens[1:]:
        m = _TOKEN.match(tok)
        if not m:
            raise ArchStringError(
                f"bad token '{tok}' in '{seg}' {where}: expected KEY followed by a number"
            )
        key, text = m.group(1), m.group(2)
        if key not in order:
            raise ArchStringError(
                f"bad token '{tok}' in '{seg}' {where}: unknown key '{key}' for {kind} "
                f"(keys: {' '.join(order)})"
            )
        idx = order.index(key)
        if key in values:
            raise ArchStringError(f"bad token '{tok}' in '{seg}' {where}: key '{key}' given twice")
        if idx < pos:
            raise ArchStringError(
                f"bad token '{tok}' in '{seg}' {where}: keys must appear in the order {' '.join(order)}"
            )
        pos = idx + 1
        typ = spec[idx][1]
        if typ is str:
            # Digit codes keep their leading zeros, so they are text, not numbers.
            values[key] = text  # type: ignore[assignment]
            continue
        if typ is int and "." in text:
            raise ArchStringError(
                f"bad token '{tok}' in '{seg}' {where}: '{key}' takes a whole number"
            )
        value = typ(text)
        if format_number(value) != text:
            raise ArchStringError(
                f"bad token '{tok}' in '{seg}' {where}: write it as '{key}{format_number(value)}'"
            )
        if key in _DEFAULTS and value == _DEFAULTS[key]:
            raise ArchStringError(
                f"bad token '{tok}' in '{seg}' {where}: '{tok}' is the default; leave it out"
            )
        values[key] = value
    missing = [k for k, _, req in spec if req and k not in values]
    if missing:
        raise ArchStringError(f"segment '{seg}' {where} lacks required key(s): {' '.join(missing)}")
    return kind, values


def _check(cond: bool, seg: str, where: str, msg: str) -> None:
    if not cond:
        raise ArchStringError(f"bad value in '{seg}' {where}: {msg}")


def _bits(v: dict, seg: str, where: str) -> dict[str, float]:
    """A segment's weight-storage keys (sp rw cl wb ab), checked, as the spec's keyword arguments."""
    wb, ab = int(v.get("wb", 32)), int(v.get("ab", 32))
    _check(wb in WEIGHT_BITS, seg, where, f"wb{wb}: weight bits must be one of {WEIGHT_BITS}")
    _check(ab in ACT_BITS, seg, where, f"ab{ab}: activation bits must be one of {ACT_BITS}")
    sp, cl = float(v.get("sp", 0.0)), int(v.get("cl", 0))
    _check(0.0 <= sp < 1.0, seg, where, f"sp{format_number(sp)}: sparsity must be in [0, 1)")
    _check(
        cl == 0 or 2 <= cl <= MAX_CLUSTERS,
        seg,
        where,
        f"cl{cl}: clusters must be 2..{MAX_CLUSTERS}",
    )
    _check(
        cl == 0 or wb == 32,
        seg,
        where,
        f"cl{cl} and wb{wb} both set the weights' values: a clustered layer's codebook replaces "
        "its weight bits (drop one)",
    )
    rw = float(v.get("rw", 0.0))
    _check(
        0.0 <= rw < 1.0,
        seg,
        where,
        f"rw{format_number(rw)}: a rewind point is a share of dense training in [0, 1)",
    )
    _check(
        rw == 0 or sp > 0,
        seg,
        where,
        f"rw{format_number(rw)} rewinds the weights that sparsity keeps: it needs sp on the same "
        "segment",
    )
    return {"sparsity": sp, "rewind": rw, "clusters": cl, "wbits": wb, "abits": ab}


def _channels(c: float, seg: str, where: str, key: str = "c") -> int:
    _check(
        1 <= c <= _MAX_CHANNELS,
        seg,
        where,
        f"{key}{format_number(c)}: channels must be 1..{_MAX_CHANNELS}",
    )
    return int(c)


def parse_arch(text: str) -> ArchSpec:
    """Decode an architecture string; a malformed string raises ArchStringError naming the bad token."""
    if not isinstance(text, str) or not text.strip():
        raise ArchStringError("empty architecture string")
    if text != text.strip():
        raise ArchStringError("architecture string has leading or trailing whitespace")
    if text.startswith("|"):
        # lazy: cycle spaces.arch -> spaces.nb201 (nb201 builds on arch)
        from compactnas.spaces.nb201 import (
            parse_nb201_string,  # the cell space builds on this module
        )

        return parse_nb201_string(text)
    segs = text.split("-")
    if len(segs) < 3:
        raise ArchStringError(
            f"architecture string '{text}' needs a stem, at least one stage and a head, joined by '-'"
        )
    stem = head = None
    stages: list[BlockSpec] = []
    for i, seg in enumerate(segs):
        where = f"(segment {i + 1})"
        kind, v = _parse_segment(seg, where)
        if i == 0:
            if kind != "stem":
                raise ArchStringError(
                    f"bad token '{seg.split('_')[0]}' {where}: the first segment must be a stem"
                )
        elif i == len(segs) - 1:
            if kind != "head":
                raise ArchStringError(
                    f"bad token '{seg.split('_')[0]}' {where}: the last segment must be a head"
                )
        elif kind not in BLOCK_KINDS:
            raise ArchStringError(
                f"bad token '{kind}' {where}: a stage must be one of {', '.join(BLOCK_KINDS)}"
            )
        if kind == "stem":
            _check(v["k"] in (1, 3, 5, 7), seg, where, "stem kernel must be 1, 3, 5 or 7")
            _check(v["s"] in (1, 2), seg, where, "stem stride must be 1 or 2")
            stem = StemSpec(
                kernel=int(v["k"]),
                stride=int(v["s"]),
                channels=_channels(v["c"], seg, where),
                **_bits(v, seg, where),
            )
        elif kind == "head":
            _check(0 <= v["c"] <= _MAX_CHANNELS, seg, where, "head channels must be 0..4096")
            head = HeadSpec(channels=int(v["c"]), **_bits(v, seg, where))
        else:
            _check(1 <= v["r"] <= 16, seg, where, "repeats must be 1..16")
            if kind in ("cell", "res"):
                stages.append(_cell_or_res(kind, v, seg, where))
                continue
            _check(v["s"] in (1, 2), seg, where, "stride must be 1 or 2")
            pr = float(v.get("pr", 0.0))
            _check(
                0.0 <= pr < 1.0,
                seg,
                where,
                f"pr{format_number(pr)}: pruning ratio must be in [0, 1)",
            )
            bits = _bits(v, seg, where)
            ex = float(v.get("ex", 0.0))
            _check(
                0.0 <= ex < 1.0,
                seg,
                where,
                f"ex{format_number(ex)}: an exit's confidence threshold must be in (0, 1)",
            )
            bits["exit"] = ex
            _check(
                not bits["rewind"] or pr == 0,
                seg,
                where,
                "rw rewinds weights of the unpruned shapes: it excludes pr on the same stage",
            )
            if kind == "fire":
                c = _channels(v["c"], seg, where)
                _check(
                    c >= 2 and c % 2 == 0,
                    seg,
                    where,
                    "fire output channels must be even (two expand branches)",
                )
                stages.append(
                    BlockSpec(kind="fire", repeats=int(v["r"]), kernel=3, stride=int(v["s"]),
                              channels=c, squeeze=_channels(v["q"], seg, where, "q"),
                              prune=pr, **bits)
                )  # fmt: skip
            elif kind == "cn":
                _check(v["k"] in (1, 3, 5, 7, 9), seg, where, "kernel must be 1, 3, 5, 7 or 9")
                _check(pr == 0, seg, where, "a cn block has no hidden channels to prune (pr)")
                stages.append(
                    BlockSpec(kind="cn", repeats=int(v["r"]), kernel=int(v["k"]), stride=int(v["s"]),
                              channels=_channels(v["c"], seg, where), **bits)
                )  # fmt: skip
            else:
                _check(v["k"] in (1, 3, 5, 7, 9), seg, where, "kernel must be 1, 3, 5, 7 or 9")
                _check(0 < v["e"] <= 16, seg, where, "expansion must be in (0, 16]")
                se = float(v.get("se", 0.0))
                _check(0.0 <= se <= 1.0, seg, where, "se ratio must be in [0, 1]")
                _check(kind != "ds" or v["e"] == 1, seg, where, "a ds block has expansion 1 (e1)")
                _check(
                    kind != "ds" or pr == 0,
                    seg,
                    where,
                    "a ds block has no hidden channels to prune (pr)",
                )
                lr = float(v.get("lr", 0.0))
                _check(
                    0.0 <= lr < 1.0,
                    seg,
                    where,
                    f"lr{format_number(lr)}: rank fraction must be in (0, 1)",
                )
                _check(
                    lr == 0 or pr == 0,
                    seg,
                    where,
                    "lr and pr both shrink the projection's input side: give one of them",
                )
                _check(
                    not bits["rewind"] or lr == 0,
                    seg,
                    where,
                    "rw rewinds weights of the full-rank projection: it excludes lr on the same "
                    "stage",
                )
                bits["lowrank"] = lr
                stages.append(
                    BlockSpec(kind=kind, repeats=int(v["r"]), kernel=int(v["k"]), stride=int(v["s"]),
                              expansion=float(v["e"]), channels=_channels(v["c"], seg, where), se=se,
                              prune=pr, **bits)
                )  # fmt: skip
    assert stem is not None and head is not None
    return ArchSpec(stem=stem, stages=tuple(stages), head=head)


def _cell_or_res(kind: str, v: dict, seg: str, where: str) -> BlockSpec:
    c = _channels(v["c"], seg, where)
    if kind == "res":
        _check(v["s"] in (1, 2), seg, where, "stride must be 1 or 2")
        return BlockSpec(kind="res", repeats=int(v["r"]), stride=int(v["s"]), channels=c)
    ops = str(v["o"])
    _check(
        len(ops) == CELL_EDGES and all(ch in "01234"[:CELL_OPS] for ch in ops),
        seg,
        where,
        f"o{ops}: a cell needs {CELL_EDGES} edge operators, each a digit 0..{CELL_OPS - 1}",
    )
    return BlockSpec(kind="cell", repeats=int(v["r"]), channels=c, ops=ops)


def _compression(
    prune: float | None, part: StemSpec | BlockSpec | HeadSpec, lowrank: float = 0.0
) -> list[str]:
    out = []
    if prune:
        out.append(f"pr{format_number(prune)}")
    if lowrank:
        out.append(f"lr{format_number(lowrank)}")
    if part.sparsity:
        out.append(f"sp{format_number(part.sparsity)}")
    if part.rewind:
        out.append(f"rw{format_number(part.rewind)}")
    if part.clusters:
        out.append(f"cl{part.clusters}")
    wbits, abits = part.wbits, part.abits
    if wbits != 32:
        out.append(f"wb{wbits}")
    if abits != 32:
        out.append(f"ab{abits}")
    return out


def format_stage(b: BlockSpec, *, compression: bool = True) -> str:
    """One stage's segment; ``compression=False`` drops pr/wb/ab (what timm and latency tables see)."""
    if b.kind == "cell":
        return f"cell_r{b.repeats}_c{b.channels}_o{b.ops}"
    if b.kind == "res":
        return f"res_r{b.repeats}_s{b.stride}_c{b.channels}"
    if b.kind == "fire":
        toks = ["fire", f"r{b.repeats}", f"s{b.stride}", f"q{b.squeeze}", f"c{b.channels}"]
    elif b.kind == "cn":
        toks = ["cn", f"r{b.repeats}", f"k{b.kernel}", f"s{b.stride}", f"c{b.channels}"]
    else:
        toks = [
            b.kind,
            f"r{b.repeats}",
            f"k{b.kernel}",
            f"s{b.stride}",
            f"e{format_number(b.expansion)}",
            f"c{b.channels}",
        ]
        if b.se:
            toks.append(f"se{format_number(b.se)}")
    if compression:
        toks += _compression(b.prune, b, b.lowrank)
        if b.exit:
            toks.append(f"ex{format_number(b.exit)}")
    return "_".join(toks)


def format_arch(spec: ArchSpec) -> str:
    s, h = spec.stem, spec.head
    parts = [
        "_".join(
            [
                "stem",
                f"k{s.kernel}",
                f"s{s.stride}",
                f"c{s.channels}",
                *_compression(None, s),
            ]
        )
    ]
    parts += [format_stage(b) for b in spec.stages]
    parts.append("_".join(["head", f"c{h.channels}", *_compression(None, h)]))
    return "-".join(parts)


def as_spec(spec_or_string: ArchSpec | str) -> ArchSpec:
    if isinstance(spec_or_string, ArchSpec):
        return spec_or_string
    if isinstance(spec_or_string, str):
        return parse_arch(spec_or_string)
    raise TypeError(
        f"expected an ArchSpec or an architecture string, got {type(spec_or_string).__name__}"
    )
