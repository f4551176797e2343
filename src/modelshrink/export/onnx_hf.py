"""The standard ONNX file of a Hugging Face classifier: inputs `input_ids` + `attention_mask`, output `logits`.

What Optimum, transformers.js and ONNX Runtime users feed a transformer: the tokenizer's ids padded on
the right with the padding id, and a 0/1 mask, both (batch, sequence) int64 with dynamic axes. The
measured `model.onnx` of an hf row takes one tensor of pre-padded ids instead (models/hf.py
HFClassifier: the mask is built in the graph), so the same pipeline measures every model; this file is
written beside it (`model.hf.onnx`) from the same weights, float32, for code that already feeds
transformers-style inputs. A vocabulary-pruned model keeps its id → row remap inside, so the inputs are
the tokenizer's ids either way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modelshrink.errors import IncompatibleModelError
from modelshrink.export._atomic import atomic_output
from modelshrink.export._quiet import quiet
from modelshrink.export.onnx import OPSET

HF_INPUTS = ("input_ids", "attention_mask")
HF_OUTPUT = "logits"
HF_ONNX_NAME = "model.hf.onnx"


class _IdsAndMask(nn.Module):
    """(input_ids, attention_mask) → logits of a transformers sequence classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, labels)


def right_padded(rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Task rows (B, T) — pre-padded with 0, the padding id and 0 swapped (data/hf_text.py) — as the
    tokenizer writes them for transformers: (input_ids, attention_mask), right-padded with `pad_id`, int64."""
    real = rows != 0  # (B, T)
    t = rows.shape[1]
    index = (np.arange(t)[None, :] + (t - real.sum(axis=1, keepdims=True))) % t  # tokens to the front
    ids, mask = np.take_along_axis(rows, index, axis=1), np.take_along_axis(real, index, axis=1)
    if pad_id:
        ids = np.where(ids == 0, pad_id, np.where(ids == pad_id, 0, ids))
    return np.where(mask, ids, pad_id).astype(np.int64), mask.astype(np.int64)


def export_hf_onnx(model: nn.Module, example_rows: np.ndarray, path: Path) -> Path:
    """Write the transformers model inside `model` (an HFClassifier) with inputs input_ids + attention_mask.

    `example_rows`: a few task rows (pre-padded ids) of different lengths to trace with."""
    inner, pad_id = getattr(model, "model", None), getattr(model, "pad_id", None)
    if inner is None or pad_id is None or not hasattr(inner, "config"):
        raise IncompatibleModelError(f"{type(model).__name__} is not a Hugging Face classifier (--model hf:PATH); "
                                     "only those get an input_ids + attention_mask file")  # fmt: skip
    ids, mask = right_padded(example_rows, int(pad_id))
    axes = {name: {0: "batch", 1: "sequence"} for name in HF_INPUTS} | {HF_OUTPUT: {0: "batch"}}
    wrapper = _IdsAndMask(inner).eval()
    try:
        with atomic_output(Path(path)) as tmp, torch.no_grad(), quiet():
            torch.onnx.export(wrapper, (torch.from_numpy(ids), torch.from_numpy(mask)), str(tmp), dynamo=False,
                              opset_version=OPSET, input_names=list(HF_INPUTS), output_names=[HF_OUTPUT],
                              dynamic_axes=axes)  # fmt: skip
    except Exception as err:  # any exporter failure: the row says why it has no such file
        raise IncompatibleModelError(f"input_ids + attention_mask export failed: {type(err).__name__}: "
                                     f"{str(err)[:300]}") from err  # fmt: skip
    return Path(path)


def hf_onnx_predictor(path: Path, pad_id: int, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """The file in ONNX Runtime as a function of task rows (B, T pre-padded ids) → (B, labels) logits."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def logits(rows: np.ndarray) -> np.ndarray:
        ids, mask = right_padded(rows, pad_id)
        return np.asarray(session.run([HF_OUTPUT], {"input_ids": ids, "attention_mask": mask})[0])

    return logits
