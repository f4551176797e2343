"""ONNX artifacts: float32, float16 and int8 files, and an ONNX Runtime classifier to run them.

Exporter: torch 2.13 offers the torch.export-based exporter (`dynamo=True`, the default)
and the older TorchScript exporter (`dynamo=False`, deprecated but present). Measured on
the reference LSTM (Embedding(10000, 32) → LSTM(64) → Linear(6)), 2 CPU cores:
TorchScript 0.15 s, dynamo 17 s (plus console noise). TorchScript also writes the LSTM
weights as plain initializers (W, R, B), which `quantize_dynamic` needs to quantize the
LSTM; the dynamo graph slices the recurrent weight at run time, so R cannot be quantized.
The runner exports about six files per seed, so TorchScript is the default; the dynamo
exporter is the fallback when TorchScript is missing (a future torch) or fails on a model.
The fallback is fragile for LSTMs: in torch 2.13 a second torch.export of an LSTM in one
process silently fixes the sequence axis, so every export is checked for its dynamic axes.

Quantization is ONNX Runtime's (`onnxruntime.quantization`), not PyTorch's own eager-mode quantization,
which is deprecated. What each mode stores, checked with `onnx_weight_stats`:

- ``int8_dynamic``: int8 weights, float activations quantized on the fly (TFLite's
  dynamic-range mode). Covers LSTM (W and R → DynamicQuantizeLSTM), MatMul/Gemm
  (ORT rewrites Gemm to MatMul first → MatMulInteger), Conv (ConvInteger) and Gather
  (the embedding table, stored as uint8 with a zero point: ORT quantizes Gather's table
  with the activation type). LSTM biases and Gemm biases stay float32.
- ``int8_static``: QDQ format, activations calibrated on `calibration` batches. Covers
  Gather, Gemm/MatMul, Conv and more, but not LSTM: ONNX Runtime has no QDQ LSTM, so
  an LSTM's weights stay float32 in this mode.

Both int8 modes use `reduce_range=True` (7-bit weight range): ONNX Runtime's u8s8 integer
kernels on x86 CPUs without VNNI (AVX2 `vpmaddubsw`) saturate with full 8-bit weights. On
a random reference LSTM, full range changed the argmax of 6% of inputs against float32,
7-bit 1% (max logit error 0.040 vs 0.004). The file is the same size either way.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from modelshrink.errors import ArtifactError, ConfigError, IncompatibleModelError
from modelshrink.export._atomic import atomic_output
from modelshrink.techniques.base import ExportFormat

FORMATS: tuple[ExportFormat, ...] = ("fp32", "fp16", "int8_dynamic", "int8_static", "int8_weights")
# Opset 17 runs on ONNX Runtime ≥ 1.14 (including its mobile builds) and has all we need.
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

# Logger families that print progress, warnings or graph dumps during export/quantization.
_NOISY_PREFIXES = ("torch", "onnx", "onnxscript", "onnx_ir")


class _DropLibraryWarnings(logging.Filter):
    """Drop below-error records that ONNX Runtime's quantizer logs on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


