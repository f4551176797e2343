"""modelshrink's compact model file: honest bytes for pruned, clustered and int8 models.

A dense float32 file stores a 50%-pruned or 16-cluster model in exactly as many bytes as
the original (the mistake the reference thesis made). This format stores each tensor in
the smallest of a few lossless encodings of what the techniques left (Deep Compression's
recipe: sparse positions, shared values, entropy coding), plus JSON metadata that lets
`load_model` rebuild the PyTorch model. Loading parses JSON and raw little-endian
numbers, nothing else: no pickle, no code from the file.

The byte-by-byte layout is documented in docs/compact-format.md; in short (version 2):

    0   4  magic b"MSHK"          4  2  format version (uint16, little-endian)
    6   2  flags, 0               8  4  header length H (uint32)
    12  4  CRC-32 of the H header bytes
    16  H  header: one zstandard frame holding UTF-8 JSON
    16+H P payload: the tensors' blobs back to back; P and its SHA-256 are in the header

Each tensor is coded in three layers, each choice per tensor, smallest wins:
  positions  ``all`` | ``bitmask`` (1 bit per element) | ``delta`` (gaps between
             nonzero positions, bit-packed at the widest gap's width)
  values     ``raw`` (little-endian elements) | ``codebook`` (k <= 256 distinct values,
             then ceil(log2 k)-bit indices)
  entropy    ``none`` | ``zstd`` | ``huffman`` (canonical Huffman over bytes, huffman.py)
and an int8 tensor (`quantized`) also carries one float32 scale per channel: its float32
value is exactly `int8 * scale` (see `dequantize_int8`), recomputed the same way on load.
Round trips are bit-exact: values are handled as bit patterns, never re-computed.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard
from torch import nn

from modelshrink.errors import ArtifactError
from modelshrink.export._atomic import atomic_output
from modelshrink.export.huffman import huffman_decode, huffman_encode

FORMAT_VERSION = 2
MAGIC = b"MSHK"
# Level 19 is zstandard's strongest "normal" level; on the reference LSTM (1.4 MB dense)
# it takes well under a second, and levels 20-22 ("ultra") cost much more memory for <1%.
ZSTD_LEVEL = 19
MAX_CODEBOOK = 256  # indices of at most 8 bits
MAX_HEADER_BYTES = 64 << 20  # a corrupt header cannot make the reader allocate more

_PRELUDE = struct.Struct("<4sHHII")  # magic, version, flags, header length, header CRC-32
# A quick look at the first elements rejects most dense tensors before a full np.unique.
_CODEBOOK_PROBE = 4096
POSITIONS = ("all", "bitmask", "delta")
VALUES = ("raw", "codebook")
ENTROPY = ("none", "zstd", "huffman")


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


# -- int8 weights with per-channel scales ------------------------------------------------------
@dataclass(frozen=True)
class Int8Tensor:
    """A float32 tensor stored as int8 values times one float32 scale per channel along `axis`."""

    values: torch.Tensor  # int8, the tensor's shape
    scales: torch.Tensor  # float32, (shape[axis],)
    axis: int


def dequantize_int8(q: Int8Tensor) -> torch.Tensor:
    """float32 `values * scales` (broadcast along `axis`): the one formula writer and reader use."""
    shape = [1] * q.values.dim()
    shape[q.axis] = -1
    return q.values.to(torch.float32) * q.scales.to(torch.float32).reshape(shape)


def quantize_int8(w: torch.Tensor, axis: int) -> Int8Tensor:
    """Symmetric int8 (-127..127) with one scale per channel along `axis` = max|w| / 127."""
    w = w.detach().to(torch.float32)
    dims = [d for d in range(w.dim()) if d != axis]
    amax = w.abs().amax(dim=dims) if dims else w.abs()
    scales = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))  # all-zero channel: any scale
    shape = [1] * w.dim()
    shape[axis] = -1
    values = torch.round(w / scales.reshape(shape)).clamp(-127, 127).to(torch.int8)
    return Int8Tensor(values, scales.contiguous(), axis)


def int8_weight_only(model: nn.Module) -> dict[str, Int8Tensor]:
    """Quantize `model`'s weight matrices to int8 in place (weights become `dequantize_int8` of it).

    Weights are parameters of 2 or more dims (Linear, Conv, LSTM and embedding matrices);
    biases stay float32, as in ONNX Runtime's and TFLite's dynamic-range int8. Channels are
    output channels (axis 0), except an embedding's, whose channels are its features
    (axis 1): one scale per vocabulary row would cost a float per word. Returns parameter
    name → Int8Tensor, to pass to `save_compact(quantized=...)`.
    """
    out: dict[str, Int8Tensor] = {}
    embeddings = {f"{n}.weight" if n else "weight" for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2 or not p.is_floating_point():
                continue
            q = quantize_int8(p, axis=1 if name in embeddings else 0)
            p.copy_(dequantize_int8(q).to(p.dtype))
            out[name] = q
    return out


# -- bit-level helpers ---------------------------------------------------------------------------
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


def _entropy_code(raw: bytes) -> tuple[str, bytes]:
    """The smallest of the raw bytes, zstd and Huffman (Deep Compression's last stage)."""
    options = [("none", raw)]
    if raw:
        options.append(("zstd", zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(raw)))
        huff = huffman_encode(raw)
        if huff is not None:
            options.append(("huffman", huff))
    return min(options, key=lambda o: len(o[1]))  # ties: the simpler coding, listed first


def _entropy_decode(entropy: str, blob: bytes, raw_nbytes: int) -> bytes:
    if entropy == "none":
        return blob
    if entropy == "zstd":
        try:
            return zstandard.ZstdDecompressor().decompress(blob, max_output_size=raw_nbytes)
        except zstandard.ZstdError as err:
            raise ArtifactError(f"zstd blob does not decompress ({err})") from err
    if entropy == "huffman":
        try:
            return huffman_decode(blob, raw_nbytes)
        except ValueError as err:
            raise ArtifactError(f"Huffman blob does not decode ({err})") from err
    raise ArtifactError(f"unknown entropy coding {entropy!r}; known: {', '.join(ENTROPY)}")


# -- files -----------------------------------------------------------------------------------------
def save_compact(
    state: Mapping[str, torch.Tensor],
    path: Path,
    meta: dict[str, Any],
    quantized: Mapping[str, Int8Tensor] | None = None,
) -> int:
    """Write `state` (name → tensor) and `meta` (JSON-serialisable) to `path`; return its bytes.

    Tensors named in `quantized` are stored as int8 values plus per-channel scales; each must
    equal `dequantize_int8` of its entry bit for bit (as `int8_weight_only` leaves them).
    The file is written to a temporary name and renamed, so a crash never leaves a
    half-written file at `path`.
    """
    quantized = quantized or {}
    unknown = sorted(set(quantized) - set(state))
    if unknown:
        raise ArtifactError(f"quantized tensors {unknown} are not in the state dict")
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
        entry: dict[str, Any] = {"name": name, "dtype": dtype, "shape": list(tensor.shape)}
        prefix = b""
        if name in quantized:
            q = quantized[name]
            if dtype != "float32" or not torch.equal(dequantize_int8(q).view(torch.int32), tensor.view(torch.int32)):
                raise ArtifactError(f"tensor {name!r} is not the float32 value of its int8 form; quantize it first")
            entry.update(quant="int8", axis=q.axis, channels=int(q.scales.numel()))
            prefix = _raw(q.scales.detach().to(torch.float32).numpy().view(np.uint32))
            fields, blob = _encode(_to_storage(q.values, _DTYPES["int8"]))
        else:
            fields, blob = _encode(_to_storage(tensor, _DTYPES[dtype]))
        raw = prefix + blob
        entropy, coded = _entropy_code(raw)
        entry.update(fields, raw_nbytes=len(raw), entropy=entropy, offset=offset, nbytes=len(coded))
        entries.append(entry)
        blobs.append(coded)
        offset += len(coded)

    payload = b"".join(blobs)
    header = {
        "format": "modelshrink-compact",
        "version": FORMAT_VERSION,
        "meta": meta,
        "payload": {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
        "tensors": entries,
    }
    try:
        header_json = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"cannot write compact file {path}: meta is not JSON-serialisable ({err})") from err
    header_bytes = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(header_json)
    prelude = _PRELUDE.pack(MAGIC, FORMAT_VERSION, 0, len(header_bytes), zlib.crc32(header_bytes))
    data = prelude + header_bytes + payload
    with atomic_output(Path(path)) as tmp:
        tmp.write_bytes(data)
    return len(data)


def _parse_header(data: bytes, path: Path) -> tuple[dict[str, Any], int]:
    """Validate the prelude and header; return (header, offset of the payload)."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise ArtifactError(
            f"{path} is not a modelshrink compact file: it starts with {data[:4]!r}, expected {MAGIC!r} (magic bytes)"
        )
    if len(data) < _PRELUDE.size:
        raise ArtifactError(f"{path} is truncated: {len(data)} bytes, shorter than the {_PRELUDE.size}-byte prelude")
    _magic, version, _flags, header_len, header_crc = _PRELUDE.unpack_from(data)
    if version != FORMAT_VERSION:
        hint = "upgrade modelshrink to read it" if version > FORMAT_VERSION else "re-export it with this modelshrink"
        raise ArtifactError(
            f"{path} is compact format version {version}; this modelshrink reads version {FORMAT_VERSION} ({hint})"
        )
    end = _PRELUDE.size + header_len
    if end > len(data):
        raise ArtifactError(f"{path} is truncated: the header needs {end} bytes, the file has {len(data)}")
    header_bytes = data[_PRELUDE.size : end]
    if zlib.crc32(header_bytes) != header_crc:
        raise ArtifactError(f"{path} is corrupt: header checksum (CRC-32) mismatch")
    try:
        header_json = zstandard.ZstdDecompressor().decompress(header_bytes, max_output_size=MAX_HEADER_BYTES)
        header = json.loads(header_json.decode("utf-8"))
    except (zstandard.ZstdError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path} is corrupt: header is not zstd-compressed JSON ({err})") from err
    if not isinstance(header, dict) or not all(k in header for k in ("meta", "payload", "tensors")):
        raise ArtifactError(f"{path} is corrupt: header lacks 'meta', 'payload' or 'tensors'")
    return header, end


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"cannot read compact file {path}: {err}") from err


def read_compact_header(path: Path) -> dict[str, Any]:
    """The parsed JSON header of a compact file: meta, payload size and per-tensor encodings."""
    path = Path(path)
    return _parse_header(_read(path), path)[0]


def load_compact(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a compact file; return (name → tensor, meta), bit-exact to what was saved.

    Raises ArtifactError when the file is not a compact file, is of another format
    version, or is truncated or corrupt (the payload's SHA-256 checksum is checked).
    """
    path = Path(path)
    data = _read(path)
    header, start = _parse_header(data, path)
    info = header["payload"]
    size = info.get("bytes") if isinstance(info, dict) else None
    digest = info.get("sha256") if isinstance(info, dict) else None
    if not isinstance(size, int) or size < 0 or not isinstance(digest, str):
        raise ArtifactError(f"{path} is corrupt: header has no valid payload size and checksum")
    if len(data) - start < size:
        raise ArtifactError(f"{path} is truncated: payload is {len(data) - start} bytes, the header says {size}")
    if len(data) - start > size:
        raise ArtifactError(f"{path} is corrupt: {len(data) - start - size} bytes follow the payload")
    payload = data[start:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ArtifactError(f"{path} is corrupt: payload checksum (SHA-256) mismatch")
    if not isinstance(header["tensors"], list):
        raise ArtifactError(f"{path} is corrupt: 'tensors' is not a list")

    state: dict[str, torch.Tensor] = {}
    for entry in header["tensors"]:
        label = entry.get("name") if isinstance(entry, dict) else None
        try:
            spec = _DTYPES[entry["dtype"]]
            shape = [int(s) for s in entry["shape"]]
            n = math.prod(shape)
            offset, nbytes, raw_nbytes = int(entry["offset"]), int(entry["nbytes"]), int(entry["raw_nbytes"])
            if min([offset, nbytes, *shape], default=0) < 0 or offset + nbytes > size:
                raise ArtifactError(f"blob [{offset}, {offset + nbytes}) lies outside the {size}-byte payload")
            raw = _entropy_decode(entry["entropy"], payload[offset : offset + nbytes], raw_nbytes)
            quant = entry.get("quant")
            elem = _DTYPES["int8"] if quant == "int8" else spec
            expected = _sizes(entry, n, elem.storage.itemsize)
            if len(raw) != raw_nbytes or raw_nbytes != expected:
                raise ArtifactError(f"blob is {len(raw)} bytes, its encoding needs {expected}")
            if quant is None:
                state[str(entry["name"])] = _from_storage(_decode(entry, raw, spec.storage, n), spec, shape)
                continue
            axis, channels = int(entry["axis"]), int(entry["channels"])
            if quant != "int8" or spec.torch_dtype != torch.float32 or not 0 <= axis < len(shape):
                raise ArtifactError(f"quantization {quant!r} on axis {axis} of a {entry['dtype']} tensor is not valid")
            if channels != shape[axis]:
                raise ArtifactError(f"{channels} scales for {shape[axis]} channels")
            scales = _from_storage(np.frombuffer(raw[: 4 * channels], dtype="<u4"), spec, [channels])
            values = _from_storage(_decode(entry, raw[4 * channels :], elem.storage, n), elem, shape)
            state[str(entry["name"])] = dequantize_int8(Int8Tensor(values, scales, axis))
        except ArtifactError as err:
            raise ArtifactError(f"{path} is corrupt: tensor {label!r}: {err}") from err
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise ArtifactError(f"{path} is corrupt: bad tensor entry {entry!r:.200} ({err!r})") from err
    meta = header["meta"]
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path} is corrupt: meta is not a JSON object")
    return state, meta


# -- whole models ----------------------------------------------------------------------------------
def save_model(
    model: nn.Module,
    path: Path,
    model_config: dict[str, Any],
    input_dim: int,
    labels: list[str],
    preprocessing: dict[str, Any],
    quantized: Mapping[str, Int8Tensor] | None = None,
) -> int:
    """Write `model` with what `load_model` needs to rebuild it; return the file's bytes.

    `model_config` is the ModelConfig dump of the model as it is now (a technique may have
    changed its architecture), `input_dim` its vocabulary size or input channels,
    `preprocessing` the tokenizer/normalisation settings and `labels` the class names.
    """
    meta = {
        "model": model_config,
        "input_dim": input_dim,
        "labels": list(labels),
        "preprocessing": preprocessing,
        "weights": "int8 per-channel (weight-only)" if quantized else "exact",
    }
    return save_compact({k: v.detach() for k, v in model.state_dict().items()}, path, meta, quantized)


def load_model(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the PyTorch model saved by `save_model` (eval mode); return (model, meta)."""
    from pydantic import ValidationError

    from modelshrink.models.builders import ModelConfig, build_model

    state, meta = load_compact(path)
    try:
        cfg = ModelConfig.model_validate(meta["model"])
        input_dim, labels = int(meta["input_dim"]), list(meta["labels"])
        model = build_model(cfg, input_dim, len(labels))
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, ValidationError) as err:
        raise ArtifactError(
            f"{path} holds weights but not a model modelshrink can rebuild ({type(err).__name__}: {str(err)[:300]}); "
            "write it with modelshrink.export.compact.save_model"
        ) from err
    return model.eval(), meta
