"""Per-tensor coding of the compact file: the bit patterns of one tensor in the smallest of a few encodings.

Each tensor is coded in three layers, each choice per tensor, smallest wins:
  positions  ``all`` | ``bitmask`` (1 bit per element) | ``delta`` (gaps between
             nonzero positions, bit-packed at the widest gap's width)
  values     ``raw`` (little-endian elements) | ``codebook`` (k <= 256 distinct values,
             then ceil(log2 k)-bit indices)
  entropy    ``none`` | ``zstd`` | ``shuffle_zstd`` (the bytes split into lanes, byte i of every element
             together, before zstd: the sign/exponent bytes of floats repeat, the low mantissa
             bytes do not; Blosc's "shuffle" filter) | ``huffman`` (canonical Huffman over bytes,
             huffman.py; read in files of format version 2, no longer written: see ENTROPY_WRITTEN)
and an int8 tensor (`quantized`) also carries one float32 scale per channel: its float32
value is exactly `int8 * scale` (see `export.int8.dequantize_int8`), recomputed the same way on load.
Round trips are bit-exact: values are handled as bit patterns, never re-computed.
The file around these blobs (prelude, header, payload) is compact.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zstandard

from modelshrink.errors import ArtifactError
from modelshrink.export.huffman import huffman_decode, huffman_encode
from modelshrink.export.int8 import Int8Tensor, dequantize_int8

# Level 19 is zstandard's strongest "normal" level; on the reference LSTM (1.4 MB dense)
# it takes well under a second, and levels 20-22 ("ultra") cost much more memory for <1%.
ZSTD_LEVEL = 19
MAX_CODEBOOK = 256  # indices of at most 8 bits
# A quick look at the first elements rejects most dense tensors before a full np.unique.
_CODEBOOK_PROBE = 4096
POSITIONS = ("all", "bitmask", "delta")
VALUES = ("raw", "codebook")
ENTROPY = ("none", "zstd", "shuffle_zstd", "huffman")  # what a file may hold
# What the writer tries, smallest kept. Huffman is read, no longer written: on the seed preset's compact files
# it never beat both zstd codings (benchmarks/compact_coders.py; docs/compact-format.md has the figures).
ENTROPY_WRITTEN = ("none", "zstd", "shuffle_zstd")


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


def _width(bits: int) -> int:
    return 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8


def _pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers at `bits` bits each, least significant bit first."""
    if bits == 0 or values.size == 0:
        return b""
    w = _width(bits)
    as_bytes = values.astype(f"<u{w}").view(np.uint8).reshape(-1, w)
    per_bit = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :bits]  # (n, bits)
    return np.packbits(per_bit.reshape(-1), bitorder="little").tobytes()


def _unpack_bits(buf: bytes, n: int, bits: int) -> np.ndarray:
    if bits == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    w = _width(bits)
    full = np.zeros((n, 8 * w), dtype=np.uint8)
    full[:, :bits] = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), count=n * bits, bitorder="little").reshape(
        n, bits
    )
    return np.packbits(full, axis=1, bitorder="little").view(f"<u{w}").reshape(n).astype(np.int64)


# -- one tensor ------------------------------------------------------------------------------------
def _sizes(entry: dict[str, Any], n: int, item: int) -> int:
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
        candidates.append((_sizes({**fields, "values": "raw"}, n, item), {**fields, "values": "raw"}))
        if vals.size and np.unique(vals[:_CODEBOOK_PROBE]).size <= MAX_CODEBOOK:
            k = int(np.unique(vals).size)
            if k <= MAX_CODEBOOK:
                cb = {**fields, "values": "codebook", "k": k, "bits": (k - 1).bit_length()}
                candidates.append((_sizes(cb, n, item), cb))
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


def _decode(entry: dict[str, Any], blob: bytes, storage: np.dtype, n: int) -> np.ndarray:
    le, item = _le(storage), storage.itemsize
    pos = 0
    positions = entry["positions"]
    if positions == "all":
        mask = None
        m = n
    else:
        m = int(entry["nnz"])
        if not 0 <= m <= n:
            raise ArtifactError(f"nnz={m} is outside 0..{n}")
        if positions == "bitmask":
            size = math.ceil(n / 8)
            mask = np.unpackbits(np.frombuffer(blob[:size], dtype=np.uint8), count=n, bitorder="little").astype(bool)
            if int(mask.sum()) != m:
                raise ArtifactError(f"bitmask has {int(mask.sum())} set bits but the header says nnz={m}")
        else:
            size = math.ceil(m * int(entry["index_bits"]) / 8)
            where = np.cumsum(_unpack_bits(blob[:size], m, int(entry["index_bits"])) + 1) - 1
            if m and int(where[-1]) >= n:
                raise ArtifactError(f"delta-coded position {int(where[-1])} is outside the {n} elements")
            mask = np.zeros(n, dtype=bool)
            mask[where] = True
        pos = size
    if entry["values"] == "raw":
        vals = np.frombuffer(blob[pos:], dtype=le, count=m)
    else:
        k, bits = int(entry["k"]), int(entry["bits"])
        if not 1 <= k <= MAX_CODEBOOK or bits != (k - 1).bit_length():
            raise ArtifactError(f"codebook with k={k}, bits={bits} is not valid")
        book = np.frombuffer(blob[pos : pos + k * item], dtype=le, count=k)
        idx = _unpack_bits(blob[pos + k * item :], m, bits)
        if m and int(idx.max()) >= k:
            raise ArtifactError(f"codebook index {int(idx.max())} out of range for k={k}")
        vals = book[idx]
    if mask is None:
        return vals
    out = np.zeros(n, dtype=storage)
    out[mask] = vals
    return out


