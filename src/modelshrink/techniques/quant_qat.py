"""quant.qat: quantization-aware training with simulated int8 weights, exported as a real int8 ONNX file.

Fake quantization (our own few lines: `torch.ao.quantization` is deprecated) rounds every
target weight — Linear, Conv, Embedding, and the LSTM/GRU/RNN input and recurrent weights —
to symmetric int8, q = clamp(round(w / s), -127, 127), w_q = q·s, with one scale per output
channel, s_c = max|w_c| / 127 (an Embedding's channels are its embedding dimensions, so the
table needs E scales, not one per word). Training uses the straight-through estimator
(Bengio et al. 2013): the forward pass sees w_q, the gradient at w_q updates a float shadow
copy of w as if rounding were the identity (absmax scales never clip, so no gradient is cut).

As in `cluster.kmeans`, the weight stays an ordinary Parameter (nn.LSTM reads its Parameter
objects directly, so no reparametrization): a post-accumulate-grad hook moves the weight's
gradient to its shadow, the optimizer trains the shadows (plus biases and skipped layers), and
`on_step` writes quantize(shadow) back into the weight. The model returned holds the
quantized values in float32 and `export_format="int8_weights"`: the exporter
(`export.onnx_quant.to_int8_weights`) stores each weight as int8 plus its scales and a
DequantizeLinear, recomputing the same scales from the weights with the same grid
(`export.int8`), so ONNX Runtime runs exactly the weights QAT simulated (a test checks it).
ONNX Runtime's `quantize_dynamic` is not used here: it quantizes the embedding (Gather) as uint8 with one asymmetric range, not what QAT
simulated. Activations stay float32 (weight-only int8, like dynamic-range quantization's
storage; compute is float after ORT folds the DequantizeLinear at load).

`epochs=0` is post-training quantization in the same scheme and file format, so a PTQ/QAT
variant pair differs only in training. Pipelines:
- `preserve_sparsity`: zeros stay exactly zero (pruning-preserving QAT: q(0) = 0, and the
  zeros' shadow gradients are masked).
- `preserve_clusters`: each tensor's distinct values (from `cluster.kmeans`) stay its only
  values: the indices stay fixed, the centroids train and are quantized with one scale per
  tensor, so at most k distinct values remain (a per-channel scale would turn k values into
  up to k per channel). The exporters (ONNX and the compact file) see that such a tensor lies
  on one per-tensor grid and store it per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.hooks import RemovableHandle

from modelshrink.errors import ConfigError
from modelshrink.export.int8 import channel_axis, fake_quant  # the one int8 grid the exporters store
from modelshrink.techniques._targets import Target, prunable_weights
from modelshrink.techniques.base import (
    RunContext,
    SearchStage,
    SearchTrial,
    TechniqueConfig,
    TechniqueResult,
    register_technique,
    require_fine_tuning,
)

MAX_CLUSTERS = 256  # preserve_clusters: more distinct values than this is not a clustered tensor


class QATConfig(TechniqueConfig):
    """Simulated int8 weights (per-channel, symmetric) while fine-tuning; an int8 ONNX file."""

    kind: Literal["quant.qat"] = "quant.qat"
    epochs: int = Field(2, ge=0)  # fine-tuning epochs with fake quantization; 0 = post-training int8
    preserve_sparsity: bool = False  # zeros stay zero (after prune.magnitude)
    preserve_clusters: bool = False  # distinct values per tensor stay <= their count (after cluster.kmeans)
    search_stage: ClassVar[SearchStage | None] = "quant"

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        # Searched at its defaults (2 epochs, no preserve flags), the space search has always used;
        # epochs and the preserve flags (which matter after prune/cluster) could join it later.
        return {"kind": "quant.qat"}


@dataclass
class _QuantWeight:
    """One target: its trainable float shadow (or centroids) and how it becomes the int8 weight."""

    target: Target
    shadow: nn.Parameter  # the weight's shape; or (k,) centroids with preserve_clusters
    axis: int | None  # per-channel axis, None = per tensor
    keep: torch.Tensor | None = None  # bool, weight's shape: False = a zero that stays zero
    idx: torch.Tensor | None = None  # preserve_clusters: int64 centroid index of every weight
    fixed_zero: int | None = None  # preserve_clusters + sparsity: the index of the centroid 0.0
    hook: RemovableHandle | None = field(default=None)

    @torch.no_grad()
    def snap(self) -> None:
        """Write the quantized shadow into the weight, in place (nn.LSTM's flat weights see it)."""
        values = self.shadow.detach()
        if self.idx is not None:
            values = fake_quant(values, None)[self.idx]  # (k,) centroids on one grid → weight's shape
        else:
            if self.keep is not None:
                values = values * self.keep
            values = fake_quant(values, self.axis)
        self.target.weight.copy_(values)

    def _grad_to_shadow(self, w: torch.Tensor) -> None:
        grad = w.grad  # dL/dw_q; straight-through: the same gradient for the shadow
        if grad is None:
            return
        if self.idx is not None:  # centroid j gets the sum over the weights that share it
            g = torch.zeros_like(self.shadow).index_add_(0, self.idx.reshape(-1), grad.reshape(-1))
            if self.fixed_zero is not None:
                g[self.fixed_zero] = 0.0
        else:
            g = grad if self.keep is None else grad * self.keep
        self.shadow.grad = g if self.shadow.grad is None else self.shadow.grad + g
        w.grad = None  # the optimizer trains the shadow, never the weight itself

    def attach(self) -> None:
        if self.target.weight.requires_grad:
            self.hook = self.target.weight.register_post_accumulate_grad_hook(self._grad_to_shadow)

    def detach(self) -> None:
        if self.hook is not None:
            self.hook.remove()
            self.hook = None
        self.target.weight.grad = None


def _prepare(target: Target, cfg: QATConfig) -> _QuantWeight:
    w = target.weight.detach()
    keep = (w != 0) if cfg.preserve_sparsity else None
    if not cfg.preserve_clusters:
        return _QuantWeight(target, nn.Parameter(w.clone()), channel_axis(target.module), keep)
    centroids, idx = torch.unique(w, return_inverse=True)  # sorted (k,), weight's shape
    if centroids.numel() > MAX_CLUSTERS:
        raise ConfigError(
            f"quant.qat preserve_clusters: {target.qualified_name} has {centroids.numel():,} distinct values, "
            f"not a clustered tensor (<= {MAX_CLUSTERS}); run cluster.kmeans before it or set preserve_clusters: false"
        )
    zero = (centroids == 0).nonzero()
    fixed_zero = int(zero[0, 0]) if cfg.preserve_sparsity and zero.numel() else None
    return _QuantWeight(target, nn.Parameter(centroids.clone()), None, None, idx, fixed_zero)


@register_technique(QATConfig)
def quant_qat(model: nn.Module, cfg: QATConfig, ctx: RunContext) -> TechniqueResult:
    """Quantization-aware training: per-channel int8 weights simulated while fine-tuning (STE)."""
    fine_tune = ctx.fine_tune
    require_fine_tuning(ctx, "quant.qat", cfg.epochs, "for post-training int8")
    targets, skipped = prunable_weights(model, exclude=ctx.exclude)
    quantized = [_prepare(t, cfg) for t in targets]  # all checks before any change
    for q in quantized:
        q.snap()

    steps = 0
    if cfg.epochs > 0 and fine_tune is not None:

        def on_step(step: int) -> None:
            nonlocal steps
            steps = max(steps, step)
            for q in quantized:
                q.snap()  # the optimizer moved the shadows; the weights follow, rounded

        target_ids = {id(t.weight) for t in targets}
        params = [q.shadow for q in quantized] + [p for p in model.parameters() if id(p) not in target_ids]
        try:
            for q in quantized:
                q.attach()
            fine_tune(model, cfg.epochs, on_step, params)
        finally:
            for q in quantized:
                q.detach()
        for q in quantized:
            q.snap()

    details = {
        "scheme": "int8 symmetric, " + ("per tensor (clusters kept)" if cfg.preserve_clusters else "per channel"),
        "steps": steps,  # optimizer steps with fake quantization (0: post-training)
        "distinct_values": {
            q.target.qualified_name: int(torch.unique(q.target.weight.detach()).numel()) for q in quantized
        },  # fmt: skip
        "sparsity": {
            q.target.qualified_name: round(float((q.target.weight == 0).float().mean()), 6) for q in quantized
        },  # fmt: skip
    }
    return TechniqueResult(model=model, skipped=skipped, details=details, export_format="int8_weights")
