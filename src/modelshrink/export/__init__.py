"""Artifact files: the project's compact weight format and ONNX float32/float16/int8.

Names are loaded lazily, so `import modelshrink.export` (or the compact format alone)
does not pull in ONNX and ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelshrink.export.compact import (
        FORMAT_VERSION,
        load_compact,
        load_model,
        read_compact_header,
        save_compact,
        save_model,
    )
    from modelshrink.export.onnx import OnnxClassifier, export_onnx, onnx_weight_stats

_LAZY = {
    "FORMAT_VERSION": "modelshrink.export.compact",
    "load_compact": "modelshrink.export.compact",
    "read_compact_header": "modelshrink.export.compact",
    "save_compact": "modelshrink.export.compact",
    "load_model": "modelshrink.export.compact",
    "save_model": "modelshrink.export.compact",
    "OnnxClassifier": "modelshrink.export.onnx",
    "export_onnx": "modelshrink.export.onnx",
    "onnx_weight_stats": "modelshrink.export.onnx",
}

__all__ = [
    "FORMAT_VERSION",
    "OnnxClassifier",
    "export_onnx",
    "load_compact",
    "load_model",
    "onnx_weight_stats",
    "read_compact_header",
    "save_compact",
    "save_model",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'modelshrink.export' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
