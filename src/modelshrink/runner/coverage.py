"""Which technique changes which layer type, measured now: the coverage table (`modelshrink coverage`).

Not a hand-written table: for each layer type there is a tiny probe model whose module `probe`
is that layer (plus parameter-free glue, or a much smaller front layer), and every registered
technique is applied to it with its default config (fine-tuning capped at one epoch on random
data). A cell reads what happened to the probe layer:

- its weights became sparser (+10 points of zeros) → "sparse"; fewer distinct values (≤ 256,
  from more) → "shared"; fewer parameters → "smaller";
- the technique sets an export format: the probe's exported ONNX file is compared with the
  float32 export; float32 bytes down by half the layer's bytes or more → "int8" / "fp16";
- otherwise "no", with the reason the technique gave in `skipped` (or the error it raised); a
  layer left unchanged *without* a skipped entry says so, since that breaks the contract.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from modelshrink.data.tasks import TaskData
from modelshrink.errors import IncompatibleModelError
from modelshrink.export.onnx import export_onnx, onnx_weight_stats
from modelshrink.runner.pipeline import make_context
from modelshrink.techniques import TECHNIQUES, RunContext
from modelshrink.train import TrainConfig

LAYER_TYPES = ("Linear", "Conv1d", "Conv2d", "Embedding", "LSTM", "GRU", "bidirectional RNN", "MultiheadAttention",
               "LayerNorm", "BatchNorm")  # fmt: skip
_SHORT = {"bidirectional RNN": "BiRNN", "MultiheadAttention": "MHA"}  # table headers
_VOCAB, _T = 32, 8


def _halves(h: torch.Tensor) -> torch.Tensor:
    """(B, D) → (B, 2) logits without parameters: the mean of each half of the features."""
    return h.reshape(h.shape[0], 2, -1).mean(dim=2)


class _Probe(nn.Module):
    def __init__(self, probe: nn.Module, forward: Callable[[_Probe, torch.Tensor], torch.Tensor],
                 front: nn.Module | None = None) -> None:  # fmt: skip
        super().__init__()
        self.front = front if front is not None else nn.Identity()
        self.probe = probe
        self._forward = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self, x)


def _rnn_last(m: _Probe, x: torch.Tensor) -> torch.Tensor:
    out = m.probe(m.front(x))
    h_n = out[1][0] if isinstance(m.probe, nn.LSTM) else out[1]  # (layers*dirs, B, H)
    return _halves(h_n.transpose(0, 1).reshape(x.shape[0], -1))


def _mha(m: _Probe, x: torch.Tensor) -> torch.Tensor:
    h = m.front(x)  # (B, T, D)
    kv = h.view_as(h)  # a distinct key tensor keeps MHA off its fused kernel, which TorchScript cannot export
    return _halves(m.probe(h, kv, kv, need_weights=False)[0].mean(dim=1))


# layer type → (input kind, probe model factory). The probe layer holds most of the parameters, so
# an ONNX file's bytes tell whether *it* was quantized.
PROBES: dict[str, tuple[Literal["text", "image"], Callable[[], nn.Module]]] = {
    "Linear": ("image", lambda: _Probe(nn.Linear(64, 128), lambda m, x: _halves(torch.relu(m.probe(x.flatten(1)))))),
    "Conv1d": ("image", lambda: _Probe(nn.Conv1d(8, 64, 5, padding=2),
                                       lambda m, x: _halves(m.probe(x.flatten(1, 2)).amax(dim=2)))),
    "Conv2d": ("image", lambda: _Probe(nn.Conv2d(1, 64, 5, padding=2),
                                       lambda m, x: _halves(torch.relu(m.probe(x)).mean(dim=(2, 3))))),
    "Embedding": ("text", lambda: _Probe(nn.Embedding(_VOCAB * 8, 32), lambda m, x: _halves(m.probe(x).mean(dim=1)))),
    "LSTM": ("text", lambda: _Probe(nn.LSTM(4, 64, batch_first=True), _rnn_last, nn.Embedding(_VOCAB, 4))),
    "GRU": ("text", lambda: _Probe(nn.GRU(4, 64, batch_first=True), _rnn_last, nn.Embedding(_VOCAB, 4))),
    "bidirectional RNN": ("text", lambda: _Probe(nn.LSTM(4, 32, batch_first=True, bidirectional=True), _rnn_last,
                                                 nn.Embedding(_VOCAB, 4))),
    "MultiheadAttention": ("text", lambda: _Probe(nn.MultiheadAttention(32, 2, batch_first=True), _mha,
                                                  nn.Embedding(_VOCAB, 32))),
    "LayerNorm": ("image", lambda: _Probe(nn.LayerNorm(2048),
                                          lambda m, x: _halves(m.probe(x.flatten(1).repeat(1, 32))))),
    "BatchNorm": ("image", lambda: _Probe(nn.BatchNorm2d(256),
                                          lambda m, x: _halves(m.probe(x.repeat(1, 256, 1, 1)).mean(dim=(2, 3))))),
}  # fmt: skip


def _data(kind: Literal["text", "image"]) -> TaskData:
    rng = np.random.default_rng(0)
    if kind == "text":
        x: np.ndarray = rng.integers(1, _VOCAB, (96, _T)).astype(np.int64)
        dim = _VOCAB
    else:
        x, dim = rng.random((96, 1, 8, 8), dtype=np.float32), 1
    y = rng.integers(0, 2, 96).astype(np.int64)
    return TaskData(x[:64], y[:64], x[64:80], y[64:80], x[80:], y[80:], labels=["a", "b"], input_dim=dim, kind=kind,
                    source="coverage probe")  # fmt: skip


def _ctx(data: TaskData) -> RunContext:
    # One fine-tuning epoch at most: the probe asks what a technique changes, not how well it trains.
    return make_context(data, TrainConfig(batch_size=32, threads=1), seed=0, max_epochs=1)


def _weights(module: nn.Module) -> dict[str, np.ndarray]:
    return {n: p.detach().cpu().numpy().copy() for n, p in module.named_parameters()}


def _weight_change(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> str | None:
    """How the probe layer's weights were compressed, or None."""
    n_before, n_after = sum(a.size for a in before.values()), sum(a.size for a in after.values())
    if n_after < n_before:
        return "smaller"
    zeros_before = sum(int((a == 0).sum()) for a in before.values()) / max(n_before, 1)
    zeros_after = sum(int((a == 0).sum()) for a in after.values()) / max(n_after, 1)
    if zeros_after >= zeros_before + 0.10:
        return "sparse"
    for name, a in after.items():
        if name in before and np.unique(before[name]).size > 256 >= np.unique(a).size:
            return "shared"
    return None


