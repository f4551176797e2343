"""Post-training quantization through ONNX Runtime: float16, dynamic int8 and static int8.

These techniques do not change the PyTorch model. They set `export_format`, and the
exporter (`modelshrink.export.onnx.export_onnx`) writes the real float16 or int8 ONNX
file, which is what gets measured. So a quantization step belongs last in a pipeline.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field
from torch import nn

from modelshrink.errors import ConfigError
from modelshrink.techniques.base import (
    RunContext,
    SearchStage,
    SearchTrial,
    SkippedLayer,
    TechniqueConfig,
    TechniqueResult,
    register_technique,
)

_DETAILS_NOTE = "applied at export through ONNX Runtime"


class _OrtQuantConfig(TechniqueConfig):
    """A post-training quantization applied at export: searched as the last step, at its defaults."""

    search_stage: ClassVar[SearchStage | None] = "quant"

    @classmethod
    def search_space(cls, trial: SearchTrial, prefix: str) -> dict[str, Any] | None:
        return {"kind": cls.model_fields["kind"].default}


class Fp16Config(_OrtQuantConfig):
    kind: Literal["quant.fp16"] = "quant.fp16"


class Int8DynamicConfig(_OrtQuantConfig):
    kind: Literal["quant.int8_dynamic"] = "quant.int8_dynamic"


class Int8StaticConfig(_OrtQuantConfig):
    kind: Literal["quant.int8_static"] = "quant.int8_static"
    calibration_batches: int = Field(8, ge=1, le=64)  # input batches run to calibrate activation ranges


@register_technique(Fp16Config)
def quant_fp16(model: nn.Module, cfg: Fp16Config, ctx: RunContext) -> TechniqueResult:
    """Float16 weights and compute (ONNX Runtime; about half the float32 file)."""
    return TechniqueResult(model=model, details={"note": _DETAILS_NOTE}, export_format="fp16")


@register_technique(Int8DynamicConfig)
def quant_int8_dynamic(model: nn.Module, cfg: Int8DynamicConfig, ctx: RunContext) -> TechniqueResult:
    """Int8 weights, float activations quantized on the fly (dynamic range, as TFLite's)."""
    return TechniqueResult(model=model, details={"note": _DETAILS_NOTE}, export_format="int8_dynamic")


@register_technique(Int8StaticConfig)
def quant_int8_static(model: nn.Module, cfg: Int8StaticConfig, ctx: RunContext) -> TechniqueResult:
    """Int8 weights and activations, ranges calibrated on training batches (QDQ)."""
    if ctx.calibration is None:
        raise ConfigError(
            "quant.int8_static needs calibration input batches (ctx.calibration is None); "
            "run it with training data, or use quant.int8_dynamic, which needs none"
        )
    # ONNX Runtime has no static (QDQ) int8 LSTM/GRU/RNN: their weights stay float32 in the file.
    skipped = [
        SkippedLayer(name, type(m).__name__, "ONNX Runtime has no static int8 kernel for it; weights stay float32")
        for name, m in model.named_modules()
        if isinstance(m, nn.RNNBase)
    ]
    return TechniqueResult(
        model=model,
        skipped=skipped,
        details={"note": _DETAILS_NOTE, "calibration_batches": cfg.calibration_batches},
        export_format="int8_static",
    )
