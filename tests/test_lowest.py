"""The features the dependency floors in pyproject.toml stand for, checked in whatever versions are installed.

`make test-lowest` runs this file (with a fast subset of the suite) in a venv holding the lowest versions the
floors allow, so a floor set below the version that ships a feature fails there.
"""

from __future__ import annotations

import inspect

import pytest


def test_pydantic_exclude_if_leaves_defaults_out_of_dumps() -> None:
    # pydantic < 2.12 accepts exclude_if and ignores it: dumps (and so config hashes) would change.
    from modelshrink.models.builders import ModelConfig

    dumped = ModelConfig().model_dump()
    assert "kernel_size" not in dumped and "build" not in dumped
    assert ModelConfig(name="cnn1d-text", kernel_size=5).model_dump()["kernel_size"] == 5


def test_optuna_trial_has_set_constraint() -> None:
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    trial = study.ask()
    trial.set_constraint("budget", -1.0)  # AttributeError before optuna 5.0
    study.tell(trial, 1.0)
    assert study.trials[0].constraints == {"budget": -1.0}


def test_torch_onnx_export_takes_dynamo() -> None:
    import torch

    assert "dynamo" in inspect.signature(torch.onnx.export).parameters  # new in torch 2.5


def test_dynamo_exporter_fallback_runs(tmp_path) -> None:
    # The fallback exporter imports onnxscript (a declared dependency) and onnx_ir, which it brings.
    import onnx
    import torch

    from modelshrink.export.onnx import _export_dynamo

    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    path = tmp_path / "m.onnx"
    try:
        _export_dynamo(model, torch.zeros(2, 4), path, {"input_names": ["input"], "output_names": ["logits"]})
    except ImportError as err:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"the dynamo exporter cannot import its dependencies: {err}")
    assert len(onnx.load(str(path)).graph.node) >= 1
