"""Per-tensor coding of the compact file: the bit patterns of one tensor in the smallest of a few encodings.

Each tensor is coded in three layers, each choice per tensor, smallest wins:
  positions  ``all`` | ``bitmask`` (1 bit per element) | ``delta`` (gaps between
             nonzero positions, bit-packed at the widest gap's width)
  values     ``raw`` (little-endian elements) | ``codebook`` (k <= 256 distinct values,
             then ceil(log2 k)-bit indices)
  entropy    ``none`` | ``zstd`` | ``shuffle_zstd`` (the bytes split into lanes, byte i of every element
             together, before zstd); ``huffman`` is read in files of format version 2 (runtime/huffman.py),
             no longer written: see ENTROPY_WRITTEN
and an int8 tensor (`quantized`) also carries one float32 scale per channel: its float32
value is exactly `int8 * scale` (see `export.int8.dequantize_int8`), recomputed the same way on load.
Round trips are bit-exact: values are handled as bit patterns, never re-computed.
Decoding needs numpy and zstandard only and lives with the torch-free runtime (runtime/codec.py);
the file around these blobs (prelude, header, payload) is runtime/container.py and compact.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zstandard

from modelshrink.errors import ArtifactError
from modelshrink.export.int8 import Int8Tensor, dequantize_int8
from modelshrink.runtime.codec import (
    ENTROPY,
    MAX_CODEBOOK,
    POSITIONS,
    VALUES,
    coded_size,
    decode_storage,
    shuffle,
    unshuffle,
    width,
)

# Level 19 is zstandard's strongest "normal" level; on the reference LSTM (1.4 MB dense)
# it takes well under a second, and levels 20-22 ("ultra") cost much more memory for <1%.
ZSTD_LEVEL = 19
# A quick look at the first elements rejects most dense tensors before a full np.unique.
_CODEBOOK_PROBE = 4096
# POSITIONS, VALUES, ENTROPY and MAX_CODEBOOK are the decoder's (runtime/codec.py), shared.
__all__ = [
    "DTYPES", "ENTROPY", "ENTROPY_WRITTEN", "MAX_CODEBOOK", "POSITIONS", "VALUES", "ZSTD_LEVEL", "decode_tensor",
    "encode_tensor", "entropy_code", "shuffle", "unshuffle",
]  # fmt: skip


@dataclass(frozen=True)
class _DType:
    torch_dtype: torch.dtype
    storage: np.dtype  # native-endian numpy dtype of the element's bit pattern or value
    is_float: bool


def _dt(torch_dtype: torch.dtype, storage: str, is_float: bool) -> _DType:
    return _DType(torch_dtype, np.dtype(storage), is_float)


# Floats are stored by bit pattern (unsigned int of the same width): bit-exact, and the
# same code handles bfloat16, which numpy lacks.
DTYPES: dict[str, _DType] = {
    "float16": _dt(torch.float16, "u2", True),
    "bfloat16": _dt(torch.bfloat16, "u2", True),
    "float32": _dt(torch.float32, "u4", True),
    "float64": _dt(torch.float64, "u8", True),
    "bool": _dt(torch.bool, "u1", False),
    "uint8": _dt(torch.uint8, "u1", False),
    "int8": _dt(torch.int8, "i1", False),
    "int16": _dt(torch.int16, "i2", False),
    "int32": _dt(torch.int32, "i4", False),
    "int64": _dt(torch.int64, "i8", False),
}
_SIGNED_OF_WIDTH = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


# -- bit-level helpers ---------------------------------------------------------------------------
def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _le(storage: np.dtype) -> np.dtype:
    return storage.newbyteorder("<")


def _to_storage(t: torch.Tensor, spec: _DType) -> np.ndarray:
    """Flat numpy array of `t`'s elements as `spec.storage` (bit patterns for floats)."""
    t = t.detach().cpu().contiguous().reshape(-1)
    if spec.is_float:
        # torch has no unsigned 16/32/64-bit views everywhere; view as signed, then numpy unsigned.
        return t.view(_SIGNED_OF_WIDTH[t.element_size()]).numpy().view(spec.storage)
    if spec.torch_dtype == torch.bool:
        return t.view(torch.uint8).numpy()
    return t.numpy()


