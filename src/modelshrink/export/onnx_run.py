"""Run and inspect ONNX files: an ONNX Runtime classifier and the initializers' dtypes and bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from modelshrink.errors import ArtifactError, ConfigError

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
