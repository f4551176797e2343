"""ONNX export: a model to a float32 ONNX file, then converted to the format asked for.

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

The conversions to float16 and int8 are in onnx_quant.py, reached through the format registry
(formats.py); running a file and reading its weights is onnx_run.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from modelshrink.errors import ConfigError, IncompatibleModelError, UnknownNameError
from modelshrink.export._atomic import atomic_output
from modelshrink.export._quiet import quiet
from modelshrink.export.formats import FORMATS, ExportFormat, Format, get_format
from modelshrink.export.onnx_run import OnnxClassifier, onnx_weight_stats

# FORMATS (the registry), OnnxClassifier and onnx_weight_stats stay importable from here.
__all__ = [
    "FORMATS", "INPUT_NAME", "OUTPUT_NAME", "OnnxClassifier", "convert_onnx", "export_onnx", "onnx_weight_stats",
    "weightless_graph",
]  # fmt: skip

# Opset 17 runs on ONNX Runtime ≥ 1.14 (including its mobile builds) and has all we need.
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


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
            with quiet():
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
    spec = _format(fmt)
    if spec.needs_calibration and calibration is None:
        raise ConfigError(f"format {fmt!r} needs calibration batches; pass calibration=[...] input tensors")
    path = Path(path)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()  # dropout off, and the graph records inference behaviour
    try:
        with tempfile.TemporaryDirectory(prefix="modelshrink-onnx-") as work:
            fp32 = Path(work) / "fp32.onnx"
            with torch.no_grad():
                _export_fp32(model, example_input.to(device), fp32)
            convert_onnx(fp32, path, fmt, calibration or [])  # None was rejected above if it is needed
    finally:
        model.train(was_training)
    return path


def _format(fmt: str) -> Format:
    try:
        return get_format(fmt)
    except UnknownNameError as err:  # a bad argument value to the exporter: ConfigError, as before the registry
        raise ConfigError(str(err)) from err


def convert_onnx(
    src: Path, dst: Path, fmt: str, calibration: Iterable[torch.Tensor | np.ndarray] = (), input_name: str = INPUT_NAME
) -> None:
    """Write the float32 ONNX file `src` as `dst` in format `fmt` (atomically; ORT's chatter silenced).

    A format that needs calibration (int8_static) reads `calibration` batches fed to the graph input `input_name`.
    """
    spec = _format(fmt)
    with atomic_output(dst) as tmp, quiet():
        spec.convert(Path(src), tmp, calibration, input_name)


# The compact file's graph: weights stay in the compact file, each initializer marked "external"
# and supplied from memory by the runtime (onnxruntime's SessionOptions.add_external_initializers).
EXTERNAL_LOCATION = "modelshrink-compact"  # no such file: every external initializer must come from memory


def weightless_graph(
    model: nn.Module, example_input: torch.Tensor, state: dict[str, torch.Tensor]
) -> tuple[bytes, list[str]]:
    """The float32 ONNX model of `model` with every initializer equal to a tensor of `state` left out;
    returns (serialized ModelProto, names of the left-out initializers, which are `state` keys).

    TorchScript exporter without constant folding: the initializers keep the state dict's names and
    values (the LSTM's gate reordering stays in the graph as Slice/Concat nodes ONNX Runtime folds
    when it loads). Raises IncompatibleModelError when the model does not export.
    """
    names: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="modelshrink-graph-") as work, torch.no_grad(), quiet():
            path = Path(work) / "graph.onnx"
            torch.onnx.export(model, (example_input,), str(path), dynamo=False, opset_version=OPSET,
                              dynamic_axes=_dynamic_axes(example_input), do_constant_folding=False, **names)  # fmt: skip
            proto = onnx.load(str(path))
    except Exception as err:  # any exporter failure: the file then says it carries no graph, and why
        raise IncompatibleModelError(f"TorchScript ONNX export failed: {type(err).__name__}: {str(err)[:300]}") from err
    finally:
        model.train(was_training)
    external: list[str] = []
    for init in proto.graph.initializer:
        tensor = state.get(init.name)
        if tensor is None or tensor.dtype == torch.bfloat16:
            continue  # not a weight of the state dict (a constant the exporter made): stays in the graph
        value = onnx.numpy_helper.to_array(init)
        if list(value.shape) != list(tensor.shape) or value.tobytes() != tensor.detach().cpu().numpy().tobytes():
            continue
        init.ClearField("raw_data")
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            init.ClearField(field)
        init.data_location = onnx.TensorProto.EXTERNAL
        location = init.external_data.add()
        location.key, location.value = "location", EXTERNAL_LOCATION
        external.append(init.name)
    return proto.SerializeToString(), external
