"""Bring your own model: the docs' example runs as written; --model file.py:function and its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import modelshrink
from modelshrink.cli import main
from modelshrink.data.tasks import DataConfig, load_task
from modelshrink.errors import ConfigError, UnknownNameError
from modelshrink.export.onnx import OnnxClassifier
from modelshrink.models import ModelConfig, build_model
from modelshrink.models.byo import ModelInputs
from modelshrink.techniques import TECHNIQUES
from modelshrink.train import TrainConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "byo.md"


def _doc_example() -> str:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)[0]


def test_doc_example_is_short_and_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _doc_example()
    assert len([line for line in code.splitlines() if line.strip()]) < 15
    monkeypatch.chdir(tmp_path)  # the example writes runs/byo-digits relative to the working directory
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - our own documentation's example
    results = scope["results"]
    assert isinstance(results, modelshrink.Results)
    by_name = {r["variant"]: r for r in results.rows}
    assert set(by_name) == {"baseline", "pruned", "int8"} and all(r["status"] == "ok" for r in results.rows)
    assert by_name["baseline"]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert by_name["pruned"]["nonzeros"] < 0.6 * by_name["baseline"]["nonzeros"]
    assert by_name["int8"]["file_bytes"] < by_name["baseline"]["file_bytes"]
    assert (tmp_path / "runs" / "byo-digits" / "summary.md").is_file()
    assert "baseline" in results.table() and results["int8"][0]["export_format"] == "int8_dynamic"
    config = json.loads((tmp_path / "runs" / "byo-digits" / "config.json").read_text())
    assert config["model"]["name"] == "custom" and config["model"]["build"].endswith(":build")


_BUILD_FILE = """
from torch import nn

def build(inputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(64 * inputs.input_dim, inputs.num_labels))

def not_a_module(inputs):
    return "a string"

