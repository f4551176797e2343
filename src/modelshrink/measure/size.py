"""Size figures of a model and of its files: parameter counts, distinct values, compressed bytes.

Theoretical figures (`dense_fp32_bytes`, `nonzeros`) come from the in-memory model;
measured ones (`file_bytes`, `gzip_bytes`, `zstd_bytes`) from a file on disk. Keep them
apart in reports (STYLE.md).
"""

from __future__ import annotations

import hashlib
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import zstandard
from torch import nn

from modelshrink.errors import ArtifactError

GZIP_LEVEL = 9  # TensorFlow Model Optimization reports sparse models' size as gzip -9 of the file
ZSTD_LEVEL = 19  # same level as the compact format's payload
_CHUNK = 1 << 20


def model_stats(model: nn.Module) -> dict[str, Any]:
    """Parameter count, nonzeros, distinct values per tensor, and dense float32 bytes.

    Returns `parameters`, `nonzeros`, `distinct_values` (parameter name → number of
    distinct values), `distinct_values_max` (max over weight tensors, i.e. parameters of
    2 or more dims: embeddings, Linear, Conv, LSTM matrices; biases are usually left
    unclustered and would hide a 16-cluster model) and `dense_fp32_bytes`
    (= parameters * 4). Buffers are not parameters and are not counted.
    """
    parameters = 0
    nonzeros = 0
    distinct: dict[str, int] = {}
    distinct_weights_max = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            parameters += p.numel()
            nonzeros += int(torch.count_nonzero(p))
            # Distinct bit patterns would split 0.0 from -0.0; distinct values is what clustering sets.
            n_distinct = int(torch.unique(p.detach()).numel())
            distinct[name] = n_distinct
            if p.dim() >= 2:
                distinct_weights_max = max(distinct_weights_max, n_distinct)
    return {
        "parameters": parameters,
        "nonzeros": nonzeros,
        "distinct_values": distinct,
        "distinct_values_max": distinct_weights_max,
        "dense_fp32_bytes": parameters * 4,
    }


def _compressed_bytes(path: Path, compressor: Any) -> int:
    """Bytes of `path` through `compressor` (compress/flush), read in chunks: a 90 MB file is never all in memory."""
    out = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            out += len(compressor.compress(chunk))
    return out + len(compressor.flush())


def file_sizes(path: Path) -> dict[str, int]:
    """Bytes of the file at `path`, and of its gzip (level 9) and zstd (level 19) compressions.

    The two compressions run side by side in two threads (zlib and zstandard release the GIL while
    they compress): each file's sizes take about half the time on 2 cores (5 s of a seed's 10 s in
    the reference comparison). A file measured again with the same bytes (the compact file as
    `compact` and as `msz_runtime`) is not compressed again: zstd level 19 runs at about 1 MB/s,
    20-70 s for one of a transformer's files, where reading its digest takes a fraction of a second."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as err:
        raise ArtifactError(f"cannot measure file {path}: {err}") from err
    key = digest.hexdigest()
    if key not in _SIZES:
        _SIZES[key] = _compressed_sizes(path)
    return dict(_SIZES[key])


_SIZES: dict[str, dict[str, int]] = {}  # SHA-256 of a file's bytes → its sizes (three ints per file measured)


def _compressed_sizes(path: Path) -> dict[str, int]:
    try:
        file_bytes = os.path.getsize(path)
        # wbits=31: a gzip container, as `gzip -9` writes (modulo the optional file name field).
        gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        zs = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj(size=file_bytes)
        with ThreadPoolExecutor(2) as pool:
            gzip_bytes, zstd_bytes = pool.map(lambda c: _compressed_bytes(path, c), (gz, zs))
    except OSError as err:
        raise ArtifactError(f"cannot measure file {path}: {err}") from err
    return {"file_bytes": file_bytes, "gzip_bytes": gzip_bytes, "zstd_bytes": zstd_bytes}
