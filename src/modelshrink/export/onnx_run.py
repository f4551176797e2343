"""Run and inspect ONNX files: an ONNX Runtime classifier and the initializers' dtypes and bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from modelshrink.errors import ArtifactError, ConfigError

_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
_PACKED = {"int4", "uint4", "float4e2m1", "int2", "uint2"}  # several elements per byte: no count check


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph stores: initializers, sparse ones, node attributes, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def _external_bytes(t: onnx.TensorProto, base: Path, path: Path) -> int:
    """The bytes an external-data tensor points at, refusing a location outside the model's folder."""
    entries = {e.key: e.value for e in t.external_data}
    where = entries.get("location", "")
    target = (base / where).resolve()
    if not where or Path(where).is_absolute() or ".." in Path(where).parts or not target.is_relative_to(base):
        raise ArtifactError(
            f"{path}: tensor {t.name!r} keeps its data at {where!r}, outside the model's folder; "
            "refused (never read): keep external data files beside the .onnx file"
        )
    if not target.is_file():
        raise ArtifactError(f"{path}: tensor {t.name!r} keeps its data in {where!r}, which is missing")
    try:
        offset, length = int(entries.get("offset", 0)), int(entries.get("length", -1))
    except ValueError as err:
        raise ArtifactError(f"{path}: tensor {t.name!r} has a bad external-data offset or length ({err})") from err
    size = target.stat().st_size
    length = size - offset if length < 0 else length
    if offset < 0 or offset + length > size:
        raise ArtifactError(f"{path}: tensor {t.name!r} reads bytes [{offset}, {offset + length}) of {where!r}, "
                            f"which has {size}; the file is truncated or not its data")  # fmt: skip
    return length


def _check_tensor(t: onnx.TensorProto, base: Path, path: Path) -> None:
    """A tensor's declared size must be what the file (or its external data) holds: no huge allocation."""
    if any(d < 0 for d in t.dims):
        raise ArtifactError(f"{path}: tensor {t.name!r} has a negative dimension {list(t.dims)}")
    elements = int(np.prod(t.dims, dtype=object)) if t.dims else 1
    dtype = onnx.TensorProto.DataType.Name(t.data_type).lower()
    if t.data_location == onnx.TensorProto.EXTERNAL:
        held, unit = _external_bytes(t, base, path), "bytes"
    elif t.raw_data:
        held, unit = len(t.raw_data), "bytes"
    else:
        held, unit = sum(len(getattr(t, f)) for f in _TYPED_FIELDS), "elements"
    if dtype in _PACKED or t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return
    want = (
        elements * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize if unit == "bytes" else elements
    )
    if t.data_type == onnx.TensorProto.COMPLEX64 or t.data_type == onnx.TensorProto.COMPLEX128:
        want = want if unit == "bytes" else 2 * elements
    if held != want:
        raise ArtifactError(f"{path}: tensor {t.name!r} declares shape {list(t.dims)} ({want:,} {unit} of {dtype}) "
                            f"but holds {held:,}; the file is corrupt")  # fmt: skip


def check_onnx_file(path: Path) -> onnx.ModelProto:
    """An ONNX file's graph, loaded without its external data, refused when a tensor's external data
    lies outside the file's folder (never read) or a declared size is not what the file holds."""
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError, OSError
        raise ArtifactError(f"{str(path)!r} is not a readable ONNX model ({err}); pass an .onnx file") from err
    base = path.resolve().parent
    for t in _tensors(model.graph):
        _check_tensor(t, base, path)
    return model


_ORT_TO_NUMPY = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


class OnnxClassifier:
    """Run an ONNX classifier with ONNX Runtime on CPU, with a fixed thread count.

    An ONNX file is a graph of standard operators and tensors; loading it runs no code
    from the file (no custom-op libraries are registered).
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        self.path = Path(path)
        check_onnx_file(self.path)  # before ONNX Runtime reads any external data
        opts = ort.SessionOptions()
        # Fixed threads: latency comparable across runs (STYLE.md); inter-op 1 as the graphs are sequential.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only; ORT warns about unused initializers otherwise
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own Fail/InvalidProtobuf/NoSuchFile types
            raise ArtifactError(f"cannot load ONNX model {self.path}: {err}") from err
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        self._input_dtype = _ORT_TO_NUMPY.get(inp.type, np.float32)
        self._output_dim = self.session.get_outputs()[0].shape[-1]

    def predict_logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits for every row of `x`, computed in batches of `batch_size`: (N, labels) float32."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        x = np.asarray(x, dtype=self._input_dtype)
        if len(x) == 0:
            width = self._output_dim if isinstance(self._output_dim, int) else 0
            return np.zeros((0, width), dtype=np.float32)
        outs = [
            self.session.run(None, {self.input_name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(outs).astype(np.float32, copy=False)


_ONNX_DTYPE_NAMES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}
_FLOAT_NAMES = {"float32", "float16", "bfloat16", "float64"}
_INT8_NAMES = {"int8", "uint8"}


def onnx_weight_stats(path: Path) -> dict[str, Any]:
    """Initializer dtypes and bytes of an ONNX file, to report honestly what was quantized.

    Returns a dict with `initializers` (name, dtype, shape, elements, bytes, one per
    initializer), `bytes_by_dtype`, `int8_bytes` (int8 + uint8), `float_bytes`,
    `total_bytes`, and `op_types` (operator name → count, e.g. DynamicQuantizeLSTM).
    """
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError, OSError
        raise ArtifactError(f"cannot read ONNX model {path}: {err}") from err
    inits: list[dict[str, Any]] = []
    by_dtype: dict[str, int] = {}
    for init in model.graph.initializer:
        dtype = _ONNX_DTYPE_NAMES.get(init.data_type, onnx.TensorProto.DataType.Name(init.data_type).lower())
        nbytes = int(numpy_helper.to_array(init).nbytes)
        elements = int(np.prod(init.dims, dtype=np.int64))
        inits.append(
            {"name": init.name, "dtype": dtype, "shape": list(init.dims), "elements": elements, "bytes": nbytes}
        )
        by_dtype[dtype] = by_dtype.get(dtype, 0) + nbytes
    op_types: dict[str, int] = {}
    for node in model.graph.node:
        op_types[node.op_type] = op_types.get(node.op_type, 0) + 1
    return {
        "initializers": inits,
        "bytes_by_dtype": by_dtype,
        "int8_bytes": sum(v for k, v in by_dtype.items() if k in _INT8_NAMES),
        "float_bytes": sum(v for k, v in by_dtype.items() if k in _FLOAT_NAMES),
        "total_bytes": sum(by_dtype.values()),
        "op_types": op_types,
    }
