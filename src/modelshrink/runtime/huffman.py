"""Reading the canonical Huffman blobs of version 2 compact files (Deep Compression's last stage, Han et al., 2016).

Version 3's writer no longer codes with Huffman (byte-shuffle + zstd came out smaller on every tensor of the seed
preset's files, docs/compact-format.md), and its encoder is gone; this decoder stays so version 2 files still load.

Blob layout: 128 bytes holding the code length of each byte value 0..255 (4 bits each;
value 2i in the low nibble of byte i, 2i+1 in the high nibble; 0 = value absent), then
the codes of the symbols in order, most significant bit first, packed into bytes most
significant bit first, the last byte padded with zero bits. Codes are canonical: sorted
by (length, value), each the previous plus one, shifted left when the length grows
(DEFLATE's convention, RFC 1951 §3.2.2). The number of symbols is stored by the caller.
"""

from __future__ import annotations

import numpy as np

TABLE_BYTES = 128


def _canonical_codes(lengths: np.ndarray) -> np.ndarray:
    codes = np.zeros(256, dtype=np.int64)
    code, prev_len = 0, 0
    for s in sorted((int(s) for s in np.flatnonzero(lengths)), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - prev_len
        codes[s] = code
        code, prev_len = code + 1, int(lengths[s])
    return codes


def huffman_decode(blob: bytes, n: int) -> bytes:
    """The `n` bytes a version 2 writer Huffman-coded into `blob`; raises ValueError on a malformed blob."""
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