def shuffle(raw: bytes, lanes: int) -> bytes:
    """Byte i of every `lanes`-byte element together (lane-major); a tail shorter than an element stays last."""
    n = len(raw) // lanes * lanes
    body = np.frombuffer(raw, dtype=np.uint8, count=n).reshape(-1, lanes)  # (elements, lanes)
    return body.T.tobytes() + raw[n:]


def unshuffle(data: bytes, lanes: int) -> bytes:
    n = len(data) // lanes * lanes
    body = np.frombuffer(data, dtype=np.uint8, count=n).reshape(lanes, -1)  # (lanes, elements)
    return body.T.tobytes() + data[n:]


def _zstd(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(raw)


def entropy_code(raw: bytes, lanes: int = 1, coders: tuple[str, ...] = ENTROPY_WRITTEN) -> tuple[str, bytes]:
    """The smallest of `coders` on the raw bytes; `lanes` is the element width shuffle_zstd splits by."""
    options = [("none", raw)]
    if raw and "zstd" in coders:
        options.append(("zstd", _zstd(raw)))
    if raw and "shuffle_zstd" in coders and lanes > 1:
        options.append(("shuffle_zstd", _zstd(shuffle(raw, lanes))))
    if raw and "huffman" in coders:
        huff = huffman_encode(raw)
        if huff is not None:
            options.append(("huffman", huff))
    return min(options, key=lambda o: len(o[1]))  # ties: the simpler coding, listed first


def _entropy_decode(entropy: str, blob: bytes, raw_nbytes: int, lanes: int) -> bytes:
    if entropy == "none":
        return blob
    if entropy in ("zstd", "shuffle_zstd"):
        try:
            raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=raw_nbytes)
        except zstandard.ZstdError as err:
            raise ArtifactError(f"zstd blob does not decompress ({err})") from err
        return raw if entropy == "zstd" else unshuffle(raw, lanes)
    if entropy == "huffman":
        try:
            return huffman_decode(blob, raw_nbytes)
        except ValueError as err:
            raise ArtifactError(f"Huffman blob does not decode ({err})") from err
    raise ArtifactError(f"unknown entropy coding {entropy!r}; known: {', '.join(ENTROPY)}")


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
    """The tensor of one header entry, from the file's payload; ArtifactError (or a KeyError,
    TypeError, ValueError...) when the entry or its blob is not valid."""
    spec = DTYPES[entry["dtype"]]
    shape = [int(s) for s in entry["shape"]]
    n = math.prod(shape)
    offset, nbytes, raw_nbytes = int(entry["offset"]), int(entry["nbytes"]), int(entry["raw_nbytes"])
    if min([offset, nbytes, *shape], default=0) < 0 or offset + nbytes > len(payload):
        raise ArtifactError(f"blob [{offset}, {offset + nbytes}) lies outside the {len(payload)}-byte payload")
    lanes = int(entry.get("lanes", 1))
    if not 1 <= lanes <= 8:
        raise ArtifactError(f"lanes={lanes} is outside 1..8")
    raw = _entropy_decode(entry["entropy"], payload[offset : offset + nbytes], raw_nbytes, lanes)
    quant = entry.get("quant")
    elem = DTYPES["int8"] if quant == "int8" else spec
    expected = _sizes(entry, n, elem.storage.itemsize)
    if len(raw) != raw_nbytes or raw_nbytes != expected:
        raise ArtifactError(f"blob is {len(raw)} bytes, its encoding needs {expected}")
    if quant is None:
        return _from_storage(_decode(entry, raw, spec.storage, n), spec, shape)
    axis, channels = int(entry["axis"]), int(entry["channels"])
    if quant != "int8" or spec.torch_dtype != torch.float32 or not 0 <= axis < len(shape):
        raise ArtifactError(f"quantization {quant!r} on axis {axis} of a {entry['dtype']} tensor is not valid")
    if channels != shape[axis]:
        raise ArtifactError(f"{channels} scales for {shape[axis]} channels")
    scales = _from_storage(np.frombuffer(raw[: 4 * channels], dtype="<u4"), spec, [channels])
    values = _from_storage(_decode(entry, raw[4 * channels :], elem.storage, n), elem, shape)
    return dequantize_int8(Int8Tensor(values, scales, axis))
