"""--device: resolution, refusals before anything runs, where models end up; the GPU tests run only on a GPU."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from modelshrink.cli import main
from modelshrink.data.synthetic import write_synthetic_csv
from modelshrink.device import autocast, precision, resolve_device
from modelshrink.errors import ConfigError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _config(tmp_path: Path, variants: list[dict] | None = None) -> Path:
    csv = write_synthetic_csv(tmp_path / "d.csv", 150)
    cfg = {"data": {"task": "csv", "path": str(csv), "vocab_size": 64, "max_len": 16},
           "model": {"embed_dim": 8, "hidden": 8}, "train": {"epochs": 1}, "seeds": [0],
           "variants": variants or [{"name": "baseline", "steps": []}]}  # fmt: skip
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_auto_takes_a_gpu_only_when_torch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ConfigError, match="unknown --device 'tpu'; known: auto, cpu, cuda, mps"):
        resolve_device("tpu")


def test_mixed_precision_is_off_on_the_cpu() -> None:
    assert isinstance(autocast(torch.device("cpu")), contextlib.nullcontext)
    assert precision(torch.device("cpu")) == "fp32"


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_absent_device_one_line_exit_2_nothing_written(
    device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a machine that has one
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main(["run", "--config", str(_config(tmp_path)), "--device", device, "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--device {device}, but torch sees no" in err and "--device cpu" in err
    assert not out.exists()


@pytest.mark.gpu
@needs_cuda
def test_training_runs_on_the_gpu_and_comes_back_to_the_cpu(tmp_path: Path) -> None:
    from modelshrink.data.tasks import DataConfig, load_task
    from modelshrink.models.lstm import LSTMClassifier
    from modelshrink.train import TrainConfig, fit, model_device

    data = load_task(DataConfig(task="csv", path=str(write_synthetic_csv(tmp_path / "gpu.csv", 300)),
                                vocab_size=64, max_len=16))  # fmt: skip
    model = LSTMClassifier(data.input_dim, data.num_labels, 8, 8, 0.0, 0.0)
    seen: list[str] = []
    model.register_forward_hook(lambda m, i, o: seen.append(i[0].device.type))
    history = fit(model, data, TrainConfig(epochs=2, device="cuda"), seed=0)
    assert "cuda" in seen and model_device(model).type == "cpu" and len(history) == 2


@pytest.mark.gpu
@needs_cuda
def test_techniques_that_train_run_on_the_gpu(tmp_path: Path) -> None:
    steps = [
        {"name": "pruned", "steps": [{"kind": "prune.magnitude", "schedule": "constant", "final_sparsity": 0.5,
                                      "epochs": 1}]},
        {"name": "clustered", "steps": [{"kind": "cluster.kmeans", "clusters": 4, "epochs": 1}]},
        {"name": "qat", "steps": [{"kind": "quant.qat", "epochs": 1}]},
        {"name": "distilled", "steps": [{"kind": "distill.kd", "student": {"embed_dim": 4, "hidden": 4}}]},
    ]  # fmt: skip
    out = tmp_path / "run"
    cfg = _config(tmp_path, [{"name": "baseline", "steps": []}, *steps])
    main(["run", "--config", str(cfg), "--device", "cuda", "--out", str(out)])
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())}
    assert {n: r["status"] for n, r in rows.items()} == dict.fromkeys(rows, "ok"), [
        r.get("error") for r in rows.values()
    ]
    assert all(r["train_device"].startswith("cuda") for r in rows.values())
    assert rows["pruned"]["nonzeros"] < 0.6 * rows["baseline"]["nonzeros"]
    assert rows["clustered"]["checks_failed"] == 0
