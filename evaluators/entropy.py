"""Canonical Huffman coding of small-alphabet integer streams, with the exact number of bytes stored.

A clustered layer (evaluators/clustering.py) stores each weight as an index into its codebook. This
module codes such a stream and counts what the coded form really occupies: the table (one 4-bit code
length per symbol of the alphabet, so a decoder rebuilds the canonical code) plus the packed bits.
``encode``/``decode`` round-trip exactly; ``coded_bytes`` is ``len(encode(...))`` without building it.

Code lengths are limited to 15 bits (they fit in a nibble): when the optimal code is deeper, the
frequencies are halved (rounding up, so no used symbol vanishes) until it is not. The loss is tiny on
the skewed streams that need it.

Written here rather than taken from a library: the Python Huffman packages on the registries code bytes
or strings and neither expose the table size nor decode into numpy arrays.
"""

from __future__ import annotations

import heapq

import numpy as np

MAX_CODE_LENGTH = 15


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length of every symbol (0 for symbols that never occur), at most 15 bits."""
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1  # one symbol still needs one bit per occurrence to be counted
        return lengths
    freq = counts[used].copy()
    while True:
        depth = _huffman_depths(freq)
        if depth.max() <= MAX_CODE_LENGTH:
            lengths[used] = depth
            return lengths
        freq = (freq + 1) // 2


def _huffman_depths(freq: np.ndarray) -> np.ndarray:
    heap: list[tuple[int, int, list[int]]] = [(int(f), i, [i]) for i, f in enumerate(freq)]
    heapq.heapify(heap)
    depth = np.zeros(len(freq), dtype=np.int64)
    tie = len(freq)
    while len(heap) > 1:
        f1, _, a = heapq.heappop(heap)
        f2, _, b = heapq.heappop(heap)
        depth[a] += 1
        depth[b] += 1
        heapq.heappush(heap, (f1 + f2, tie, a + b))
        tie += 1
    return depth


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol (shorter codes first, ties by symbol), as integers."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code = 0
    prev = 0
    for sym in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[sym]) - prev
        prev = int(lengths[sym])
        codes[sym] = code
        code += 1
    return codes


def table_bytes(alphabet: int) -> int:
    """The stored table: one 4-bit code length per symbol."""
    return (alphabet + 1) // 2


def coded_bytes(symbols: np.ndarray, alphabet: int) -> int:
    """Bytes of ``encode(symbols, alphabet)``: the table plus the bit stream, rounded up to whole bytes."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    counts = np.bincount(symbols, minlength=alphabet)
    bits = int((counts * code_lengths(counts)).sum())
    return table_bytes(alphabet) + (bits + 7) // 8


def encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """The table (4-bit lengths) followed by the packed canonical codes, most significant bit first."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    if len(symbols) and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise ValueError(f"symbols must lie in 0..{alphabet - 1}")
    counts = np.bincount(symbols, minlength=alphabet)
    lengths = code_lengths(counts)
    codes = _canonical_codes(lengths)
    nib = np.zeros(2 * table_bytes(alphabet), dtype=np.uint8)
    nib[:alphabet] = lengths
    table = (nib[0::2] << 4 | nib[1::2]).astype(np.uint8).tobytes()
    if len(symbols) == 0:
        return table
    lens = lengths[symbols]
    vals = codes[symbols]
    # Every code's bits, expanded: bit j (from the most significant) of code c with length L.
    offsets = np.repeat(np.cumsum(lens) - lens, lens)
    pos = np.arange(int(lens.sum())) - offsets
    bit = (np.repeat(vals, lens) >> (np.repeat(lens, lens) - 1 - pos)) & 1
    return table + np.packbits(bit.astype(np.uint8)).tobytes()


def decode(data: bytes, alphabet: int, count: int) -> np.ndarray:
    """The ``count`` symbols ``encode`` wrote into ``data``."""
    tb = table_bytes(alphabet)
    raw = np.frombuffer(data[:tb], dtype=np.uint8)
    lengths = np.stack([raw >> 4, raw & 15], axis=1).ravel()[:alphabet].astype(np.int64)
    out = np.zeros(count, dtype=np.int64)
    if count == 0:
        return out
    codes = _canonical_codes(lengths)
    lookup = {(int(lengths[s]), int(codes[s])): s for s in np.flatnonzero(lengths)}
    bits = np.unpackbits(np.frombuffer(data[tb:], dtype=np.uint8))
    code = length = i = 0
    for b in bits:
        code = (code << 1) | int(b)
        length += 1
        sym = lookup.get((length, code))
        if sym is not None:
            out[i] = sym
            i += 1
            if i == count:
                return out
            code = length = 0
    raise ValueError(f"coded stream ended after {i} of {count} symbols")
