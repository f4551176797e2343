"""The export formats: the one place a format is added.

Each format says its name (a technique's `export_format`), the artifact name its file is
reported under, whether every variant gets a file in it, whether it needs calibration
batches, how it is made from the float32 ONNX file, and how the compact file holds a model in
it. Adding a format: one entry in `FORMATS`, its name in `ExportFormat`, and its converter
(onnx_quant.py). The runner, the exporter and the API read the rest from here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from modelshrink.errors import RegistryError, UnknownNameError
from modelshrink.export import executorch, onnx_quant
from modelshrink.export.int8 import Int8Tensor, int8_weight_only

ExportFormat = Literal["fp32", "fp16", "int8_dynamic", "int8_static", "int8_weights"]
# How the compact file holds a model in a format: its float32 weights, rounded to float16, or
# int8 per channel (weight-only, the torch counterpart of the int8 ONNX files).
CompactWeights = Literal["float32", "float16", "int8"]
Converter = Callable[[Path, Path, onnx_quant.Batches, str], None]  # (fp32 src, dst, calibration, input name)

_COMPACT_LABELS: dict[CompactWeights, str] = {
    "float32": "float32",
    "float16": "float16",
    "int8": "int8 per-channel weight-only",
}


@dataclass(frozen=True)
class Format:
    """One export format and everything the exporter and the runner need to know about it."""

    name: ExportFormat
    artifact: str  # the artifact's name in results and file names: "onnx_int8_static"
    always: bool  # every variant gets a file in this format, whatever its own format
    needs_calibration: bool  # conversion reads input batches (static activation ranges)
    convert: Converter  # float32 ONNX file → a file in this format
    compact_weights: CompactWeights


def _formats(*formats: Format) -> dict[str, Format]:
    return {f.name: f for f in formats}


FORMATS: dict[str, Format] = _formats(
    Format("fp32", "onnx_fp32", True, False, onnx_quant.to_fp32, "float32"),
    Format("fp16", "onnx_fp16", True, False, onnx_quant.to_fp16, "float16"),
    Format("int8_dynamic", "onnx_int8", True, False, onnx_quant.to_int8_dynamic, "int8"),
    Format("int8_static", "onnx_int8_static", False, True, onnx_quant.to_int8_static, "int8"),
    Format("int8_weights", "onnx_int8_weights", False, False, onnx_quant.to_int8_weights, "int8"),
)
if set(FORMATS) != set(get_args(ExportFormat)):  # a format added to one of the two and not the other
    raise RegistryError(f"export formats {sorted(FORMATS)} differ from ExportFormat {sorted(get_args(ExportFormat))}")


@dataclass(frozen=True)
class PteFormat:
    """An ExecuTorch program format (export/executorch.py): made from the torch model, not the ONNX file."""

    name: str  # "pte_fp32"
    artifact: str  # "executorch_fp32"
    mode: executorch.PteMode
    needs_calibration: bool  # int8 (PT2E static): observers run on training batches


PTE_FORMATS = (
    PteFormat("pte_fp32", "executorch_fp32", "fp32", False),
    PteFormat("pte_int8", "executorch_int8", "int8", True),
)


def pte_formats() -> list[PteFormat]:
    """The ExecuTorch formats a variant can be written in: all of them when executorch imports, none otherwise."""
    return list(PTE_FORMATS) if executorch.available() else []


def get_format(name: str) -> Format:
    """The format called `name`; UnknownNameError listing the known ones otherwise."""
    if name not in FORMATS:
        raise UnknownNameError(f"unknown export format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def always_written() -> list[Format]:
    """The formats every variant gets a file in: fp32, fp16, int8_dynamic, in that order."""
    return [f for f in FORMATS.values() if f.always]


def compact_model(model: nn.Module, fmt: Format) -> tuple[nn.Module, dict[str, Int8Tensor] | None, str]:
    """The torch model the compact file holds for a variant in format `fmt`.

    int8 formats: a copy with its weights on the int8 grid (`int8_weight_only`; activations stay
    float). float16: a copy with its float weights rounded to float16. Otherwise `model` itself.
    Returns (model, int8 tensors for `save_model(quantized=...)` or None, weights label).
    """
    label = _COMPACT_LABELS[fmt.compact_weights]
    if fmt.compact_weights == "int8":
        qmodel = copy.deepcopy(model)
        return qmodel, int8_weight_only(qmodel), label
    if fmt.compact_weights == "float16":
        hmodel = copy.deepcopy(model)
        with torch.no_grad():
            for p in hmodel.parameters():
                if p.is_floating_point():
                    p.copy_(p.half().float())
        return hmodel, None, label
    return model, None, label
