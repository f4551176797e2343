"""Canonical Huffman coding of bytes, as Deep Compression's last stage (Han et al., 2016).

Our own, not a library: the one maintained pure-Python package (`dahuffman`) codes one
symbol per Python call and stores its code tables with pickle, which a model file must
never contain. Here the code table is 128 bytes of code lengths, and coding runs in numpy.

Blob layout: 128 bytes holding the code length of each byte value 0..255 (4 bits each;
value 2i in the low nibble of byte i, 2i+1 in the high nibble; 0 = value absent), then
the codes of the symbols in order, most significant bit first, packed into bytes most
significant bit first, the last byte padded with zero bits. Codes are canonical: sorted
by (length, value), each the previous plus one, shifted left when the length grows
(DEFLATE's convention, RFC 1951 §3.2.2). The number of symbols is stored by the caller.
"""

from __future__ import annotations

import heapq

import numpy as np

MAX_CODE_BITS = 15  # lengths fit 4 bits; a longer code only arises for skewed data zstd codes better
TABLE_BYTES = 128


def _code_lengths(freq: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol (0 for absent symbols)."""
    lengths = np.zeros(256, dtype=np.int64)
    present = np.flatnonzero(freq)
    if present.size == 1:
        lengths[present[0]] = 1
        return lengths
    # Heap of (weight, tie-break id, symbols under this node); merging adds one bit to each.
    heap = [(int(freq[s]), int(s), [int(s)]) for s in present]
    heapq.heapify(heap)
    next_id = 256
    while len(heap) > 1:
        w1, _, s1 = heapq.heappop(heap)
        w2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (w1 + w2, next_id, s1 + s2))
        next_id += 1
    return lengths


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    codes = np.zeros(256, dtype=np.int64)
    code, prev_len = 0, 0
    for s in sorted((int(s) for s in np.flatnonzero(lengths)), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev_len
        codes[s] = code
        code, prev_len = code + 1, int(lengths[s])
    return codes


def huffman_encode(data: bytes) -> bytes | None:
    """Huffman-code `data`; None when a code would exceed MAX_CODE_BITS or data is empty."""
    if not data:
        return None
    sym = np.frombuffer(data, dtype=np.uint8)
    lengths = _code_lengths(np.bincount(sym, minlength=256))
    if lengths.max() > MAX_CODE_BITS:
        return None
    codes = _canonical_codes(lengths)
    table = (lengths[0::2] | (lengths[1::2] << 4)).astype(np.uint8).tobytes()
    lens = lengths[sym].astype(np.int32)  # (n,)
    total = int(lens.sum())
    starts = np.cumsum(lens) - lens  # first bit of each symbol's code
    # Bit j of the stream belongs to symbol owner[j], at position within[j] of its code.
    owner = np.repeat(np.arange(sym.size, dtype=np.int32), lens)
    within = np.arange(total, dtype=np.int64) - starts[owner]
    bits = (codes[sym][owner] >> (lens[owner] - 1 - within)) & 1
    return table + np.packbits(bits.astype(np.uint8)).tobytes()


def huffman_decode(blob: bytes, n: int) -> bytes:
    """Inverse of `huffman_encode` for `n` symbols; raises ValueError on a malformed blob."""
    if len(blob) < TABLE_BYTES:
        raise ValueError(f"Huffman blob of {len(blob)} bytes has no code table")
    table = np.frombuffer(blob[:TABLE_BYTES], dtype=np.uint8)
    lengths = np.empty(256, dtype=np.int64)
    lengths[0::2], lengths[1::2] = table & 0x0F, table >> 4
    if not lengths.any():
        raise ValueError("Huffman code table is empty")
    kraft = sum(2.0 ** -int(v) for v in lengths[lengths > 0])
    if kraft > 1.0 or (kraft < 1.0 and np.count_nonzero(lengths) > 1):
        raise ValueError("Huffman code lengths do not form a complete prefix code")
    codes = _canonical_codes(lengths)
    width = int(lengths.max())
    # Lookup table: every `width`-bit window starting with a code maps to that code's symbol.
    lut_sym = np.zeros(1 << width, dtype=np.uint8)
    lut_len = np.zeros(1 << width, dtype=np.int32)
    for s in np.flatnonzero(lengths):
        shift = width - int(lengths[s])
        lo = int(codes[s]) << shift
        lut_sym[lo : lo + (1 << shift)] = s
        lut_len[lo : lo + (1 << shift)] = lengths[s]
    bits = np.unpackbits(np.frombuffer(blob[TABLE_BYTES:], dtype=np.uint8)).astype(np.int32)
    bits = np.concatenate([bits, np.zeros(width, dtype=np.int32)])  # windows past the end read zeros
    windows = np.zeros(bits.size - width, dtype=np.int32)  # the `width` bits starting at each position
    for j in range(width):
        windows = (windows << 1) | bits[j : j + windows.size]
    step = lut_len[windows]
    # The walk through the stream is sequential; a memoryview makes each step a cheap int read.
    steps = memoryview(step.data)  # type: ignore[arg-type]  # numpy arrays are buffers
    pos = np.empty(n, dtype=np.int64)
    p, limit = 0, windows.size
    for i in range(n):
        if p >= limit:
            raise ValueError(f"Huffman stream ends after {i} of {n} symbols")
        pos[i] = p
        p += steps[p]
    return lut_sym[windows[pos]].tobytes()
