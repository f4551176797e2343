"""BatchNorm folding: a Conv or Linear followed by a BatchNorm gets the BatchNorm's scale in its weights.

Deploy graphs fold an eval-mode BatchNorm into the layer before it: W' = W * gamma / sqrt(var + eps)
per output channel. The ONNX export does that fold itself, after the techniques ran, and so scales
each output channel of a pruned or clustered weight differently: the zeros survive, but a
clustered conv's 16 shared values become up to 16 x channels values (the property checks flag it).
Folding once, before any technique, puts the scale into the weights the techniques then see.

The BatchNorm stays in the model (same state-dict keys, so a variant rebuilds from its config)
as an exact identity scale: weight 1, mean 0, var 1 - eps, the folded shift in its bias; it is
frozen in eval mode and its weight is not trained, so fine-tuning cannot bring a per-channel
scale back. The export's own fold then multiplies by exactly 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # output channels on dim 0 of the weight
_FROZEN: dict[type, type] = {}


@dataclass
class Folded:
    """One fold: the layer, the BatchNorm folded into it."""

    layer: str
    batchnorm: str


def _frozen_class(cls: type[nn.Module]) -> type[nn.Module]:
    """A subclass of the BatchNorm class that stays in eval mode (uses its running statistics)."""
    if cls not in _FROZEN:

        def train(self: nn.Module, mode: bool = True) -> nn.Module:
            return nn.Module.train(self, False)

        _FROZEN[cls] = type(f"Folded{cls.__name__}", (cls,), {"train": train, "__module__": __name__})
    return _FROZEN[cls]


def _pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, batchnorm) names where the BatchNorm reads only the layer's output, and nothing else does.

    Found on the torch.fx graph of the model (any module structure); a model fx cannot trace falls
    back to consecutive children of nn.Sequential containers.
    """
    modules = dict(model.named_modules())
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - data-dependent control flow: fx gives up, Sequential order still holds
        return [(f"{p}.{a}".lstrip("."), f"{p}.{b}".lstrip("."))
                for p, m in model.named_modules() if isinstance(m, nn.Sequential)
                for (a, x), (b, y) in zip(list(m.named_children()), list(m.named_children())[1:], strict=False)
                if isinstance(x, _LAYERS) and isinstance(y, _BN)]  # fmt: skip
    out = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(str(node.target)), _BN):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules.get(str(src.target)), _LAYERS)
                and len(src.users) == 1):  # fmt: skip
            out.append((str(src.target), str(node.target)))
    return out


@torch.no_grad()
def _fold_one(layer: nn.Module, bn: nn.Module) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
    shift = bn.bias - bn.running_mean * scale  # (C,)
    b = layer.bias if layer.bias is not None else torch.zeros_like(shift)
    layer.weight.mul_(scale.reshape(-1, *([1] * (layer.weight.dim() - 1))))  # (C_out, ...) * (C_out, 1, ...)
    # y = scale * (Wx + b) + shift = W'x + b + (scale * b + shift - b): the BatchNorm keeps the last term.
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0).sub_(bn.eps)  # var + eps == 1 (in float32 too, for eps = 1e-5)
    bn.weight.fill_(1.0)
    bn.weight.requires_grad_(False)  # a trained scale would undo the fold
    bn.bias.copy_(scale * b + shift - b)


def fold_batchnorm(model: nn.Module) -> list[Folded]:
    """Fold every BatchNorm that follows a Conv/Linear (with nothing else reading the layer) into that
    layer's weights, in place, with the BatchNorm's running statistics (eval mode). Returns what was folded.

    Left as they are: a BatchNorm that is not affine or has no running statistics (nowhere to put
    the shift, or normalised by batch statistics even in eval mode).
    """
    folded = []
    for layer_name, bn_name in _pairs(model):
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        if not bn.affine or bn.running_mean is None or bn.running_var is None:
            continue
        _fold_one(layer, bn)
        bn.__class__ = _frozen_class(type(bn))
        bn.eval()
        folded.append(Folded(layer_name, bn_name))
    return folded
