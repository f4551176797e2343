"""Each built-in model exports to ONNX and gives torch's logits in ONNX Runtime, at other batch and sequence sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modelshrink.export.onnx import OnnxClassifier, export_onnx
from modelshrink.models import MODEL_INPUT, ModelConfig, build_model


# hf models need a folder: their export is checked on a tiny BERT in tests/models/test_hf.py.
@pytest.mark.parametrize("name", sorted(n for n in MODEL_INPUT if n != "hf"))
def test_onnx_export_matches_torch_on_new_shapes(name: str, tmp_path: Path) -> None:
    text = MODEL_INPUT[name] == "text"
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), 50 if text else 1, 4).eval()  # type: ignore[arg-type]
    example = torch.randint(1, 50, (8, 12)) if text else torch.rand(8, 1, 8, 8)
    path = export_onnx(model, example, tmp_path / "m.onnx")
    # Another batch size, and (text) another sequence length, with pre-padding: the axes are dynamic.
    x = torch.randint(1, 50, (3, 20)) if text else torch.rand(3, 1, 8, 8)
    if text:
        x[0, :15] = 0
    with torch.no_grad():
        expected = model(x).numpy()
    got = OnnxClassifier(path).predict_logits(x.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