def _float32_bytes(model: nn.Module, x: torch.Tensor, fmt: str, calibration: Any, folder: Path) -> int:
    path = export_onnx(model, x, folder / f"{fmt}.onnx", fmt, calibration=calibration)  # type: ignore[arg-type]
    return int(onnx_weight_stats(path)["bytes_by_dtype"].get("float32", 0))


@dataclass
class Cell:
    technique: str
    layer: str
    supported: bool
    how: str  # "sparse", "shared", "smaller", "int8", "fp16", or "" when not supported
    reason: str  # why not (from the technique's skipped list or its error), "" when supported


def _probe_cell(
    kind: str, layer: str, input_kind: Literal["text", "image"], make: Callable[[], nn.Module], folder: Path
) -> Cell:
    tech = TECHNIQUES[kind]
    data = _data(input_kind)
    ctx = _ctx(data)
    torch.manual_seed(0)
    model = make().eval()
    before = _weights(model.probe)  # type: ignore[union-attr,arg-type]
    try:
        result = tech.apply(copy.deepcopy(model), tech.config_cls.model_validate({}), ctx)  # its defaults
    except IncompatibleModelError as err:  # "has no weight this technique can change; ..." → its first clause
        return Cell(kind, layer, False, "", str(err).split(";")[0].replace(f"{type(model).__name__} ", "", 1))
    except Exception as err:  # noqa: BLE001 - the technique's own words are the cell's reason
        return Cell(kind, layer, False, "", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    probe = getattr(result.model, "probe", None)
    how = _weight_change(before, _weights(probe)) if isinstance(probe, nn.Module) else "smaller"
    if how is None and result.export_format and result.export_format != "fp32":
        x = ctx.example_input
        base = _float32_bytes(model, x, "fp32", None, folder)
        after = _float32_bytes(result.model, x, result.export_format, ctx.calibration, folder)
        layer_bytes = sum(a.nbytes for a in before.values())
        if base - after >= layer_bytes // 2:
            how = "fp16" if result.export_format == "fp16" else "int8"
    if how is not None:
        return Cell(kind, layer, True, how, "")
    reasons = sorted({s.reason for s in result.skipped if s.name == "probe" or s.name.startswith("probe.")})
    return Cell(kind, layer, False, "", "; ".join(reasons) or "left unchanged, and not listed as skipped")


def coverage_table(techniques: list[str] | None = None) -> list[Cell]:
    """One Cell per (registered technique, layer type), measured on the probe models."""
    cells = []
    with tempfile.TemporaryDirectory(prefix="modelshrink-coverage-") as tmp:
        for kind in techniques or sorted(TECHNIQUES):
            for layer in LAYER_TYPES:
                input_kind, make = PROBES[layer]
                cells.append(_probe_cell(kind, layer, input_kind, make, Path(tmp)))
    return cells


def format_table(cells: list[Cell]) -> str:
    """A grid (technique × layer type; how, or "no") and, below it, the reason for every "no"."""
    kinds = list(dict.fromkeys(c.technique for c in cells))
    width = max(len(k) for k in kinds) + 2
    heads = [_SHORT.get(layer, layer) for layer in LAYER_TYPES]
    cols = [max(len(h), 6) + 2 for h in heads]
    lines = ["".ljust(width) + "".join(h.ljust(w) for h, w in zip(heads, cols, strict=True))]
    by_key = {(c.technique, c.layer): c for c in cells}
    for kind in kinds:
        row = [(by_key[(kind, layer)].how or "no") for layer in LAYER_TYPES]
        lines.append(kind.ljust(width) + "".join(v.ljust(w) for v, w in zip(row, cols, strict=True)))
    lines += ["", "BiRNN: bidirectional LSTM; MHA: nn.MultiheadAttention. sparse: +10 points of zeros; "
              "shared: <= 256 distinct values; smaller: fewer parameters; int8/fp16: so stored in the exported "
              "ONNX file.", "", "Why not:"]  # fmt: skip
    lines += [f"  {c.technique} × {c.layer}: {c.reason}" for c in cells if not c.supported]
    return "\n".join(lines)