def wrong_width(inputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
"""


def test_model_flag_trains_a_model_from_a_file(tmp_path: Path) -> None:
    models = tmp_path / "my_models.py"
    models.write_text(_BUILD_FILE)
    out = tmp_path / "run"
    code = main(["train", "--task", "digits", "--preset", "digits", "--model", f"{models}:build", "--epochs", "2",
                 "--seed", "0", "--out", str(out)])  # fmt: skip
    assert code == 0
    row = json.loads((out / "results.json").read_text())[0]
    assert row["status"] == "ok" and row["test_accuracy"] > 0.3
    assert json.loads((out / "config.json").read_text())["model"] == {**ModelConfig().model_dump(), "name": "custom",
                                                                      "build": f"{models}:build"}  # fmt: skip


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("missing.py:build", "does not exist"),
        ("my_models.py:nope", "has no function 'nope'; functions in it: build, not_a_module, wrong_width"),
        ("my_models.py:not_a_module", "returned str, not a torch.nn.Module"),
        ("my_models.py:wrong_width", r"returned \[2, 3\].*\[batch, 10\]"),
    ],
)
def test_model_flag_errors_are_one_line_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, message: str
) -> None:
    (tmp_path / "my_models.py").write_text(_BUILD_FILE)
    out = tmp_path / "run"
    code = main(["train", "--task", "digits", "--preset", "digits", "--model", f"{tmp_path / suffix}",
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, " ".join(err.split())), err
    assert not out.exists()  # nothing half-written


def test_builtin_model_flag_and_unknown_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--task", "digits", "--model", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "neither a built-in model" in capsys.readouterr().err
    assert main(["train", "--task", "digits", "--model", "lstm", "--out", str(tmp_path / "y")]) == 2
    assert "gives images but model 'lstm' reads text" in " ".join(capsys.readouterr().err.split())


def test_task_flag_swaps_a_text_preset_model_for_an_image_model() -> None:
    from modelshrink.config import Overrides, resolve

    seed_cfg, note = resolve("seed")
    assert seed_cfg.model.name == "lstm" and note is None
    chosen, note = resolve("seed", None, Overrides(task="digits"))
    assert chosen.model.name == "cnn-small" and chosen.variants == seed_cfg.variants
    assert note is not None and "reads text" in note
    assert resolve("seed", None, Overrides(task="digits", model="mlp"))[0].model.name == "mlp"


def test_model_config_names_unused_and_missing_settings() -> None:
    with pytest.raises(ValueError, match="model 'lstm' does not read heads"):
        ModelConfig(name="lstm", heads=4)
    with pytest.raises(ValueError, match="needs `build"):
        ModelConfig(name="custom")
    with pytest.raises(ValueError, match="heads \\(3\\) must divide embed_dim \\(32\\)"):
        ModelConfig(name="transformer-tiny", heads=3)
    assert ModelConfig(**ModelConfig(name="gru", hidden=16).model_dump()).hidden == 16  # dumps load back


def test_technique_functions_on_a_model_in_hand(tmp_path: Path) -> None:
    data = load_task(DataConfig(task="digits", subsample=300))
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", hidden=32), 1, 10)
    pruned = modelshrink.prune(model, sparsity=0.5).model
    w = pruned.body[1].weight.detach()
    assert abs(float((w == 0).float().mean()) - 0.5) < 0.01
    clustered = modelshrink.cluster(build_model(ModelConfig(name="mlp", hidden=32), 1, 10), clusters=8, data=data,
                                    epochs=1).model  # fmt: skip
    assert torch.unique(clustered.body[1].weight.detach()).numel() <= 8
    x = torch.from_numpy(data.x_train[:8])
    path = modelshrink.quantize(model, x, tmp_path / "m.onnx", mode="int8_dynamic")
    assert OnnxClassifier(path).predict_logits(data.x_test).shape == (len(data.x_test), 10)
    with pytest.raises(ConfigError, match="unknown quantization mode 'int4'"):
        modelshrink.quantize(model, x, tmp_path / "m.onnx", mode="int4")


def test_distill_looks_the_technique_up_lazily() -> None:
    data = load_task(DataConfig(task="digits", subsample=200))
    teacher_config = ModelConfig(name="mlp", hidden=32)
    teacher = build_model(teacher_config, 1, 10)
    if "distill.kd" not in TECHNIQUES:
        with pytest.raises(UnknownNameError, match="needs the technique 'distill.kd'"):
            modelshrink.distill(teacher, teacher_config, data)
    else:  # the distillation technique is installed: it trains a smaller student
        out = modelshrink.distill(teacher, teacher_config, data, student={"hidden": 8},
                                  train=TrainConfig(epochs=1, threads=1))  # fmt: skip
        assert out.model_config == ModelConfig(name="mlp", hidden=8)
        assert sum(p.numel() for p in out.model.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_build_fn_gets_the_task_info() -> None:
    seen: list[ModelInputs] = []

    def build(inputs: ModelInputs) -> nn.Module:
        seen.append(inputs)
        return nn.Linear(1, inputs.num_labels)

    from modelshrink.models.byo import register_build_fn

    ref = register_build_fn(build)
    build_model(ModelConfig(name="custom", build=ref), 7, 3)
    assert seen == [ModelInputs(input_dim=7, num_labels=3)]


def test_a_custom_compact_file_never_imports_the_file_it_names(tmp_path: Path) -> None:
    """Loading a .msz whose metadata names `evil.py:build` refuses in a fresh process (the file is not
    imported: it would leave a marker), and rebuilds when the caller passes the function."""
    import subprocess
    import sys

    from modelshrink.export.compact import load_model, save_model

    marker = tmp_path / "imported"
    src = tmp_path / "evil.py"
    src.write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\nfrom torch import nn\n"
        "def build(inputs):\n    return nn.Linear(inputs.input_dim, inputs.num_labels)\n"
    )
    cfg = ModelConfig(name="custom", build=f"{src}:build")
    model = build_model(cfg, 4, 2)
    marker.unlink()  # building it here ran it, as --model does; the file alone must not
    path = tmp_path / "w.msz"
    save_model(model, path, cfg.model_dump(mode="json"), 4, ["a", "b"], {"kind": "image", "labels": ["a", "b"]})
    code = (
        "import sys\nfrom modelshrink.export.compact import load_model\nfrom modelshrink.errors import ArtifactError\n"
        f"try:\n    load_model({str(path)!r})\nexcept ArtifactError as e:\n    print(e); sys.exit(2)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "never runs code" in done.stdout, done.stdout + done.stderr
    assert not marker.exists()

    def build(inputs: ModelInputs) -> nn.Module:
        return nn.Linear(inputs.input_dim, inputs.num_labels)

    loaded, _ = load_model(path, build_fn=build)
    torch.testing.assert_close(loaded.weight, model.weight)