def _noisy_loggers() -> list[logging.Logger]:
    # torch sets levels on many of its own loggers (torch._dynamo, torch.fx...), so raising
    # the parent's level is not enough; loggers created later inherit from the parents.
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in _NOISY_PREFIXES]
    return [logging.getLogger(n) for n in sorted(set(names) | set(_NOISY_PREFIXES))]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter/quantizer chatter so a CLI progress bar stays clean; errors still raise.

    Changes process-wide logging and warning state for the duration: not thread-safe.
    """
    saved = {logger: logger.level for logger in _noisy_loggers()}
    root_filter = _DropLibraryWarnings()
    logging.getLogger().addFilter(root_filter)
    for logger in saved:
        logger.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),  # the dynamo exporter prints progress lines
            contextlib.redirect_stderr(io.StringIO()),  # torch.export prints partial graphs on failure
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger().removeFilter(root_filter)
        for logger, level in saved.items():
            logger.setLevel(level)


def _dynamic_axes(example_input: torch.Tensor) -> dict[str, dict[int, str]]:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    # Token ids (B, T): sequences of other lengths must run too.
    if example_input.dim() == 2 and not example_input.is_floating_point():
        axes[INPUT_NAME][1] = "seq"
    return axes


def _export_torchscript(model: nn.Module, example_input: torch.Tensor, path: Path, names: dict[str, Any]) -> None:
    torch.onnx.export(
        model,
        (example_input,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        dynamic_axes=_dynamic_axes(example_input),
        **names,
    )


def _check_dynamic_axes(path: Path, example_input: torch.Tensor) -> None:
    """Raise if an axis that must be dynamic came out fixed (torch.export can do this silently)."""
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    for axis, name in _dynamic_axes(example_input)[INPUT_NAME].items():
        if axis >= len(dims) or not dims[axis].dim_param:
            fixed = dims[axis].dim_value if axis < len(dims) else "missing"
            raise IncompatibleModelError(f"the exporter fixed the {name!r} axis {axis} of the input to {fixed}")


def _export_fp32(model: nn.Module, example_input: torch.Tensor, path: Path) -> None:
    """Export `model` (already in eval mode) to a float32 ONNX file at `path`."""
    names: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    errors: list[str] = []
    for label, exporter in (("TorchScript", _export_torchscript), ("torch.export", _export_dynamo)):
        try:
            with _quiet():
                exporter(model, example_input, path, names)
            _check_dynamic_axes(path, example_input)
            return
        except Exception as err:  # any exporter failure: try the next one, report all at the end
            errors.append(f"{label} exporter: {type(err).__name__}: {err}")
    raise IncompatibleModelError(
        f"cannot export {type(model).__name__} to ONNX; " + "; ".join(errors) + ". Simplify the forward "
        "(no data-dependent control flow, no Python-side shape logic) or export the model yourself."
    )


def _export_dynamo(model: nn.Module, example_input: torch.Tensor, path: Path, names: dict[str, Any]) -> None:
    # torch.export specializes axes whose example size is 0 or 1; a doubled example avoids that.
    for axis in _dynamic_axes(example_input)[INPUT_NAME]:
        if example_input.shape[axis] < 2:
            example_input = torch.cat([example_input, example_input], dim=axis)
    # Explicit Dims, not `dynamic_axes`: with the latter (Dim.DYNAMIC) a second export of an
    # LSTM in the same process failed in torch 2.13 ("inferred a static shape of 66"). With
    # Dims it "succeeds" but fixes the sequence axis, which _check_dynamic_axes catches.
    dims = {axis: torch.export.Dim(name) for axis, name in _dynamic_axes(example_input)[INPUT_NAME].items()}
    torch.onnx.export(
        model,
        (example_input,),
        str(path),
        dynamo=True,
        opset_version=18,  # the dynamo exporter's minimum
        external_data=False,  # keep the weights inside the one file
        dynamic_shapes=(dims,),
        verbose=False,
        **names,
    )


class _BatchReader:
    """A CalibrationDataReader over input batches (duck-typed: ORT calls get_next only)."""

    def __init__(self, batches: Iterable[torch.Tensor | np.ndarray], input_name: str = INPUT_NAME) -> None:
        self._it, self._name = iter(batches), input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        if batch is None:
            return None
        return {self._name: batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch}

    def rewind(self) -> None:  # some ORT calibrators call rewind; one pass is all MinMax needs
        pass


def _to_fp16(src: Path, dst: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers still feed float32 / int64 and get float32 logits. ORT's CPU
    # provider inserts casts around ops with no float16 kernel (measured: LSTM and Gemm run).
    converted = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(converted, str(dst))


def _to_int8_dynamic(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # op_types_to_quantize=None: every op type ORT can quantize dynamically
    # (LSTM, MatMul incl. Gemm rewritten to MatMul, Conv, Gather, Attention, ...).
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False, reduce_range=True)


def _to_int8_static(src: Path, dst: Path, calibration: Iterable[torch.Tensor | np.ndarray], input_name: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    # QDQ is ORT's recommended static format on CPU; quant_pre_process (3 s on the LSTM)
    # changed nothing for these models, so it is not run.
    quantize_static(
        str(src),
        str(dst),
        _BatchReader(calibration, input_name),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=False,
        reduce_range=True,
        calibrate_method=CalibrationMethod.MinMax,
    )


# Weight inputs `_to_int8_weights` stores as int8: op type → {input index: output-channel axis in ONNX layout}.
# Gemm's B is (out, in) with transB=1 (torch's Linear), else (in, out); LSTM/GRU/RNN W, R are (dirs, gates·H, in).
_INT8_WEIGHT_INPUTS: dict[str, dict[int, int]] = {
    "Gemm": {1: 0}, "MatMul": {1: 1}, "Gather": {0: 1}, "Conv": {1: 0},
    "LSTM": {1: 1, 2: 1}, "GRU": {1: 1, 2: 1}, "RNN": {1: 1, 2: 1},
}  # fmt: skip


def int8_weight_grid(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Symmetric int8 values and scales of `w`: (q int8, scales float32, axis or None for per tensor).

    Per tensor (scale max|w| / 127) when `w` already lies on that grid — a cluster-preserving
    QAT tensor — otherwise per channel along `axis` (scale max|w_c| / 127), as quant.qat simulates.
    """
    absmax = float(np.abs(w).max()) if w.size else 0.0
    scale = np.float32(absmax / 127 if absmax > 0 else 1.0)
    q = np.round(w / scale)
    if np.abs(q * scale - w).max(initial=0.0) <= 1e-6 * max(absmax, 1e-30):
        return np.clip(q, -127, 127).astype(np.int8), np.array(scale, dtype=np.float32), None
    other = tuple(d for d in range(w.ndim) if d != axis)
    scales = (np.abs(w).max(axis=other, keepdims=True) / np.float32(127)).astype(np.float32)
    scales = np.where(scales > 0, scales, np.float32(1.0))
    q = np.clip(np.round(w / scales), -127, 127).astype(np.int8)
    return q, scales.reshape(-1), axis


