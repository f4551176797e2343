"""TEMPORARY shim in the core branch; replaced by the export helper's registry at merge."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from modelshrink.export.compact import Int8Tensor, int8_weight_only


@dataclass(frozen=True)
class Format:
    name: str
    artifact: str
    always: bool
    needs_calibration: bool


FORMATS = {f.name: f for f in (
    Format("fp32", "onnx_fp32", True, False), Format("fp16", "onnx_fp16", True, False),
    Format("int8_dynamic", "onnx_int8", True, False), Format("int8_static", "onnx_int8_static", False, True),
    Format("int8_weights", "onnx_int8_weights", False, False))}


def get_format(name: str) -> Format:
    return FORMATS[name]


def always_written() -> list[Format]:
    return [f for f in FORMATS.values() if f.always]


def compact_model(model: nn.Module, export_format: str) -> tuple[nn.Module, dict[str, Int8Tensor] | None, str]:
    if export_format.startswith("int8"):
        qmodel = copy.deepcopy(model)
        return qmodel, int8_weight_only(qmodel), "int8 per-channel weight-only"
    if export_format == "fp16":
        hmodel = copy.deepcopy(model)
        with torch.no_grad():
            for p in hmodel.parameters():
                if p.is_floating_point():
                    p.copy_(p.half().float())
        return hmodel, None, "float16"
    return model, None, "float32"