def _from_storage(arr: np.ndarray, spec: _DType, shape: list[int]) -> torch.Tensor:
    arr = np.ascontiguousarray(arr, dtype=spec.storage)
    if spec.is_float:
        signed = np.dtype(f"i{spec.storage.itemsize}")
        out = torch.from_numpy(arr.view(signed).copy()).view(spec.torch_dtype)
    elif spec.torch_dtype == torch.bool:
        out = torch.from_numpy(arr.copy()).view(torch.bool)
    else:
        out = torch.from_numpy(arr.copy())
    return out.reshape(shape)


def _raw(arr: np.ndarray) -> bytes:
    return arr.astype(_le(arr.dtype), copy=False).tobytes()


def _pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers at `bits` bits each, least significant bit first."""
    if bits == 0 or values.size == 0:
        return b""
    w = width(bits)
    as_bytes = values.astype(f"<u{w}").view(np.uint8).reshape(-1, w)
    per_bit = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :bits]  # (n, bits)
    return np.packbits(per_bit.reshape(-1), bitorder="little").tobytes()


# -- one tensor ------------------------------------------------------------------------------------
def _encode(arr: np.ndarray) -> tuple[dict[str, Any], bytes]:
    """Smallest positions × values coding of one flat array; returns (entry fields, blob)."""
    n, item = arr.size, arr.dtype.itemsize
    nonzero = arr != 0  # bit pattern nonzero: -0.0 counts as a value
    where = np.flatnonzero(nonzero)
    nnz = int(where.size)
    gaps = np.diff(where, prepend=-1) - 1  # zeros skipped before each nonzero
    index_bits = int(gaps.max()).bit_length() if nnz else 0

    candidates: list[tuple[int, dict[str, Any]]] = []
    for positions in POSITIONS:
        vals = arr if positions == "all" else arr[nonzero]
        fields: dict[str, Any] = {"positions": positions}
        if positions != "all":
            fields["nnz"] = nnz
        if positions == "delta":
            fields["index_bits"] = index_bits
        candidates.append((coded_size({**fields, "values": "raw"}, n, item), {**fields, "values": "raw"}))
        if vals.size and np.unique(vals[:_CODEBOOK_PROBE]).size <= MAX_CODEBOOK:
            k = int(np.unique(vals).size)
            if k <= MAX_CODEBOOK:
                cb = {**fields, "values": "codebook", "k": k, "bits": (k - 1).bit_length()}
                candidates.append((coded_size(cb, n, item), cb))
    fields = min(candidates, key=lambda c: c[0])[1]  # first of equal sizes wins: `all`, `raw` first

    parts: list[bytes] = []
    if fields["positions"] == "bitmask":
        parts.append(np.packbits(nonzero, bitorder="little").tobytes())
    elif fields["positions"] == "delta":
        parts.append(_pack_bits(gaps, index_bits))
    vals = arr if fields["positions"] == "all" else arr[nonzero]
    if fields["values"] == "codebook":
        book, idx = np.unique(vals, return_inverse=True)
        parts += [_raw(book), _pack_bits(idx.reshape(-1), fields["bits"])]
    else:
        parts.append(_raw(vals))
    return fields, b"".join(parts)


# What the writer tries, smallest kept. Huffman is read (version 2 files), no longer written: on the seed
# preset's compact files it never beat both zstd codings (docs/compact-format.md). An ANS coder (constriction)
# for codebook indices saved 0.5-1.3 % of a file, not enough for a compiled dependency in the runtime (same doc).
ENTROPY_WRITTEN = ("none", "zstd", "shuffle_zstd")
# A tensor at least this big codes both ways in two threads: level 19 runs at about 1 MB/s, so a transformer's
# compact file (90 MB of float32) took minutes coded one way after the other; small tensors are not worth a thread.
PARALLEL_BYTES = 1 << 20


def _zstd(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(raw)


def entropy_code(raw: bytes, lanes: int = 1, coders: tuple[str, ...] = ENTROPY_WRITTEN) -> tuple[str, bytes]:
    """The smallest of `coders` on the raw bytes; `lanes` is the element width shuffle_zstd splits by
    (byte i of every element together before zstd, Blosc's "shuffle": the sign/exponent bytes of floats
    repeat, the low mantissa bytes do not)."""
    todo = []
    if raw and "zstd" in coders:
        todo.append(("zstd", raw))
    if raw and "shuffle_zstd" in coders and lanes > 1:
        todo.append(("shuffle_zstd", shuffle(raw, lanes)))
    if len(raw) >= PARALLEL_BYTES and len(todo) > 1:  # zstandard releases the GIL: both codings at once
        with ThreadPoolExecutor(len(todo)) as pool:
            coded = list(pool.map(_zstd, [b for _, b in todo]))
    else:
        coded = [_zstd(b) for _, b in todo]
    options = [("none", raw), *((name, c) for (name, _), c in zip(todo, coded, strict=True))]
    return min(options, key=lambda o: len(o[1]))  # ties: the simpler coding, listed first


# -- one tensor, as the file holds it --------------------------------------------------------------
def encode_tensor(name: str, tensor: torch.Tensor, quantized: Int8Tensor | None) -> tuple[dict[str, Any], bytes]:
    """The header entry (all but `offset` and `nbytes`) and the entropy-coded blob of one tensor.

    With `quantized`, the tensor is stored as its int8 values plus per-channel scales; it must
    equal `dequantize_int8(quantized)` bit for bit.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ArtifactError(f"cannot write {name!r} to a compact file: expected a torch.Tensor, got {type(tensor)}")
    dtype = dtype_name(tensor)
    if dtype not in DTYPES:
        raise ArtifactError(
            f"cannot write tensor {name!r} of dtype {dtype} to a compact file; supported: {', '.join(DTYPES)}"
        )
    entry: dict[str, Any] = {"name": name, "dtype": dtype, "shape": list(tensor.shape)}
    prefix = b""
    if quantized is not None:
        q = quantized
        if dtype != "float32" or not torch.equal(dequantize_int8(q).view(torch.int32), tensor.view(torch.int32)):
            raise ArtifactError(f"tensor {name!r} is not the float32 value of its int8 form; quantize it first")
        entry.update(quant="int8", axis=q.axis, channels=int(q.scales.numel()))
        prefix = _raw(q.scales.detach().to(torch.float32).numpy().view(np.uint32))
        fields, blob = _encode(_to_storage(q.values, DTYPES["int8"]))
    else:
        fields, blob = _encode(_to_storage(tensor, DTYPES[dtype]))
    raw = prefix + blob
    lanes = _lanes(entry, fields)
    entropy, coded = entropy_code(raw, lanes)
    entry.update(fields, raw_nbytes=len(raw), entropy=entropy)
    if entropy == "shuffle_zstd":
        entry["lanes"] = lanes
    return entry, coded


def _lanes(entry: dict[str, Any], fields: dict[str, Any]) -> int:
    """The element width in bytes of the values a blob mostly holds: what byte shuffling splits by."""
    if "quant" in entry:
        return 4 if fields["values"] == "codebook" else 1  # codebook: the scales and book dominate; else int8
    return int(DTYPES[entry["dtype"]].storage.itemsize)


def decode_tensor(entry: dict[str, Any], payload: bytes) -> torch.Tensor:
    """The tensor of one header entry, from the file's payload (decoded by the runtime's numpy codec);
    ArtifactError (or a KeyError, TypeError, ValueError...) when the entry or its blob is not valid."""
    values, scales, shape = decode_storage(entry, payload)
    if scales is None:
        return _from_storage(values, DTYPES[entry["dtype"]], shape)
    q_values = _from_storage(values, DTYPES["int8"], shape)
    q_scales = _from_storage(scales, DTYPES["float32"], [scales.size])
    return dequantize_int8(Int8Tensor(q_values, q_scales, int(entry["axis"])))