def _to_int8_weights(src: Path, dst: Path) -> None:
    """Weight-only int8: each weight initializer → int8 + scales + DequantizeLinear (ONNX opset ≥ 13).

    Written here rather than with ONNX Runtime's quantize_dynamic, which quantizes an embedding
    (Gather) as uint8 with one asymmetric range: this file reproduces exactly the per-channel
    symmetric grid quant.qat trains on. Activations and compute stay float32.
    """
    model = onnx.load(str(src))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    axes: dict[str, int] = {}
    for node in graph.node:
        for index, axis in _INT8_WEIGHT_INPUTS.get(node.op_type, {}).items():
            if index >= len(node.input) or node.input[index] not in inits:
                continue
            if node.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in node.attribute):
                axis = 1
            axes.setdefault(node.input[index], axis)
    dequantize: list[onnx.NodeProto] = []
    for name, axis in axes.items():
        init = inits[name]
        w = numpy_helper.to_array(init)
        if w.dtype != np.float32 or w.ndim < 2:
            continue
        q, scales, q_axis = int8_weight_grid(w, axis)
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(q, f"{name}_int8"),
                                  numpy_helper.from_array(scales, f"{name}_scale")])  # fmt: skip
        node = onnx.helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [name],
                                     name=f"{name}_dequantize")  # fmt: skip
        if q_axis is not None:
            node.attribute.append(onnx.helper.make_attribute("axis", q_axis))
        dequantize.append(node)
    # The DequantizeLinear nodes produce the old initializer names, so consumers are unchanged;
    # they go first to keep the graph topologically sorted.
    nodes = dequantize + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: Path,
    fmt: ExportFormat = "fp32",
    calibration: Iterable[torch.Tensor] | None = None,
) -> Path:
    """Write `model` as an ONNX file in format `fmt` at `path`; return `path`.

    The graph has a dynamic batch axis, and a dynamic sequence axis for 2-D integer
    inputs (token ids). "int8_static" needs `calibration` input batches. The file is
    written to a temporary name and renamed, so a crash never leaves a partial file.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown ONNX export format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "int8_static" and calibration is None:
        raise ConfigError("format 'int8_static' needs calibration batches; pass calibration=[...] input tensors")
    path = Path(path)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()  # dropout off, and the graph records inference behaviour
    try:
        with tempfile.TemporaryDirectory(prefix="modelshrink-onnx-") as work:
            fp32 = Path(work) / "fp32.onnx"
            with torch.no_grad():
                _export_fp32(model, example_input.to(device), fp32)
            convert_onnx(fp32, path, fmt, calibration or [])  # None was rejected above for int8_static
    finally:
        model.train(was_training)
    return path


def convert_onnx(
    src: Path, dst: Path, fmt: str, calibration: Iterable[torch.Tensor | np.ndarray] = (), input_name: str = INPUT_NAME
) -> None:
    """Write the float32 ONNX file `src` as `dst` in format `fmt` (atomically; ORT's chatter silenced).

    "int8_static" calibrates on `calibration` batches fed to the graph input `input_name`.
    """
    with atomic_output(dst) as tmp, _quiet():
        if fmt == "fp32":
            tmp.write_bytes(Path(src).read_bytes())
        elif fmt == "fp16":
            _to_fp16(src, tmp)
        elif fmt == "int8_dynamic":
            _to_int8_dynamic(src, tmp)
        elif fmt == "int8_weights":
            _to_int8_weights(src, tmp)
        elif fmt == "int8_static":
            _to_int8_static(src, tmp, calibration, input_name)
        else:
            raise ConfigError(f"unknown ONNX export format {fmt!r}; known: {', '.join(FORMATS)}")


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
