"""modelshrink's compact model file: honest bytes for pruned, clustered and int8 models.

A dense float32 file stores a 50%-pruned or 16-cluster model in exactly as many bytes as
the original (the mistake the reference thesis made). This format stores each tensor in
the smallest of a few lossless encodings of what the techniques left (Deep Compression's
recipe: sparse positions, shared values, entropy coding), plus JSON metadata that lets
`load_model` rebuild the PyTorch model. Loading parses JSON and raw little-endian
numbers, nothing else: no pickle, no code from the file.

The byte-by-byte layout is documented in docs/compact-format.md and read by the torch-free
runtime's container (runtime/container.py). Version 3 also carries the model's ONNX graph without
its weights (zstd'd, at the end of the payload), so `modelshrink.runtime` runs the file with ONNX
Runtime alone; version 2 files still load here, in PyTorch.

Each tensor's blob is the smallest of a few encodings (positions × values × entropy coding,
an int8 tensor with its per-channel scales): compact_codec.py.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import zstandard
from torch import nn

from modelshrink.errors import ArtifactError, IncompatibleModelError
from modelshrink.export._atomic import atomic_output
from modelshrink.export.compact_codec import ZSTD_LEVEL, decode_tensor, encode_tensor
from modelshrink.export.int8 import Int8Tensor, dequantize_int8, int8_weight_only
from modelshrink.runtime.container import (
    FORMAT_VERSION,
    MAGIC,
    PRELUDE,
    TENSOR_ERRORS,
    parse_header,
    read_bytes,
    read_compact_file,
    tensor_error,
)

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

# The graph a file carries: (ONNX model, its initializers left to the tensors) or why it has none.
Graph = tuple[bytes, list[str]] | str  # (ONNX model with weights external, their names) | why there is none


# -- files -----------------------------------------------------------------------------------------
def save_compact(
    state: Mapping[str, torch.Tensor],
    path: Path,
    meta: dict[str, Any],
    quantized: Mapping[str, Int8Tensor] | None = None,
    graph: Graph = "written without an example input to export the graph from",
) -> int:
    """Write `state` (name → tensor) and `meta` (JSON-serialisable) to `path`; return its bytes.

    `graph` is the ONNX model whose external initializers are `state` tensors (export.onnx.weightless_graph),
    stored zstd'd after the tensors, or the reason the file carries none.

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

    graph_entry: dict[str, Any]
    if isinstance(graph, str):
        graph_entry = {"missing": graph}
    else:
        onnx_bytes, external = graph
        coded = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(onnx_bytes)
        graph_entry = {"format": "onnx", "offset": offset, "nbytes": len(coded), "raw_nbytes": len(onnx_bytes),
                       "entropy": "zstd", "external": sorted(external)}  # fmt: skip
        blobs.append(coded)
    payload = b"".join(blobs)
    header = {
        "format": "modelshrink-compact",
        "version": FORMAT_VERSION,
        "meta": meta,
        "payload": {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
        "tensors": entries,
        "graph": graph_entry,
    }
    try:
        header_json = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"cannot write compact file {path}: meta is not JSON-serialisable ({err})") from err
    header_bytes = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(header_json)
    prelude = PRELUDE.pack(MAGIC, FORMAT_VERSION, 0, len(header_bytes), zlib.crc32(header_bytes))
    data = prelude + header_bytes + payload
    with atomic_output(Path(path)) as tmp:
        tmp.write_bytes(data)
    return len(data)


def read_compact_header(path: Path) -> dict[str, Any]:
    """The parsed JSON header of a compact file: meta, payload size and per-tensor encodings."""
    path = Path(path)
    return parse_header(read_bytes(path), path)[0]


