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

Each tensor's blob is the smallest of a few encodings (positions × values × entropy coding,
an int8 tensor with its per-channel scales): compact_codec.py.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import zstandard
from torch import nn

from modelshrink.errors import ArtifactError
from modelshrink.export._atomic import atomic_output
from modelshrink.export.compact_codec import ZSTD_LEVEL, decode_tensor, encode_tensor
from modelshrink.export.int8 import Int8Tensor, dequantize_int8, int8_weight_only

# Int8Tensor, int8_weight_only and dequantize_int8 live in export.int8 and stay importable from here.
__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Int8Tensor",
    "dequantize_int8",
    "int8_weight_only",
    "load_compact",
    "load_model",
    "read_compact_header",
    "save_compact",
    "save_model",
]

FORMAT_VERSION = 3  # 3: entropy coding `shuffle_zstd` (and its `lanes`); version 2 files still load
READABLE_VERSIONS = (2, 3)
MAGIC = b"MSHK"
MAX_HEADER_BYTES = 64 << 20  # a corrupt header cannot make the reader allocate more

_PRELUDE = struct.Struct("<4sHHII")  # magic, version, flags, header length, header CRC-32


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
        entry, coded = encode_tensor(name, tensor, quantized.get(name))
        entry.update(offset=offset, nbytes=len(coded))
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
    if version not in READABLE_VERSIONS:
        hint = "upgrade modelshrink to read it" if version > FORMAT_VERSION else "re-export it with this modelshrink"
        raise ArtifactError(
            f"{path} is compact format version {version}; this modelshrink reads version {FORMAT_VERSION} "
            f"(and {', '.join(map(str, READABLE_VERSIONS[:-1]))}; {hint})"
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
            state[str(entry["name"])] = decode_tensor(entry, payload)
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
