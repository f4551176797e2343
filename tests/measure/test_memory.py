from pathlib import Path

import pytest
import torch

from modelshrink.errors import ArtifactError
from modelshrink.export.compact import save_model
from modelshrink.export.onnx import export_onnx
from modelshrink.measure.memory import peak_rss_mb
from modelshrink.models.builders import ModelConfig, build_model


def test_peak_memory_of_a_fresh_process_per_artifact(tmp_path: Path) -> None:
    cfg = ModelConfig(embed_dim=8, hidden=8)
    model = build_model(cfg, 50_000, 3).eval()  # a 1.6 MB embedding: visible above the runtime noise
    onnx_path = export_onnx(model, torch.zeros(2, 5, dtype=torch.int64), tmp_path / "m.onnx")
    res = peak_rss_mb("onnxruntime", onnx_path, (256, 5), "int64")
    assert 10 < res["runtime_rss_mb"] < res["peak_rss_mb"] < 2000
    assert res["model_rss_mb"] > 1.5  # at least the weights it loaded
    compact = tmp_path / "m.msz"
    save_model(model, compact, cfg.model_dump(mode="json"), 50_000, ["a", "b", "c"], {})
    res = peak_rss_mb("torch", compact, (256, 5), "int64")
    assert res["model_rss_mb"] > 1.5 and res["peak_rss_mb"] > res["runtime_rss_mb"]
    assert 0 < res["cold_start_s"] == pytest.approx(res["import_s"] + res["load_s"] + res["first_run_s"])
    save_model(model, compact, cfg.model_dump(mode="json"), 50_000, ["a", "b", "c"], {},
               example_input=torch.zeros(2, 5, dtype=torch.int64))  # fmt: skip
    res = peak_rss_mb("modelshrink.runtime", compact, (256, 5), "int64")
    assert res["model_rss_mb"] > 1.5 and res["torch_imported"] is False
    with pytest.raises(ArtifactError, match="memory measurement"):
        peak_rss_mb("onnxruntime", tmp_path / "missing.onnx", (1, 5), "int64")
