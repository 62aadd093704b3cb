"""How many stages a space uses, and their strides and widths, for a given input resolution."""

from __future__ import annotations

_WIDTHS = (
    (8, 16, 24),
    (16, 24, 32, 48),
    (24, 32, 48, 64, 96),
    (48, 64, 96, 128),
    (96, 128, 160, 192),
)

_WIDTHS_32 = (
    (16, 24, 32),
    (24, 32, 48, 64),
    (48, 64, 96, 128),
    (96, 128, 160, 192),
)


def stage_layout(image_size: int) -> tuple[int, tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """(stem stride, per-stage strides, per-stage width choices).

    Small inputs (8x8 digits) keep full resolution in the stem and halve twice; larger inputs add a
    strided stem and more stages, so the last feature map stays around 2x2 to 4x4.
    """
    if image_size <= 8:
        return 1, (1, 2, 2), _WIDTHS[:3]
    if image_size <= 16:
        return 1, (1, 2, 2, 2), _WIDTHS[:4]
    if image_size <= 32:
        # CIFAR-sized inputs: 16x16 after the stem, a last map of 4x4 (2x2 lost too much on CIFAR-10),
        # and wider stages than digits need: 10 classes of natural images want 100+ final channels.
        return 2, (1, 2, 2, 1), _WIDTHS_32
    return 2, (1, 2, 2, 2, 2), _WIDTHS[:5]
