"""modelshrink's compact weight format: honest bytes for sparse and clustered weights.

A dense float32 file stores a 50%-pruned or 16-cluster model in exactly as many bytes as
the original (the mistake the reference thesis made). This format stores each tensor in
the smallest of a few simple encodings, then entropy-codes everything with zstandard, so
the file size reflects the information a compressed model really holds. It is
pickle-free: loading parses a JSON header and raw little-endian numbers, nothing else.

File layout, version 1 (all integers little-endian):

    offset  size  field
    0       4     magic b"MSHK"
    4       2     format version, uint16 (FORMAT_VERSION)
    6       2     reserved, 0
    8       4     header length H in bytes, uint32
    12      4     CRC-32 of the header bytes, uint32
    16      H     header: a UTF-8 JSON object (below)
    16+H    rest  payload: one zstandard frame, with content size and content checksum,
                  holding the concatenated tensor blobs

Header:

    {"meta": {...caller's JSON...},
     "payload": {"codec": "zstd", "bytes": <uncompressed payload length>},
     "tensors": [{"name": str, "dtype": "float32", "shape": [..], "encoding": str,
                  "offset": int, "nbytes": int, ...encoding fields}, ...]}

`offset` and `nbytes` locate the tensor's blob in the uncompressed payload. Encodings:

- ``dense``: every element as raw little-endian bytes of `dtype` (bool as one byte 0/1).
- ``sparse_bitmask`` (field ``nnz``): a bitmask of ceil(n/8) bytes, bit i (least
  significant bit first) set when element i is nonzero, then the ``nnz`` nonzero values in
  element order. "Nonzero" compares bit patterns, so -0.0 is kept as a value.
- ``codebook`` (fields ``k``, ``bits``): the ``k`` <= 256 distinct values (ascending by
  bit pattern) as raw `dtype` values, then one index per element, each ``bits`` =
  ceil(log2 k) bits wide (0 when k == 1), packed least significant bit first. Zeros of
  a pruned-then-clustered tensor are one more codebook entry.

The writer picks, per tensor, the encoding with the fewest bytes before zstandard (ties
go to the earlier one in the list above). Only floating-point tensors are considered for
``sparse_bitmask`` and ``codebook``; integer and bool tensors (buffers, ids) are dense.
Round trips are bit-exact: values are handled as bit patterns, never re-computed.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard

from modelshrink.errors import ArtifactError
from modelshrink.export._atomic import atomic_output

FORMAT_VERSION = 1
MAGIC = b"MSHK"
# Level 19 is zstandard's strongest "normal" level; on the reference LSTM (1.4 MB dense)
# it takes well under a second, and levels 20-22 ("ultra") cost much more memory for <1%.
ZSTD_LEVEL = 19
MAX_CODEBOOK = 256  # indices of at most 8 bits

_PRELUDE = struct.Struct("<4sHHII")  # magic, version, reserved, header length, header CRC-32
# A quick look at the first elements rejects most dense tensors before a full np.unique.
_CODEBOOK_PROBE = 4096


@dataclass(frozen=True)
class _DType:
    torch_dtype: torch.dtype
    storage: np.dtype  # native-endian numpy dtype of the element's bit pattern or value
    is_float: bool


def _dt(torch_dtype: torch.dtype, storage: str, is_float: bool) -> _DType:
    return _DType(torch_dtype, np.dtype(storage), is_float)


# Floats are stored by bit pattern (unsigned int of the same width): bit-exact, and the
# same code handles bfloat16, which numpy lacks.
_DTYPES: dict[str, _DType] = {
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


def _dtype_name(t: torch.Tensor) -> str:
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


def _pack_indices(idx: np.ndarray, bits: int) -> bytes:
    """Pack uint8 indices at `bits` bits each, least significant bit first."""
    if bits == 0:
        return b""
    per_bit = np.unpackbits(idx.reshape(-1, 1), axis=1, count=bits, bitorder="little")  # (n, bits)
    return np.packbits(per_bit.reshape(-1), bitorder="little").tobytes()


def _unpack_indices(buf: bytes, n: int, bits: int) -> np.ndarray:
    if bits == 0:
        return np.zeros(n, dtype=np.uint8)
    per_bit = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), count=n * bits, bitorder="little")
    return np.packbits(per_bit.reshape(n, bits), axis=1, bitorder="little").reshape(n)


def _encode(arr: np.ndarray, spec: _DType) -> tuple[str, bytes, dict[str, int]]:
    """Choose the smallest encoding of one flat tensor; return (encoding, blob, fields)."""
    n, item = arr.size, arr.dtype.itemsize
    if not spec.is_float or n == 0:
        return "dense", _raw(arr), {}
    best: tuple[int, str] = (n * item, "dense")

    nonzero = arr != 0  # bit pattern nonzero: -0.0 counts as a value
    nnz = int(nonzero.sum())
    sparse_bytes = math.ceil(n / 8) + nnz * item
    if sparse_bytes < best[0]:
        best = (sparse_bytes, "sparse_bitmask")

    values: np.ndarray | None = None
    inverse: np.ndarray | None = None
    if np.unique(arr[:_CODEBOOK_PROBE]).size <= MAX_CODEBOOK:
        values, inverse = np.unique(arr, return_inverse=True)
        if values.size <= MAX_CODEBOOK:
            bits = (values.size - 1).bit_length()
            codebook_bytes = values.size * item + math.ceil(n * bits / 8)
            if codebook_bytes < best[0]:
                best = (codebook_bytes, "codebook")

    encoding = best[1]
    if encoding == "sparse_bitmask":
        mask = np.packbits(nonzero, bitorder="little").tobytes()
        return encoding, mask + _raw(arr[nonzero]), {"nnz": nnz}
    if encoding == "codebook":
        if values is None or inverse is None:  # internal invariant: both are set when codebook won
            raise RuntimeError("codebook encoding chosen without a codebook")
        bits = (values.size - 1).bit_length()
        blob = _raw(values) + _pack_indices(inverse.astype(np.uint8).reshape(-1), bits)
        return encoding, blob, {"k": int(values.size), "bits": bits}
    return "dense", _raw(arr), {}


def save_compact(state: dict[str, torch.Tensor], path: Path, meta: dict[str, Any]) -> int:
    """Write `state` (name → tensor) and `meta` (JSON-serialisable) to `path`; return its bytes.

    The file is written to a temporary name and renamed, so a crash never leaves a
    half-written file at `path`.
    """
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    offset = 0
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ArtifactError(f"cannot write {name!r} to a compact file: expected a torch.Tensor, got {type(tensor)}")
        dtype = _dtype_name(tensor)
        if dtype not in _DTYPES:
            raise ArtifactError(
                f"cannot write tensor {name!r} of dtype {dtype} to a compact file; supported: {', '.join(_DTYPES)}"
            )
        spec = _DTYPES[dtype]
        encoding, blob, fields = _encode(_to_storage(tensor, spec), spec)
        entries.append(
            {
                "name": name,
                "dtype": dtype,
                "shape": list(tensor.shape),
                "encoding": encoding,
                "offset": offset,
                "nbytes": len(blob),
                **fields,
            }
        )
        blobs.append(blob)
        offset += len(blob)

    payload = b"".join(blobs)
    header = {"meta": meta, "payload": {"codec": "zstd", "bytes": len(payload)}, "tensors": entries}
    try:
        header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"cannot write compact file {path}: meta is not JSON-serialisable ({err})") from err
    compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, write_content_size=True).compress(
        payload
    )
    prelude = _PRELUDE.pack(MAGIC, FORMAT_VERSION, 0, len(header_bytes), zlib.crc32(header_bytes))
    data = prelude + header_bytes + compressed
    with atomic_output(Path(path)) as tmp:
        tmp.write_bytes(data)
    return len(data)


def _parse_header(data: bytes, path: Path) -> tuple[dict[str, Any], int]:
    """Validate the prelude and header; return (header, offset of the payload)."""
    if len(data) < _PRELUDE.size:
        raise ArtifactError(f"{path} is not a modelshrink compact file: only {len(data)} bytes")
    magic, version, _reserved, header_len, header_crc = _PRELUDE.unpack_from(data)
    if magic != MAGIC:
        raise ArtifactError(f"{path} is not a modelshrink compact file: magic bytes {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        hint = "upgrade modelshrink to read it" if version > FORMAT_VERSION else "it is not a version ever written"
        raise ArtifactError(
            f"{path} is compact format version {version}; this modelshrink reads version {FORMAT_VERSION} ({hint})"
        )
    end = _PRELUDE.size + header_len
    if end > len(data):
        raise ArtifactError(f"{path} is truncated: header needs {end} bytes, file has {len(data)}")
    header_bytes = data[_PRELUDE.size : end]
    if zlib.crc32(header_bytes) != header_crc:
        raise ArtifactError(f"{path} is corrupt: header checksum mismatch")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path} is corrupt: header is not valid JSON ({err})") from err
    if not isinstance(header, dict) or not all(k in header for k in ("meta", "payload", "tensors")):
        raise ArtifactError(f"{path} is corrupt: header lacks 'meta', 'payload' or 'tensors'")
    return header, end


def read_compact_header(path: Path) -> dict[str, Any]:
    """The parsed JSON header of a compact file: meta, payload size and per-tensor encodings."""
    path = Path(path)
    data = _read(path)
    return _parse_header(data, path)[0]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"cannot read compact file {path}: {err}") from err


def _expected_nbytes(entry: dict[str, Any], n: int, item: int) -> int:
    encoding = entry["encoding"]
    if encoding == "dense":
        return n * item
    if encoding == "sparse_bitmask":
        return math.ceil(n / 8) + int(entry["nnz"]) * item
    if encoding == "codebook":
        return int(entry["k"]) * item + math.ceil(n * int(entry["bits"]) / 8)
    raise ArtifactError(f"unknown encoding {encoding!r}; known: dense, sparse_bitmask, codebook")


def _decode(entry: dict[str, Any], blob: bytes, spec: _DType, n: int) -> np.ndarray:
    le = _le(spec.storage)
    encoding = entry["encoding"]
    if encoding == "dense":
        return np.frombuffer(blob, dtype=le, count=n)
    if encoding == "sparse_bitmask":
        nnz = int(entry["nnz"])
        mask_len = math.ceil(n / 8)
        mask = np.unpackbits(np.frombuffer(blob[:mask_len], dtype=np.uint8), count=n, bitorder="little").astype(bool)
        if int(mask.sum()) != nnz:
            raise ArtifactError(f"bitmask has {int(mask.sum())} set bits but the header says nnz={nnz}")
        out = np.zeros(n, dtype=spec.storage)
        out[mask] = np.frombuffer(blob[mask_len:], dtype=le, count=nnz)
        return out
    k, bits = int(entry["k"]), int(entry["bits"])
    if not 1 <= k <= MAX_CODEBOOK or bits != (k - 1).bit_length():
        raise ArtifactError(f"codebook with k={k}, bits={bits} is not valid")
    values = np.frombuffer(blob[: k * spec.storage.itemsize], dtype=le, count=k)
    idx = _unpack_indices(blob[k * spec.storage.itemsize :], n, bits)
    if n and int(idx.max()) >= k:
        raise ArtifactError(f"codebook index {int(idx.max())} out of range for k={k}")
    return values[idx]


def load_compact(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a compact file; return (name → tensor, meta), bit-exact to what was saved.

    Raises ArtifactError when the file is not a compact file, is of another format
    version, or is truncated or corrupt.
    """
    path = Path(path)
    data = _read(path)
    header, start = _parse_header(data, path)
    payload_len = header["payload"].get("bytes") if isinstance(header["payload"], dict) else None
    if not isinstance(payload_len, int) or payload_len < 0:
        raise ArtifactError(f"{path} is corrupt: header has no valid payload size")
    try:
        # max_output_size bounds memory if a corrupt frame claims a huge size.
        payload = zstandard.ZstdDecompressor().decompress(data[start:], max_output_size=payload_len)
    except zstandard.ZstdError as err:
        raise ArtifactError(f"{path} is truncated or corrupt: payload does not decompress ({err})") from err
    if len(payload) != payload_len:
        raise ArtifactError(f"{path} is corrupt: payload is {len(payload)} bytes, header says {payload_len}")

    if not isinstance(header["tensors"], list):
        raise ArtifactError(f"{path} is corrupt: 'tensors' is not a list")
    state: dict[str, torch.Tensor] = {}
    for entry in header["tensors"]:
        label = entry.get("name") if isinstance(entry, dict) else None
        try:
            name = str(entry["name"])
            spec = _DTYPES[entry["dtype"]]
            shape = [int(s) for s in entry["shape"]]
            n = math.prod(shape)
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
            if min([offset, nbytes, *shape], default=0) < 0 or offset + nbytes > payload_len:
                raise ArtifactError(f"blob [{offset}, {offset + nbytes}) lies outside the {payload_len}-byte payload")
            expected = _expected_nbytes(entry, n, spec.storage.itemsize)
            if nbytes != expected:
                raise ArtifactError(f"blob is {nbytes} bytes, its encoding needs {expected}")
            flat = _decode(entry, payload[offset : offset + nbytes], spec, n)
            state[name] = _from_storage(flat, spec, shape)
        except ArtifactError as err:
            raise ArtifactError(f"{path} is corrupt: tensor {label!r}: {err}") from err
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ArtifactError(f"{path} is corrupt: bad tensor entry {entry!r:.200} ({err!r})") from err
    meta = header["meta"]
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path} is corrupt: meta is not a JSON object")
    return state, meta
