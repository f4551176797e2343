"""Every registered technique on every built-in model (the product), tiny sizes, 1 fine-tuning epoch.

The pairs in REFUSED must refuse with an IncompatibleModelError naming the model (the coverage
table, `modelshrink coverage`, then says why); every other pair must succeed. So a technique that
starts refusing a model it handled, or handles one it refused, fails here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modelshrink.data.synthetic import synthetic_image_task, synthetic_text_task
from modelshrink.data.tasks import TaskData
from modelshrink.errors import IncompatibleModelError
from modelshrink.export.onnx import OnnxClassifier, export_onnx
from modelshrink.models import MODEL_INPUT, ModelConfig, build_model
from modelshrink.techniques import TECHNIQUES, RunContext, SkippedLayer, get_technique
from modelshrink.train import TrainConfig, fine_tune, fit

# The smallest sizes each model accepts, so the whole product stays fast.
TINY = {
    "lstm": {"embed_dim": 8, "hidden": 8}, "gru": {"embed_dim": 8, "hidden": 8}, "bilstm": {"embed_dim": 8, "hidden": 8},
    "cnn1d-text": {"embed_dim": 8, "channels": 8}, "transformer-tiny": {"embed_dim": 8, "hidden": 16, "heads": 2},
    "cnn": {"channels": 4}, "cnn-small": {"channels": 4}, "mlp": {"hidden": 16},
    "hf": {},  # the path of a tiny BERT folder (1 layer, hidden 32), built by the `hf_task` fixture
}  # fmt: skip


# (technique, model) pairs that must refuse: lowrank rebuilds only the LSTM's and hf models' factored
# layers from their ModelConfig; prune.structured knows only the LSTM's and TinyCNN's layer groups.
# hf: prune.structured as above (prune.transformer is its counterpart); distill.kd's default student of
# the 1-layer tiny BERT (fewer layers) cannot exist (tests/techniques/test_distill_hf.py distills a 2-layer one).
REFUSED = {
    *(("lowrank", m) for m in ("bilstm", "cnn", "cnn-small", "cnn1d-text", "gru", "mlp", "transformer-tiny")),
    *(("prune.structured", m) for m in ("bilstm", "cnn-small", "cnn1d-text", "gru", "mlp", "transformer-tiny")),
    *(("prune.transformer", m) for m in MODEL_INPUT if m != "hf"),  # heads and FFN neurons of hf models only
    ("prune.structured", "hf"),
    ("distill.kd", "hf"),
}


def _image_task() -> TaskData:
    return synthetic_image_task()


_DATA = {"text": synthetic_text_task(n=120), "image": _image_task()}


@pytest.fixture(scope="module")
def hf_task(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], TaskData]:
    """A tiny BERT folder and the synthetic text tokenized by its own tokenizer (only the hf cells build it)."""
    pytest.importorskip("transformers")
    from modelshrink.data.synthetic import tiny_hf_folder, write_synthetic_csv
    from modelshrink.data.tasks import DataConfig, load_task
    from modelshrink.models.builders import text_encoder

    root = tmp_path_factory.mktemp("hf")
    folder = tiny_hf_folder(root / "bert", ["anger", "fear", "joy"], layers=1)
    csv = write_synthetic_csv(root / "d.csv", n=120)
    data = load_task(DataConfig(task="csv", path=str(csv)), text_encoder(ModelConfig(name="hf", path=str(folder))))
    return {"path": str(folder)}, data


def _ctx(data: TaskData, model_config: ModelConfig, teacher: nn.Module) -> RunContext:
    cfg = TrainConfig(batch_size=32, threads=1)

    def tune(model: nn.Module, epochs: int, on_step=None, params=None) -> None:  # noqa: ANN001
        fine_tune(model, data, cfg, seed=0, epochs=min(epochs, 1), on_step=on_step, params=params)

    return RunContext(example_input=torch.from_numpy(data.x_train[:8]), seed=0,
                      steps_per_epoch=-(-len(data.x_train) // 32), fine_tune=tune,
                      calibration=[torch.from_numpy(data.x_train[i : i + 32]) for i in range(0, 64, 32)],
                      teacher=teacher, model_config=model_config, input_dim=data.input_dim,
                      num_labels=data.num_labels,
                      train=lambda m, loss: fit(m, data, cfg.model_copy(update={"epochs": 1}), 0, loss_fn=loss))  # fmt: skip


def test_every_builtin_model_has_tiny_sizes() -> None:
    assert set(TINY) == set(MODEL_INPUT)
    assert {m for _, m in REFUSED} <= set(MODEL_INPUT) and {k for k, _ in REFUSED} <= set(TECHNIQUES)


@pytest.mark.parametrize("model_name", sorted(MODEL_INPUT))
@pytest.mark.parametrize("kind", sorted(TECHNIQUES))
def test_technique_on_builtin_model(kind: str, model_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    tech = get_technique(kind)
    cfg = tech.config_cls()
    tiny, data = request.getfixturevalue("hf_task") if model_name == "hf" else (TINY[model_name],
                                                                               _DATA[MODEL_INPUT[model_name]])  # fmt: skip
    torch.manual_seed(0)
    model_config = ModelConfig(name=model_name, **tiny)  # type: ignore[arg-type]
    model = build_model(model_config, data.input_dim, data.num_labels).eval()
    ctx = _ctx(data, model_config, copy.deepcopy(model))
    with torch.no_grad():
        before = model(ctx.example_input)
    if (kind, model_name) in REFUSED:  # a plain refusal that names the model, nothing else
        with pytest.raises(IncompatibleModelError) as refused:
            tech.apply(copy.deepcopy(model), cfg, ctx)
        assert model_name in str(refused.value) or type(model).__name__ in str(refused.value)
        return
    result = tech.apply(copy.deepcopy(model), cfg, ctx)
    with torch.no_grad():
        after = result.model.eval()(ctx.example_input)
    assert after.shape == before.shape
    assert torch.isfinite(after).all()
    assert all(isinstance(s, SkippedLayer) and s.reason and s.type for s in result.skipped)
    json.dumps(result.details)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in result.model.modules())
    if result.model_config is not None:  # a changed architecture rebuilds from its config (the compact file does)
        rebuilt = build_model(result.model_config, result.input_dim or data.input_dim, data.num_labels)
        rebuilt.load_state_dict(result.model.state_dict())
    # The result exports in the format the technique asks for and runs in ONNX Runtime.
    path = export_onnx(result.model, ctx.example_input, tmp_path / "m.onnx", result.export_format or "fp32",
                       calibration=ctx.calibration)  # fmt: skip
    logits = OnnxClassifier(path).predict_logits(data.x_test)
    assert logits.shape == (len(data.x_test), data.num_labels) and np.isfinite(logits).all()
