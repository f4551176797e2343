"""Find the weight tensors a weight-level technique (pruning, clustering) may change.

Shared by `prune.magnitude` and `cluster.kmeans` so both agree on what a "weight" is, on
what `exclude` means, and on which layers they report as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.techniques.base import SkippedLayer

# Layers whose weights we know how to change in place. nn.RNNBase covers nn.LSTM, nn.GRU and
# nn.RNN: their forward reads `_flat_weights`, which holds the very Parameter objects, so
# in-place edits (`p.mul_`, `p.copy_`) reach the forward pass; reparametrizations would not.
_SINGLE_WEIGHT_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
_RNN_WEIGHT_PREFIXES = ("weight_ih_l", "weight_hh_l", "weight_hr_l")  # weight_hr_l*: LSTM(proj_size>0)
# nn.MultiheadAttention's forward reads `in_proj_weight` (or q/k/v_proj_weight) on every call,
# so in-place edits reach it too; its `out_proj` is an nn.Linear subclass, found on its own.
_MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
SUPPORTED_LAYER_TYPES: tuple[str, ...] = (
    "Linear", "Conv1d", "Conv2d", "Embedding", "LSTM", "GRU", "RNN", "MultiheadAttention",
)  # fmt: skip

UNSUPPORTED_REASON = "unsupported layer type"
EXCLUDED_REASON = "excluded by config"


@dataclass(frozen=True)
class Target:
    """One weight tensor a technique may change: `module.<param_name>`, known as `qualified_name`."""

    module_name: str  # "" for the root module
    module: nn.Module
    param_name: str  # e.g. "weight" or "weight_hh_l0_reverse"
    qualified_name: str  # e.g. "lstm.weight_ih_l0", as in model.named_parameters()

    @property
    def weight(self) -> nn.Parameter:
        """The parameter itself (looked up each time, so a re-registered parameter is seen)."""
        param = getattr(self.module, self.param_name)
        if not isinstance(param, nn.Parameter):  # internal invariant: targets are found as Parameters
            raise RuntimeError(f"{self.qualified_name} is no longer a Parameter")
        return param


def _weight_names(module: nn.Module, own_params: dict[str, nn.Parameter]) -> list[str] | None:
    """Names of `module`'s own parameters that are targets; None when the layer type is unsupported."""
    if isinstance(module, nn.RNNBase):
        return [name for name in own_params if name.startswith(_RNN_WEIGHT_PREFIXES)]
    if isinstance(module, nn.MultiheadAttention):
        return [name for name in _MHA_WEIGHTS if name in own_params]
    if isinstance(module, _SINGLE_WEIGHT_TYPES):
        return ["weight"] if "weight" in own_params else []
    return None


def _is_excluded(module_name: str, qualified_name: str, exclude: tuple[str, ...]) -> bool:
    """An exclude entry names a parameter, its module, or any module above it."""
    for entry in exclude:
        if qualified_name == entry or module_name == entry or module_name.startswith(entry + "."):
            return True
    return False


def _check_exclude_names(model: nn.Module, exclude: tuple[str, ...]) -> None:
    """A misspelt exclude entry would silently change a layer the user meant to protect."""
    known = {name for name, _ in model.named_modules() if name} | {name for name, _ in model.named_parameters()}
    unknown = [entry for entry in exclude if entry not in known]
    if unknown:
        examples = ", ".join(sorted(known)[:12])
        raise ConfigError(
            f"exclude names {unknown} match no module or parameter of {type(model).__name__}; "
            f"use names from model.named_modules()/named_parameters(), e.g. {examples}"
        )


def prunable_weights(model: nn.Module, exclude: tuple[str, ...] = ()) -> tuple[list[Target], list[SkippedLayer]]:
    """List the weight tensors of supported layers, and every other parametrized layer as skipped.

    Supported: the `weight` of nn.Linear, nn.Conv1d, nn.Conv2d and nn.Embedding, and every
    `weight_ih_l*`/`weight_hh_l*` (reverse directions and projections included) of nn.LSTM,
    nn.GRU and nn.RNN, and the input projections of nn.MultiheadAttention (`in_proj_weight`, or
    `q/k/v_proj_weight`; its `out_proj` is a Linear). Biases are never targets. Another layer with parameters of its own
    (BatchNorm, LayerNorm, a custom layer) is reported as
    skipped with reason "unsupported layer type"; targets named in `exclude` (a parameter's
    or module's qualified name) are skipped with reason "excluded by config". A weight tied to
    another (the same Parameter in two layers) is listed once, under its first name.

    Raises:
        ConfigError: an `exclude` entry names nothing in the model.
        IncompatibleModelError: no target is left.
    """
    _check_exclude_names(model, exclude)
    targets: list[Target] = []
    skipped: list[SkippedLayer] = []
    seen: set[int] = set()  # id() of Parameters already listed, for tied weights
    found_types: set[str] = set()  # layer types that own parameters, for the error message
    n_excluded = 0

    for module_name, module in model.named_modules():
        own_params = dict(module.named_parameters(recurse=False))
        if not own_params:
            continue  # containers (Sequential, the model class itself, ...) own nothing to change
        type_name = type(module).__name__
        found_types.add(type_name)
        names = _weight_names(module, own_params)
        if names is None:
            excluded = bool(module_name) and _is_excluded(module_name, module_name, exclude)
            reason = EXCLUDED_REASON if excluded else UNSUPPORTED_REASON
            skipped.append(SkippedLayer(module_name or "<model>", type_name, reason))
            continue
        if not names:
            # e.g. a Linear whose weight was reparametrized (torch.nn.utils.parametrize):
            # `weight` is then computed, not stored, and in-place edits would be lost.
            skipped.append(SkippedLayer(module_name or "<model>", type_name, "weight is not a plain parameter"))
            continue
        for param_name in names:
            qualified = f"{module_name}.{param_name}" if module_name else param_name
            param = own_params[param_name]
            if id(param) in seen:
                continue  # tied weight: changed once, through its first name
            if _is_excluded(module_name, qualified, exclude):
                skipped.append(SkippedLayer(qualified, type_name, EXCLUDED_REASON))
                n_excluded += 1
                continue
            seen.add(id(param))
            targets.append(Target(module_name, module, param_name, qualified))

    if not targets:
        found = ", ".join(sorted(found_types)) if found_types else "none (the model has no parameters)"
        note = f" ({n_excluded} supported weight tensors were excluded by config)" if n_excluded else ""
        raise IncompatibleModelError(
            f"{type(model).__name__} has no weight this technique can change{note}; "
            f"layer types with parameters found: {found}; supported: {', '.join(SUPPORTED_LAYER_TYPES)}"
        )
    return targets, skipped


@torch.no_grad()
def zero_masked_(weights: list[torch.Tensor], factors: list[torch.Tensor]) -> None:
    """Set the pruned weights to zero in place: `factors` are the keep-masks as 0/1 in each weight's dtype.

    In place, so nn.LSTM's `_flat_weights` (the same Parameter objects) see the zeros. One fused
    multiply over all tensors: 15x faster than `masked_fill_` with bool masks on the CPU (measured
    0.06 ms vs 0.95 ms per step on the reference LSTM), which ran after every optimizer step.
    Adding 0.0 turns the -0.0 of a pruned negative weight into +0.0.
    """
    if weights:
        torch._foreach_mul_(weights, factors)
        torch._foreach_add_(weights, 0.0)
