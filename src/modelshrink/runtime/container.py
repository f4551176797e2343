"""The compact file's container, read with the standard library, numpy and zstandard only.

Layout (docs/compact-format.md; version 3):

    0   4  magic b"MSHK"          4  2  format version (uint16, little-endian)
    6   2  flags, 0               8  4  header length H (uint32)
    12  4  CRC-32 of the H header bytes
    16  H  header: one zstandard frame holding UTF-8 JSON
    16+H P payload: the tensors' blobs back to back, then (version 3) the zstd'd ONNX graph
           without its weights; P and its SHA-256 are in the header

Version 3 adds the header's "graph" entry; version 2 files (no graph) still load in PyTorch.
Reading parses JSON and raw little-endian numbers, nothing else: no pickle, no code from the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import zstandard

from modelshrink.runtime.codec import MAX_EXPANSION, decode_limit, zstd_decompress
from modelshrink.runtime.errors import ArtifactError

FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)  # 2: weights and metadata only; 3: also the ONNX graph
MAGIC = b"MSHK"
MAX_HEADER_BYTES = 64 << 20  # a corrupt header cannot make the reader allocate more
PRELUDE = struct.Struct("<4sHHII")  # magic, version, flags, header length, header CRC-32


def read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ArtifactError(f"cannot read compact file {path}: {err}") from err


def parse_header(data: bytes, path: Path) -> tuple[dict[str, Any], int]:
    """Validate the prelude and header; return (header, offset of the payload)."""
    if len(data) < len(MAGIC):
        raise ArtifactError(
            f"{path} is not a modelshrink compact file (truncated: {len(data)} bytes); "
            "pass a complete weights.msz written by modelshrink"
        )
    if data[: len(MAGIC)] != MAGIC:
        raise ArtifactError(
            f"{path} is not a modelshrink compact file: it starts with {data[:4]!r}, expected {MAGIC!r} (magic bytes); "
            "pass a weights.msz written by modelshrink"
        )
    if len(data) < PRELUDE.size:
        raise ArtifactError(f"{path} is truncated: {len(data)} bytes, shorter than the {PRELUDE.size}-byte prelude")
    _magic, version, _flags, header_len, header_crc = PRELUDE.unpack_from(data)
    if version not in READABLE_VERSIONS:
        hint = "upgrade modelshrink to read it" if version > FORMAT_VERSION else "re-export it with this modelshrink"
        raise ArtifactError(
            f"{path} is compact format version {version}; this modelshrink reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} ({hint})"
        )
    end = PRELUDE.size + header_len
    if end > len(data):
        raise ArtifactError(f"{path} is truncated: the header needs {end} bytes, the file has {len(data)}")
    header_bytes = data[PRELUDE.size : end]
    if zlib.crc32(header_bytes) != header_crc:
        raise ArtifactError(f"{path} is corrupt: header checksum (CRC-32) mismatch")
    try:
        header_json = zstd_decompress(header_bytes, MAX_HEADER_BYTES)
        header = json.loads(header_json.decode("utf-8"))
    except (zstandard.ZstdError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path} is corrupt: header is not zstd-compressed JSON ({err})") from err
    if not isinstance(header, dict) or not all(k in header for k in ("meta", "payload", "tensors")):
        raise ArtifactError(f"{path} is corrupt: header lacks 'meta', 'payload' or 'tensors'")
    if not isinstance(header["tensors"], list) or not isinstance(header["meta"], dict):
        raise ArtifactError(f"{path} is corrupt: 'tensors' is not a list or 'meta' not a JSON object")
    header["version"] = version  # the prelude's, which the checksum-free JSON cannot contradict
    return header, end


def read_compact_file(path: Path) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of a compact file, with its size and SHA-256 checked; ArtifactError otherwise."""
    path = Path(path)
    data = read_bytes(path)
    header, start = parse_header(data, path)
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
    declared, limit = declared_bytes(header["tensors"]), decode_limit(len(data))
    if declared > limit:
        raise ArtifactError(
            f"{path} is corrupt: its tensors declare {declared:,} bytes, more than {MAX_EXPANSION} times the "
            f"file's {len(data):,} bytes; re-export it with modelshrink"
        )
    return header, payload


def declared_bytes(tensors: list[Any]) -> int:
    """The bytes the tensor entries say they decode to (entries that do not parse count 0: decoding refuses them)."""
    total = 0
    for entry in tensors:
        try:
            shape = [int(s) for s in entry["shape"]]
            n = 1 if not shape else math.prod(max(s, 0) for s in shape)
            total += n * max(1, _ITEM.get(str(entry["dtype"]), 1))
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
    return total


_ITEM = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int16": 2, "int32": 4, "int64": 8}


def tensor_error(path: Path, entry: Any, err: Exception) -> ArtifactError:
    """The one message for a tensor entry that does not decode."""
    if isinstance(err, ArtifactError):
        label = entry.get("name") if isinstance(entry, dict) else None
        return ArtifactError(f"{path} is corrupt: tensor {label!r}: {err}")
    return ArtifactError(f"{path} is corrupt: bad tensor entry {entry!r:.200} ({err!r})")


TENSOR_ERRORS = (ArtifactError, KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)


def graph_bytes(header: dict[str, Any], payload: bytes, path: Path) -> bytes:
    """The serialized ONNX model (weights marked external) a version 3 file carries; ArtifactError when none."""
    graph = header.get("graph")
    if header["version"] < 3 or graph is None:
        raise ArtifactError(
            f"{path} is compact format version {header['version']} and carries no ONNX graph, so the torch-free "
            "runtime cannot run it; load it in PyTorch (modelshrink.export.compact.load_model) or re-export it"
        )
    if not isinstance(graph, dict) or "missing" in graph:
        why = graph.get("missing") if isinstance(graph, dict) else graph
        raise ArtifactError(f"{path} carries no ONNX graph ({why}); load it in PyTorch with modelshrink instead")
    try:
        offset, nbytes, raw_nbytes = int(graph["offset"]), int(graph["nbytes"]), int(graph["raw_nbytes"])
        if offset < 0 or nbytes < 0 or offset + nbytes > len(payload):
            raise ValueError(f"blob [{offset}, {offset + nbytes}) lies outside the {len(payload)}-byte payload")
        if not 0 <= raw_nbytes <= decode_limit(len(payload)):
            raise ValueError(f"raw_nbytes={raw_nbytes} is outside 0..{decode_limit(len(payload))}")
        out = zstd_decompress(payload[offset : offset + nbytes], raw_nbytes)
    except (KeyError, TypeError, ValueError, OverflowError, zstandard.ZstdError) as err:
        raise ArtifactError(f"{path} is corrupt: its ONNX graph entry does not decode ({err})") from err
    external = graph.get("external", [])
    if not isinstance(external, list) or not all(isinstance(name, str) for name in external):
        raise ArtifactError(f"{path} is corrupt: its ONNX graph entry's 'external' is not a list of tensor names")
    if len(out) != raw_nbytes:
        raise ArtifactError(f"{path} is corrupt: ONNX graph is {len(out)} bytes, the header says {raw_nbytes}")
    return out
