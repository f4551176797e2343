"""Decoding one tensor of the compact file with numpy alone (the encoder is export/compact_codec.py).

A tensor's blob is coded in three layers (positions × values × entropy; see compact_codec.py
and docs/compact-format.md). Decoding returns the elements' bit patterns in their storage
dtype (unsigned ints of the float's width), so a reader rebuilds the exact values: torch
views them as its dtype, the runtime as numpy's (`as_numpy`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import zstandard

from modelshrink.runtime.errors import ArtifactError
from modelshrink.runtime.huffman import huffman_decode

MAX_CODEBOOK = 256  # indices of at most 8 bits
POSITIONS = ("all", "bitmask", "delta")
VALUES = ("raw", "codebook")
ENTROPY = ("none", "zstd", "shuffle_zstd", "huffman")  # what a file may hold (huffman: version 2 files)

# Native-endian storage of each dtype's elements: floats by bit pattern (bfloat16 included, which numpy lacks).
STORAGE: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in {
        "float16": "u2", "bfloat16": "u2", "float32": "u4", "float64": "u8", "bool": "u1",
        "uint8": "u1", "int8": "i1", "int16": "i2", "int32": "i4", "int64": "i8",
    }.items()
}  # fmt: skip
FLOATS = {"float16", "bfloat16", "float32", "float64"}
# numpy's dtype of each value (bfloat16 has none: the runtime widens it to float32 exactly).
NUMPY: dict[str, np.dtype] = {
    "float16": np.dtype("f2"), "float32": np.dtype("f4"), "float64": np.dtype("f8"), "bool": np.dtype("?"),
    "uint8": np.dtype("u1"), "int8": np.dtype("i1"), "int16": np.dtype("i2"), "int32": np.dtype("i4"),
    "int64": np.dtype("i8"),
}  # fmt: skip


# A compact file's tensors decode to at most this many times its size (estimated, not measured: a 99%-pruned,
# clustered model is about 100 times), or MIN_DECODE_LIMIT bytes: a header that declares more is refused before any allocation.
MAX_EXPANSION = 4096
MIN_DECODE_LIMIT = 16 << 20


def decode_limit(nbytes: int) -> int:
    """The most bytes anything in a compact file of `nbytes` (or its payload) may decode to."""
    return max(MIN_DECODE_LIMIT, MAX_EXPANSION * nbytes)


def zstd_decompress(blob: bytes, limit: int) -> bytes:
    """One zstd frame, at most `limit` bytes. A frame whose header declares more is refused before zstandard
    allocates what it declares (which it does, max_output_size notwithstanding). Raises zstandard.ZstdError."""
    declared = zstandard.frame_content_size(blob)  # -1: not declared; then max_output_size bounds the output
    if declared > limit:
        raise zstandard.ZstdError(f"the frame declares {declared:,} bytes, more than the {limit:,} expected")
    return zstandard.ZstdDecompressor().decompress(blob, max_output_size=limit)


def le(storage: np.dtype) -> np.dtype:
    return storage.newbyteorder("<")


def width(bits: int) -> int:
    return 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8


def unpack_bits(buf: bytes, n: int, bits: int) -> np.ndarray:
    """Inverse of packing `n` non-negative integers at `bits` bits each, least significant bit first."""
    if bits == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    w = width(bits)
    full = np.zeros((n, 8 * w), dtype=np.uint8)
    full[:, :bits] = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), count=n * bits, bitorder="little").reshape(
        n, bits
    )
    return np.packbits(full, axis=1, bitorder="little").view(f"<u{w}").reshape(n).astype(np.int64)


def coded_size(entry: dict[str, Any], n: int, item: int) -> int:
    """Bytes of a tensor's blob before entropy coding, from its header entry."""
    size = 4 * int(entry["channels"]) if "channels" in entry else 0
    positions, values = entry["positions"], entry["values"]
    m = n if positions == "all" else int(entry["nnz"])
    if positions == "bitmask":
        size += math.ceil(n / 8)
    elif positions == "delta":
        size += math.ceil(m * int(entry["index_bits"]) / 8)
    elif positions != "all":
        raise ArtifactError(f"unknown positions coding {positions!r}; known: {', '.join(POSITIONS)}")
    if values == "raw":
        size += m * item
    elif values == "codebook":
        size += int(entry["k"]) * item + math.ceil(m * int(entry["bits"]) / 8)
    else:
        raise ArtifactError(f"unknown values coding {values!r}; known: {', '.join(VALUES)}")
    return size


def _positions(entry: dict[str, Any], blob: bytes, n: int) -> tuple[np.ndarray | None, int, int]:
    """(mask of stored elements or None for all, stored element count, bytes used)."""
    if entry["positions"] == "all":
        return None, n, 0
    m = int(entry["nnz"])
    if not 0 <= m <= n:
        raise ArtifactError(f"nnz={m} is outside 0..{n}")
    if entry["positions"] == "bitmask":
        size = math.ceil(n / 8)
        mask = np.unpackbits(np.frombuffer(blob[:size], dtype=np.uint8), count=n, bitorder="little").astype(bool)
        if int(mask.sum()) != m:
            raise ArtifactError(f"bitmask has {int(mask.sum())} set bits but the header says nnz={m}")
        return mask, m, size
    size = math.ceil(m * int(entry["index_bits"]) / 8)
    where = np.cumsum(unpack_bits(blob[:size], m, int(entry["index_bits"])) + 1) - 1
    if m and int(where[-1]) >= n:
        raise ArtifactError(f"delta-coded position {int(where[-1])} is outside the {n} elements")
    mask = np.zeros(n, dtype=bool)
    mask[where] = True
    return mask, m, size


