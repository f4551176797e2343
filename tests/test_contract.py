"""Every registered technique honours the contract, on a tiny LSTM and a tiny CNN."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from modelshrink.data.synthetic import synthetic_image_task, synthetic_text_task
from modelshrink.data.tasks import TaskData
from modelshrink.errors import IncompatibleModelError
from modelshrink.models import LSTMClassifier, ModelConfig, TinyCNN, build_model
from modelshrink.runner.checks import check_state
from modelshrink.techniques import NM, TECHNIQUES, DistinctValues, RunContext, SkippedLayer, Sparsity, get_technique
from modelshrink.train import TrainConfig, fine_tune, fit


def _image_task() -> TaskData:
    return synthetic_image_task()


def _ctx(data: TaskData, model_config: ModelConfig, teacher: nn.Module) -> RunContext:
    cfg = TrainConfig(batch_size=16, threads=1)

    def tune(model: nn.Module, epochs: int, on_step=None, params=None) -> None:  # noqa: ANN001
        fine_tune(model, data, cfg, seed=0, epochs=min(epochs, 1), on_step=on_step, params=params)

    x = torch.from_numpy(data.x_train[:8])
    return RunContext(example_input=x, seed=0, steps_per_epoch=-(-len(data.x_train) // 16), fine_tune=tune,
                      calibration=[torch.from_numpy(data.x_train[i : i + 16]) for i in range(0, 64, 16)],
                      teacher=teacher, model_config=model_config, input_dim=data.input_dim,
                      num_labels=data.num_labels,
                      train=lambda m, loss: fit(m, data, cfg.model_copy(update={"epochs": 1}), 0, loss_fn=loss))  # fmt: skip


MODELS = {
    "lstm": (lambda: LSTMClassifier(vocab_size=64, num_labels=3, embed_dim=8, hidden=8), synthetic_text_task),
    "cnn": (lambda: TinyCNN(num_labels=2, channels=4), _image_task),
}
# The ModelConfig that rebuilds each of MODELS (techniques that change the architecture need it).
MODEL_CONFIGS = {"lstm": ModelConfig(name="lstm", embed_dim=8, hidden=8), "cnn": ModelConfig(name="cnn", channels=4)}
# (technique, model) pairs that must refuse with IncompatibleModelError: lowrank cannot describe a
# factored TinyCNN in its ModelConfig, so its files would not load back; prune.transformer takes hf models only.
REFUSED = {("lowrank", "cnn"), ("prune.transformer", "lstm"), ("prune.transformer", "cnn")}


def test_registry_holds_the_thesis_techniques() -> None:
    assert {"prune.magnitude", "cluster.kmeans", "quant.int8_dynamic", "quant.fp16", "quant.int8_static"} <= set(
        TECHNIQUES
    )


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("kind", sorted(TECHNIQUES))
def test_technique_contract(kind: str, model_name: str) -> None:
    tech = get_technique(kind)
    cfg = tech.config_cls()  # works with no arguments
    assert type(cfg).model_validate_json(cfg.model_dump_json()) == cfg  # JSON round trip
    make_model, make_data = MODELS[model_name]
    torch.manual_seed(0)
    model = make_model().eval()
    ctx = _ctx(make_data(), MODEL_CONFIGS[model_name], copy.deepcopy(model))
    with torch.no_grad():
        before = model(ctx.example_input)
    if (kind, model_name) in REFUSED:  # a clear refusal naming the model, nothing else
        with pytest.raises(IncompatibleModelError, match=repr(MODEL_CONFIGS[model_name].name)):
            tech.apply(copy.deepcopy(model), cfg, ctx)
        return
    result = tech.apply(copy.deepcopy(model), cfg, ctx)
    with torch.no_grad():
        after = result.model.eval()(ctx.example_input)
    assert after.shape == before.shape
    assert all(isinstance(s, SkippedLayer) and s.reason for s in result.skipped)
    json.dumps(result.details)  # details go into the results store as JSON
    # What it declares it establishes is typed, stored as JSON, and true of the model it returns.
    assert all(isinstance(p, Sparsity | DistinctValues | NM) for p in result.properties)
    step = {"kind": kind, "properties": json.loads(json.dumps([p.to_dict() for p in result.properties]))}
    assert all(c["ok"] for c in check_state(result.model.state_dict(), [step], after="itself"))
    # The model that comes back is plain: no leftover parametrizations, hooks or extra parameters;
    # a technique that changed the architecture says how to rebuild it, and the rebuild matches.
    names = {n for n, _ in result.model.named_parameters()}
    if result.model_config is None:
        assert names == {n for n, _ in model.named_parameters()}
    else:
        rebuilt = build_model(result.model_config, result.input_dim or ctx.input_dim, ctx.num_labels or 0)
        rebuilt.load_state_dict(result.model.state_dict())  # strict: same names and shapes
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in result.model.modules())
