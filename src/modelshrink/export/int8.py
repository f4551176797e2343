"""The one symmetric int8 grid: quant.qat simulates it, the compact file and the ONNX int8_weights file store it.

A weight w becomes q = clamp(round(w / s), -127, 127) with w_q = q · s, s = max|w| / 127 per
channel (or per tensor). -128 is unused so that q(-w) = -q(w). Every writer goes through this
module, so the torch weights QAT leaves, the compact file and the ONNX file agree bit for bit.

Two entry points, on purpose:
- `fake_quant` / `quantize_int8` round any float tensor onto the max|w| / 127 grid (QAT's rounding).
- `int8_grid` is what the files store: the same per-channel grid, except that a tensor already on
  one per-tensor grid (quant.qat's `preserve_clusters`) keeps that grid, and with it its k values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

QMAX = 127  # symmetric int8: [-127, 127]


@dataclass(frozen=True)
class Int8Tensor:
    """A float32 tensor stored as int8 values times one float32 scale per channel along `axis`."""

    values: torch.Tensor  # int8, the tensor's shape
    scales: torch.Tensor  # float32, (shape[axis],)
    axis: int
    per_tensor: bool = False  # all scales are one tensor-wide scale (ONNX then stores a single one)


def channel_axis(module: nn.Module) -> int:
    """The output-channel axis of a weight of `module` in PyTorch's layout."""
    # Embedding (V, E): per embedding dimension, so the scales do not grow with the vocabulary.
    # Linear (out, in), Conv (out, in, ...), RNN (gates·H, in): per output row.
    return 1 if isinstance(module, nn.Embedding) else 0


def int8_scales(w: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Symmetric scales max|w| / 127, per slice along `axis` (None: one for the tensor); shaped to broadcast."""
    if axis is None:
        absmax = w.abs().amax()
    else:
        dims = [d for d in range(w.dim()) if d != axis]
        absmax = w.abs().amax(dim=dims, keepdim=True)
    scale = absmax / QMAX
    return torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel: any scale, q = 0


def _round(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale), -QMAX, QMAX)


def fake_quant(w: torch.Tensor, axis: int | None) -> torch.Tensor:
    """w rounded to its symmetric int8 grid (per channel along `axis`, or per tensor), in float."""
    scale = int8_scales(w, axis)
    return _round(w, scale) * scale


def dequantize_int8(q: Int8Tensor) -> torch.Tensor:
    """float32 `values * scales` (broadcast along `axis`): the one formula writers and readers use."""
    shape = [1] * q.values.dim()
    shape[q.axis] = -1
    return q.values.to(torch.float32) * q.scales.to(torch.float32).reshape(shape)


def _int8(w: torch.Tensor, scale: torch.Tensor, axis: int, per_tensor: bool) -> Int8Tensor:
    values = _round(w, scale).to(torch.int8)
    scales = scale.reshape(-1).expand(w.shape[axis]) if per_tensor else scale.reshape(-1)
    return Int8Tensor(values, scales.to(torch.float32).contiguous(), axis, per_tensor)


def quantize_int8(w: torch.Tensor, axis: int) -> Int8Tensor:
    """Symmetric int8 (-127..127) with one scale per channel along `axis` = max|w_c| / 127."""
    w = w.detach().to(torch.float32)
    return _int8(w, int8_scales(w, axis), axis, per_tensor=False)


def int8_grid(w: torch.Tensor, axis: int) -> Int8Tensor:
    """The int8 form a file stores for `w`: per tensor when `w` is exactly on one per-tensor grid, else per channel.

    A per-tensor grid is what quant.qat's `preserve_clusters` leaves; storing it per channel would
    turn its k distinct values into up to k per channel, so it keeps its one scale. Everything else
    gets the per-channel grid `fake_quant(w, axis)` rounds to, bit for bit; a tensor already on that
    grid (quant.qat's output) comes back unchanged, since max|q · s| / 127 recomputes s exactly
    (fl(fl(127 · fl(a / 127)) / 127) = fl(a / 127): checked on 5·10^6 random float32 a).
    """
    w = w.detach().to(torch.float32)
    if w.numel() and torch.equal(fake_quant(w, None), w):
        return _int8(w, int8_scales(w, None), axis, per_tensor=True)
    return quantize_int8(w, axis)


def int8_weight_only(model: nn.Module) -> dict[str, Int8Tensor]:
    """Quantize `model`'s weight matrices to int8 in place (weights become `dequantize_int8` of it).

    Weights are parameters of 2 or more dims (Linear, Conv, LSTM and embedding matrices);
    biases stay float32, as in ONNX Runtime's and TFLite's dynamic-range int8. Channels are
    output channels, except an embedding's, whose channels are its features (`channel_axis`).
    A weight already on an int8 grid (quant.qat) is kept exactly (`int8_grid`). Returns
    parameter name → Int8Tensor, to pass to `save_compact(quantized=...)`.
    """
    axes = {f"{n}.weight" if n else "weight": channel_axis(m) for n, m in model.named_modules()}
    out: dict[str, Int8Tensor] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2 or not p.is_floating_point():
                continue
            q = int8_grid(p, axis=axes.get(name, 0))
            p.copy_(dequantize_int8(q).to(p.dtype))
            out[name] = q
    return out
