"""int8 for ExecuTorch: PT2E quantization of a model's graph, and what it left float, read from that graph.

The quantizers (composed): torchao's `EmbeddingQuantizer` (weight-only, uint8 per row with float
scale and zero point; ExecuTorch's quant-fusion pass turns it into `quantized_decomposed::embedding_byte`,
the op its Llama export uses for `--embedding-quantize 8,0`) and XNNPACK's symmetric per-channel int8
config: static (weights and activations) for linear and conv, dynamic (int8 weights, activations
quantized per call) inside LSTMs. LSTMs are unrolled into linear ops first (models/lstm_unrolled.py):
the fused `aten.lstm` op has no quantizer and would stay float32.

`weight_summary` reads the converted graph: every constant tensor it holds is an int8 weight (fed to a
dequantize node), a quantization parameter (scales and zero points), or a float weight used directly by
an op; the float ones are named with the op that reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modelshrink.models.lstm_unrolled import UnrolledLSTM, unroll_lstms

_QUANT_OPS = ("quantize_per_tensor", "dequantize_per_tensor", "quantize_per_channel", "dequantize_per_channel",
              "choose_qparams")  # fmt: skip


@dataclass
class PteWeights:
    """The constants of a converted (int8) graph, by kind, in bytes."""

    int8_bytes: int = 0  # int8/uint8 weights read through a dequantize op
    float_bytes: int = 0  # float weights read directly by an op (biases included)
    qparam_bytes: int = 0  # scales and zero points of the int8 weights
    float_layers: list[str] = field(default_factory=list)  # "name (op)" of each float constant, largest first
    unrolled: list[str] = field(default_factory=list)  # LSTMs written out as linear ops for export

    @property
    def int8_share(self) -> float:
        """Share of the weight bytes (int8 + float, quantization parameters apart) stored as int8."""
        total = self.int8_bytes + self.float_bytes
        return self.int8_bytes / total if total else 0.0

    def describe(self) -> str:
        """One line for the row's `weights` field: int8 share, quantization parameters, what stayed float32."""
        floats = ", ".join(self.float_layers) or "none"
        return (f"int8 {100 * self.int8_share:.1f}% of weight bytes (+{self.qparam_bytes:,} B of scales and zero "
                f"points); float32: {floats}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"int8_bytes": self.int8_bytes, "float_bytes": self.float_bytes, "qparam_bytes": self.qparam_bytes,
                "int8_share": self.int8_share, "float_layers": self.float_layers, "unrolled": self.unrolled}  # fmt: skip


def _constant(gm: torch.fx.GraphModule, target: str) -> torch.Tensor | None:
    value: Any = gm
    for part in target.split("."):  # a parameter, buffer or plain attribute (folded constants) of a submodule
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def _op_name(node: torch.fx.Node) -> str:
    return str(getattr(node.target, "__name__", node.target)).split(".")[0]  # "linear.default" -> "linear"


def weight_summary(gm: torch.fx.GraphModule) -> PteWeights:
    """Classify the constants of a PT2E-converted graph (see the module docstring)."""
    out = PteWeights()
    floats: dict[str, tuple[int, set[str]]] = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr" or (value := _constant(gm, node.target)) is None:
            continue
        nbytes = value.numel() * value.element_size()
        readers = [(u, u.args.index(node) if node in u.args else -1) for u in node.users]
        quant_reads = [(u, i) for u, i in readers if any(q in _op_name(u) for q in _QUANT_OPS)]
        if value.dtype in (torch.int8, torch.uint8) and any(i == 0 for _, i in quant_reads):
            out.int8_bytes += nbytes
        elif quant_reads:  # a scale or zero point (argument 1 or 2 of a (de)quantize op)
            out.qparam_bytes += nbytes
        elif value.is_floating_point():
            out.float_bytes += nbytes
            floats[node.target] = (nbytes, {_op_name(u) for u, _ in readers})
    out.float_layers = [f"{name} ({'/'.join(sorted(ops))}, {size:,} B)"
                        for name, (size, ops) in sorted(floats.items(), key=lambda kv: -kv[1][0])]  # fmt: skip
    return out


def quantize_int8(
    model: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor]
) -> tuple[torch.fx.GraphModule, PteWeights]:
    """PT2E: LSTMs unrolled, the exported graph observed (embedding + XNNPACK quantizers) on calibration
    batches split or padded to the example's fixed batch, converted; with its weight summary."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer
    from torchao.quantization.pt2e.quantizer.embedding_quantizer import EmbeddingQuantizer

    model, unrolled = unroll_lstms(model)
    graph = torch.export.export(model.eval(), (example,)).module()
    xnnpack = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    # The unrolled LSTM's linears: int8 weights, activations quantized per call (dynamic; ExecuTorch's
    # `xnnpack_dynamic` recipe for LLMs). Static scales fixed on calibration batches would be reused across
    # every step of the recurrence, and the q/dq pairs around each gate would make the program larger.
    xnnpack.set_module_type(UnrolledLSTM, get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    prepared = prepare_pt2e(graph, ComposableQuantizer([EmbeddingQuantizer(), xnnpack]))  # type: ignore[arg-type]
    batch = len(example)
    with torch.no_grad():
        for xb in calibration:
            for i in range(0, len(xb) - batch + 1, batch):
                prepared(xb[i : i + batch])
    converted = convert_pt2e(prepared)
    summary = weight_summary(converted)
    summary.unrolled = unrolled
    return converted, summary
