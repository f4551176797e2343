"""Converters from a float32 ONNX file to the other formats; export/formats.py maps format names to them.

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

int8_dynamic scales each output channel (`per_channel=True`): one 7-bit range for a whole
384 x 1536 matrix of a pretrained transformer cost MiniLM 1.43 points (fine-tuned on the
emotion data: 93.63 % float32; per tensor 92.20 %, agreeing with float32 on 95.7 % of test
rows; per channel 93.57 %, 99.3 %), for 0.5 % more bytes (the scales); on the reference LSTM
both agree with float32 on 99.5-99.9 % of rows (4 trained students, 2026-12-01; docs/byo.md).

Every converter takes (src, dst, calibration, input_name); only int8_static reads the last two.
onnx and onnxruntime are imported inside the converters, so the format registry (which
techniques/base.py imports) stays light.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from modelshrink.export.int8 import int8_grid

Batches = Iterable[torch.Tensor | np.ndarray]


def to_fp32(src: Path, dst: Path, calibration: Batches, input_name: str) -> None:
    """The float32 file itself."""
    shutil.copyfile(src, dst)


class _BatchReader:
    """A CalibrationDataReader over input batches (duck-typed: ORT calls get_next only)."""

    def __init__(self, batches: Batches, input_name: str) -> None:
        self._it, self._name = iter(batches), input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        if batch is None:
            return None
        return {self._name: batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch}

    def rewind(self) -> None:  # some ORT calibrators call rewind; one pass is all MinMax needs
        pass


def to_fp16(src: Path, dst: Path, calibration: Batches, input_name: str) -> None:
    """float16 weights and compute; float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers still feed float32 / int64 and get float32 logits. ORT's CPU
    # provider inserts casts around ops with no float16 kernel (measured: LSTM and Gemm run).
    converted = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(converted, str(dst))


def to_int8_dynamic(src: Path, dst: Path, calibration: Batches, input_name: str) -> None:
    """ONNX Runtime's dynamic quantization: int8 weights, activations quantized on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # op_types_to_quantize=None: every op type ORT can quantize dynamically
    # (LSTM, MatMul incl. Gemm rewritten to MatMul, Conv, Gather, Attention, ...).
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)


def to_int8_static(src: Path, dst: Path, calibration: Batches, input_name: str) -> None:
    """ONNX Runtime's static QDQ quantization, activations calibrated on `calibration` batches."""
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


def to_int8_weights(src: Path, dst: Path, calibration: Batches, input_name: str) -> None:
    """Weight-only int8: each weight initializer → int8 + scales + DequantizeLinear (ONNX opset ≥ 13).

    Written here rather than with ONNX Runtime's quantize_dynamic, which quantizes an embedding
    (Gather) as uint8 with one asymmetric range: this file reproduces exactly the per-channel
    symmetric grid quant.qat trains on (export.int8.int8_grid). Activations and compute stay float32.
    """
    import onnx
    from onnx import numpy_helper

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
        q = int8_grid(torch.from_numpy(w.copy()), axis)  # the grid quant.qat and the compact file use
        # A per-tensor grid (quant.qat preserve_clusters) keeps one scale: DequantizeLinear without an axis.
        scales = q.scales[:1].reshape(()) if q.per_tensor else q.scales
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(q.values.numpy(), f"{name}_int8"),
                                  numpy_helper.from_array(scales.numpy(), f"{name}_scale")])  # fmt: skip
        node = onnx.helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [name],
                                     name=f"{name}_dequantize")  # fmt: skip
        if not q.per_tensor:
            node.attribute.append(onnx.helper.make_attribute("axis", axis))
        dequantize.append(node)
    # The DequantizeLinear nodes produce the old initializer names, so consumers are unchanged;
    # they go first to keep the graph topologically sorted.
    nodes = dequantize + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
