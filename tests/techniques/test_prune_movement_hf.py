"""prune.movement `start: pretrained` (Sanh et al. 2020's setting) on the tiny test BERT: the folder's weights, a new head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from modelshrink.data.synthetic import tiny_hf_folder  # noqa: E402
from modelshrink.errors import ConfigError  # noqa: E402
from modelshrink.models import LSTMClassifier  # noqa: E402
from modelshrink.models.builders import ModelConfig, build_model, fresh_head  # noqa: E402
from modelshrink.techniques.base import RunContext  # noqa: E402
from modelshrink.techniques.prune_movement import MovementPruneConfig, prune_movement  # noqa: E402

LABELS = ["anger", "joy", "fear"]
CFG = MovementPruneConfig(start="pretrained", final_sparsity=0.5, begin_step=1, end_step=2, frequency=1, epochs=1)


def _ctx(mc: ModelConfig, fine_tune: object = None) -> RunContext:
    return RunContext(example_input=torch.ones((2, 5), dtype=torch.long), num_labels=3, model_config=mc,
                      fine_tune=fine_tune or (lambda model, epochs, on_step, params: []))  # fmt: skip


def test_start_pretrained_fine_tunes_from_the_folders_weights_with_a_new_head(tmp_path: Path) -> None:
    mc = ModelConfig(name="hf", path=str(tiny_hf_folder(tmp_path / "bert", None)))  # encoder only: pretrained
    model = build_model(mc, 0, 3)
    fresh_head(model, LABELS)
    folder_weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # "fine-tuned": every weight moved away from the folder's
        for p in model.parameters():
            p.add_(0.5)
    seen: dict[str, torch.Tensor] = {}

    def fine_tune(m: torch.nn.Module, epochs: int, on_step: object, params: object) -> list[dict[str, float]]:
        seen.update({k: v.clone() for k, v in m.state_dict().items()})  # what pruning fine-tunes from
        return []

    res = prune_movement(model, CFG, _ctx(mc, fine_tune))
    head = [k for k in seen if "classifier" in k and k.endswith("weight")]
    assert head and len(seen) == len(folder_weights)
    for name, value in seen.items():
        if "classifier" not in name:
            torch.testing.assert_close(value, folder_weights[name], msg=name)  # the folder's, not the incoming
    w = seen[head[0]]
    assert abs(float(w.mean())) < 0.05 and float(w.std()) < 0.1  # a new head (std 0.02), not the moved one (+0.5)
    assert str(mc.path) in res.details["start"] and res.details["overall_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert [model.model.config.id2label[i] for i in range(3)] == LABELS


def test_start_pretrained_refuses_a_fine_tuned_folder_and_a_model_without_one(tmp_path: Path) -> None:
    mc = ModelConfig(name="hf", path=str(tiny_hf_folder(tmp_path / "clf", LABELS)))  # already classifies LABELS
    with pytest.raises(ConfigError, match="already classifies these labels"):
        prune_movement(build_model(mc, 0, 3), CFG, _ctx(mc))
    lstm = ModelConfig(name="lstm", embed_dim=8, hidden=8)
    with pytest.raises(ConfigError, match="hf model read from a folder"):
        prune_movement(LSTMClassifier(vocab_size=50, num_labels=3, embed_dim=8, hidden=8), CFG, _ctx(lstm))