def load_compact(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a compact file; return (name → tensor, meta), bit-exact to what was saved.

    Raises ArtifactError when the file is not a compact file, is of another format
    version, or is truncated or corrupt (the payload's SHA-256 checksum is checked).
    """
    path = Path(path)
    header, payload = read_compact_file(path)
    state: dict[str, torch.Tensor] = {}
    for entry in header["tensors"]:
        try:
            state[str(entry["name"])] = decode_tensor(entry, payload)
        except TENSOR_ERRORS as err:
            raise tensor_error(path, entry, err) from err
    return state, header["meta"]


# -- whole models ----------------------------------------------------------------------------------
def save_model(
    model: nn.Module,
    path: Path,
    model_config: dict[str, Any],
    input_dim: int,
    labels: list[str],
    preprocessing: dict[str, Any],
    quantized: Mapping[str, Int8Tensor] | None = None,
    example_input: torch.Tensor | None = None,
) -> int:
    """Write `model` with what `load_model` needs to rebuild it; return the file's bytes.

    With `example_input`, the file also carries the model's ONNX graph (weights left to the
    compact tensors), so `modelshrink.runtime` runs it without PyTorch; a model that does not
    export gets a file that says why it has no graph, and still loads here.

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
    state = {k: v.detach() for k, v in model.state_dict().items()}
    graph: Graph = "written without an example input to export the graph from"
    if example_input is not None:
        from modelshrink.export.onnx import weightless_graph  # ONNX only when a graph is written

        try:
            graph = weightless_graph(model, example_input, state)
        except IncompatibleModelError as err:
            graph = str(err)
    return save_compact(state, path, meta, quantized, graph)


def load_model(path: Path, build_fn: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the PyTorch model saved by `save_model` (eval mode); return (model, meta).

    A model built by the user's own function (`custom`) rebuilds only with that function: passed as
    `build_fn`, or already loaded by this process (the run that made the file); never imported from
    the path the file names."""
    from pydantic import ValidationError

    from modelshrink.models.builders import ModelConfig, build_model

    state, meta = load_compact(path)
    try:
        cfg = ModelConfig.model_validate(meta["model"])
        if cfg.name == "custom":
            from modelshrink.models.byo import trusted_build_fn

            trusted_build_fn(cfg.build or "", build_fn, path)
        input_dim, labels = int(meta["input_dim"]), list(meta["labels"])
        _check_shapes(cfg, input_dim, len(labels), state, path)
        model = build_model(cfg, input_dim, len(labels))
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, ValidationError) as err:
        raise ArtifactError(
            f"{path} holds weights but not a model modelshrink can rebuild ({type(err).__name__}: {str(err)[:300]}); "
            "write it with modelshrink.export.compact.save_model"
        ) from err
    return model.eval(), meta


def _check_shapes(cfg: Any, input_dim: int, num_labels: int, state: dict[str, torch.Tensor], path: Path) -> None:
    """The model the metadata describes, built on the meta device (no memory), must hold the file's tensor
    shapes; so a header that says `input_dim: 10**9` is refused before building allocates it."""
    from modelshrink.models.builders import build_model

    try:
        with torch.device("meta"), _NoInitOnMeta():
            wanted = {k: tuple(v.shape) for k, v in build_model(cfg, input_dim, num_labels).state_dict().items()}
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta: the real build reports it
        return
    held = {k: tuple(v.shape) for k, v in state.items()}
    if wanted != held:
        diff = sorted(k for k in wanted.keys() | held.keys() if wanted.get(k) != held.get(k))[:3]
        raise ArtifactError(
            f"{path} is corrupt: its metadata describes a model whose tensors {diff} differ from the file's; "
            "re-export it with modelshrink"
        )


# Parameter initialisers (torch.nn.init and the Tensor methods they call). On the meta device they compute
# nothing, but torch runs meta `normal_` through its reference implementations, whose first call imports
# torch._dynamo: 1.3-1.8 s of every cold start that loads a compact file in torch (measured 2026-12-01).
_INITIALISERS = {"normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                 "xavier_normal_", "orthogonal_", "zeros_", "ones_", "constant_", "zero_", "fill_"}  # fmt: skip


class _NoInitOnMeta(torch.overrides.TorchFunctionMode):
    """Initialising a meta tensor is skipped (its shape is all `_check_shapes` reads); anything else runs."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _INITIALISERS:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)