def decode_elements(entry: dict[str, Any], blob: bytes, storage: np.dtype, n: int) -> np.ndarray:
    """The `n` elements (flat, `storage` dtype) of one positions × values coded blob."""
    mask, m, pos = _positions(entry, blob, n)
    item = storage.itemsize
    if entry["values"] == "raw":
        vals = np.frombuffer(blob[pos:], dtype=le(storage), count=m)
    else:
        k, bits = int(entry["k"]), int(entry["bits"])
        if not 1 <= k <= MAX_CODEBOOK or bits != (k - 1).bit_length():
            raise ArtifactError(f"codebook with k={k}, bits={bits} is not valid")
        book = np.frombuffer(blob[pos : pos + k * item], dtype=le(storage), count=k)
        idx = unpack_bits(blob[pos + k * item :], m, bits)
        if m and int(idx.max()) >= k:
            raise ArtifactError(f"codebook index {int(idx.max())} out of range for k={k}")
        vals = book[idx]
    if mask is None:
        return vals.astype(storage, copy=False)
    out = np.zeros(n, dtype=storage)
    out[mask] = vals
    return out


def shuffle(raw: bytes, lanes: int) -> bytes:
    """Byte i of every `lanes`-byte element together (lane-major); a tail shorter than an element stays last."""
    n = len(raw) // lanes * lanes
    body = np.frombuffer(raw, dtype=np.uint8, count=n).reshape(-1, lanes)  # (elements, lanes)
    return body.T.tobytes() + raw[n:]


def unshuffle(data: bytes, lanes: int) -> bytes:
    """The inverse of `shuffle`."""
    n = len(data) // lanes * lanes
    body = np.frombuffer(data, dtype=np.uint8, count=n).reshape(lanes, -1)  # (lanes, elements)
    return body.T.tobytes() + data[n:]


def entropy_decode(entropy: str, blob: bytes, raw_nbytes: int, lanes: int = 1) -> bytes:
    if entropy == "none":
        return blob
    if entropy in ("zstd", "shuffle_zstd"):
        try:
            raw = zstd_decompress(blob, raw_nbytes)
        except zstandard.ZstdError as err:
            raise ArtifactError(f"zstd blob does not decompress ({err})") from err
        return raw if entropy == "zstd" else unshuffle(raw, lanes)
    if entropy == "huffman":
        try:
            return huffman_decode(blob, raw_nbytes)
        except ValueError as err:
            raise ArtifactError(f"Huffman blob does not decode ({err})") from err
    raise ArtifactError(f"unknown entropy coding {entropy!r}; known: {', '.join(ENTROPY)}")


def decode_storage(entry: dict[str, Any], payload: bytes) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """(elements as bit patterns, per-channel float32 scale bit patterns or None, shape) of one entry.

    Raises ArtifactError (or KeyError, TypeError, ValueError...) when the entry or its blob is not valid.
    """
    dtype = entry["dtype"]
    if dtype not in STORAGE:
        raise ArtifactError(f"unknown dtype {dtype!r}; known: {', '.join(STORAGE)}")
    shape = [int(s) for s in entry["shape"]]
    n = math.prod(shape)
    offset, nbytes, raw_nbytes = int(entry["offset"]), int(entry["nbytes"]), int(entry["raw_nbytes"])
    if min([offset, nbytes, *shape], default=0) < 0 or offset + nbytes > len(payload):
        raise ArtifactError(f"blob [{offset}, {offset + nbytes}) lies outside the {len(payload)}-byte payload")
    if not 0 <= raw_nbytes <= decode_limit(len(payload)):
        raise ArtifactError(f"raw_nbytes={raw_nbytes} is outside 0..{decode_limit(len(payload))}")
    lanes = int(entry.get("lanes", 1))
    if not 1 <= lanes <= 8:
        raise ArtifactError(f"lanes={lanes} is outside 1..8")
    raw = entropy_decode(entry["entropy"], payload[offset : offset + nbytes], raw_nbytes, lanes)
    quant = entry.get("quant")
    elem = STORAGE["int8"] if quant == "int8" else STORAGE[dtype]
    expected = coded_size(entry, n, elem.itemsize)
    if len(raw) != raw_nbytes or raw_nbytes != expected:
        raise ArtifactError(f"blob is {len(raw)} bytes, its encoding needs {expected}")
    if quant is None:
        return decode_elements(entry, raw, elem, n), None, shape
    axis, channels = int(entry["axis"]), int(entry["channels"])
    if quant != "int8" or dtype != "float32" or not 0 <= axis < len(shape):
        raise ArtifactError(f"quantization {quant!r} on axis {axis} of a {dtype} tensor is not valid")
    if channels != shape[axis]:
        raise ArtifactError(f"{channels} scales for {shape[axis]} channels")
    scales = np.frombuffer(raw[: 4 * channels], dtype="<u4").astype(np.uint32)
    return decode_elements(entry, raw[4 * channels :], elem, n), scales, shape


def as_numpy(entry: dict[str, Any], payload: bytes) -> np.ndarray:
    """The tensor of one header entry as a numpy array of its values (bfloat16 widened to float32, exactly)."""
    values, scales, shape = decode_storage(entry, payload)
    dtype = entry["dtype"]
    if scales is not None:  # int8 × per-channel float32 scale: the formula of export.int8.dequantize_int8
        bshape = [1] * len(shape)
        bshape[int(entry["axis"])] = -1
        out = values.astype(np.float32).reshape(shape) * scales.view(np.float32).reshape(bshape)
        return np.ascontiguousarray(out, dtype=np.float32)
    if dtype == "bfloat16":  # the top 16 bits of a float32
        return (values.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return values.view(NUMPY[dtype]).reshape(shape) if dtype in FLOATS else values.astype(NUMPY[dtype]).reshape(shape)
