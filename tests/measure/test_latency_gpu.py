"""Latency on the GPU (ONNX Runtime's CUDA provider): chosen only with a CUDA device and the provider, recorded
beside the CPU figures, absent (not zero) otherwise. Runs on the CPU: the providers are monkeypatched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from modelshrink.data.synthetic import synthetic_text_task
from modelshrink.export.onnx import OnnxClassifier, export_onnx
from modelshrink.measure.latency import CUDA_PROVIDER, gpu_latency_provider, gpu_runner
from modelshrink.models import LSTMClassifier
from modelshrink.runner import measure, timing
from modelshrink.runner.row import VariantRow

DATA = synthetic_text_task(n=60, vocab_size=32, max_len=8)


def test_the_cuda_provider_is_chosen_only_for_a_cuda_device_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA_PROVIDER, "CPUExecutionProvider"])
    assert gpu_latency_provider("cuda") == CUDA_PROVIDER and gpu_latency_provider("cuda:1") == CUDA_PROVIDER
    assert gpu_latency_provider("cpu") is None and gpu_latency_provider("mps") is None
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])  # onnxruntime, not -gpu
    assert gpu_latency_provider("cuda") is None


def _onnx(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=32, num_labels=DATA.num_labels, embed_dim=4, hidden=4).eval()
    return export_onnx(model, torch.from_numpy(DATA.x_test[:2]), tmp_path / "m.onnx")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a machine without CUDA")
def test_a_session_that_falls_back_to_the_cpu_gives_no_gpu_runner(tmp_path: Path) -> None:
    assert gpu_runner(str(_onnx(tmp_path)), CUDA_PROVIDER) is None


def _row(art: measure.ArtifactRow) -> dict:
    return VariantRow("fp32", art.artifact, [], 1, 1, 1, 4, None,
                      {s: {"accuracy": 0.5, "macro_f1": 0.5, "confusion_matrix": []} for s in ("train", "val", "test")},
                      DATA.labels, {}, 1.0, 1, [art]).to_dict()  # fmt: skip


def test_gpu_figures_sit_beside_the_cpu_ones_and_are_absent_without_a_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    path = _onnx(tmp_path)
    providers: list[str] = []

    def cpu_standing_in(file: str, provider: str):  # noqa: ANN202 - this machine has no GPU: the CPU stands in
        providers.append(provider)
        clf = OnnxClassifier(Path(file))
        return lambda xb: clf.session.run(None, {clf.input_name: xb})

    monkeypatch.setattr(timing, "gpu_runner", cpu_standing_in)
    stats = {"dense_fp32_bytes": 1, "parameters": 1, "nonzeros": 1}
    art = measure.onnx_artifact("onnx_fp32", path, 1)
    with_gpu = measure.measure_artifact(art, DATA, tmp_path, stats, None, measure.ArtifactCache(),
                                        gpu_provider=CUDA_PROVIDER)  # fmt: skip
    assert providers == [CUDA_PROVIDER] and [r["batch"] for r in with_gpu.latency_gpu or []] == [1, 256]
    assert all(r["provider"] == CUDA_PROVIDER and r["median_ms"] > 0 for r in with_gpu.latency_gpu or [])
    row = _row(with_gpu)
    assert row["ms_onnx_fp32_b1_gpu"] == with_gpu.latency_gpu[0]["median_ms"] and "ms_onnx_fp32_b1_t1" in row  # type: ignore[index]
    assert len(row["latency_gpu"]) == 2 and all("provider" not in r for r in row["latency"])

    without = measure.measure_artifact(art, DATA, tmp_path, stats, None, measure.ArtifactCache())
    row = _row(without)
    assert without.latency_gpu is None and "latency_gpu" not in row and not [k for k in row if k.endswith("_gpu")]
    assert np.isfinite(row["ms_onnx_fp32_b1_t1"])
