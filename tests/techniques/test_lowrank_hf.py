"""lowrank on a Hugging Face transformer: FFN (attention, word embedding) factored, rebuilt from the saved config."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from modelshrink import runtime  # noqa: E402
from modelshrink.config import parse_config  # noqa: E402
from modelshrink.data.synthetic import tiny_hf_folder, write_synthetic_csv  # noqa: E402
from modelshrink.data.tasks import DataConfig, TaskData, load_task  # noqa: E402
from modelshrink.errors import ConfigError, IncompatibleModelError  # noqa: E402
from modelshrink.export.compact import load_model, save_model  # noqa: E402
from modelshrink.export.onnx import OnnxClassifier, export_onnx  # noqa: E402
from modelshrink.models.builders import ModelConfig, build_model, saved_config, text_encoder  # noqa: E402
from modelshrink.models.hf import fewer_layers  # noqa: E402
from modelshrink.models.hf_lowrank import RANKS_KEY  # noqa: E402
from modelshrink.models.hf_prune import RemappedEmbedding  # noqa: E402
from modelshrink.runner.run import Runner  # noqa: E402
from modelshrink.techniques import RunContext, get_technique  # noqa: E402
from modelshrink.techniques.lowrank import LowRankConfig, lowrank  # noqa: E402
from modelshrink.techniques.prune_transformer import TransformerPruneConfig  # noqa: E402

LABELS = ["joy", "anger", "fear"]
FFN = [f"bert.encoder.layer.{i}.{s}" for i in (0, 1) for s in ("intermediate.dense", "output.dense")]


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelConfig, TaskData, Path]:
    root = tmp_path_factory.mktemp("lowrank_hf")
    cfg = ModelConfig(name="hf", path=str(tiny_hf_folder(root / "clf", LABELS)))  # hidden 32, FFN 64, 2 layers
    csv = write_synthetic_csv(root / "d.csv", n=90)
    return cfg, load_task(DataConfig(task="csv", path=str(csv)), text_encoder(cfg)), csv


def _ctx(cfg: ModelConfig, data: TaskData) -> RunContext:
    return RunContext(example_input=torch.from_numpy(data.x_train[:8]), model_config=cfg, input_dim=data.input_dim,
                      num_labels=data.num_labels, train_inputs=lambda: data.x_train,
                      preprocessing=data.preprocessing)  # fmt: skip


def _model(task: tuple[ModelConfig, TaskData, Path]) -> nn.Module:
    cfg, data, _ = task
    return build_model(cfg, data.input_dim, data.num_labels).eval()


def _logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _factor(task: tuple[ModelConfig, TaskData, Path], model: nn.Module, **fields: Any) -> Any:  # noqa: ANN401
    return lowrank(model, LowRankConfig(**{"epochs": 0, **fields}), _ctx(task[0], task[1]))


def test_exact_at_the_weights_full_rank_and_smaller_by_the_expected_count(
    task: tuple[ModelConfig, TaskData, Path],
) -> None:
    data = task[1]
    base = _model(task)
    r = 6
    with torch.no_grad():  # make every FFN weight exactly rank r: factoring it at rank r loses nothing
        for name in FFN:
            w = base.model.get_submodule(name).weight
            w.copy_(torch.randn(w.shape[0], r) @ torch.randn(r, w.shape[1]) / 8)
    res = _factor(task, copy.deepcopy(base), linear_rank=r)
    assert res.details["ranks"] == dict.fromkeys(FFN, r)
    assert all(e == pytest.approx(1.0) for e in res.details["energy_kept"].values())
    np.testing.assert_allclose(_logits(res.model, data.x_test), _logits(base, data.x_test), rtol=1e-4, atol=1e-5)
    # Each FFN Linear (32 → 64 and 64 → 32) goes from in·out weights to r·(in + out); its bias stays.
    saved = 2 * 2 * (32 * 64 - r * (32 + 64))
    assert (
        res.details["parameters_before"] - res.details["parameters_after"]
        == saved
        == _params(base) - _params(res.model)
    )
    assert res.details["layer_parameters"][FFN[0]] == [32 * 64 + 64, r * 96 + 64]
    assert {s.name for s in res.skipped} >= {
        "classifier",
        "bert.pooler.dense",
        "bert.encoder.layer.0.attention.self.query",
    }
    assert res.model_config.hf_config[RANKS_KEY] == dict.fromkeys(FFN, r)


def test_factoring_at_min_dims_keeps_the_logits(task: tuple[ModelConfig, TaskData, Path]) -> None:
    """The SVD factors themselves: every layer of all three parts at rank min(m, n) (which never shrinks, so
    lowrank itself would skip it) gives the same logits."""
    from modelshrink.models.hf_lowrank import part_layers, set_module
    from modelshrink.techniques.lowrank import _factor

    data = task[1]
    base = _model(task)
    model = copy.deepcopy(base)
    for names in part_layers(model.model).values():
        for name in names:
            layer = model.model.get_submodule(name)
            set_module(model.model, name, _factor(layer, min(layer.weight.shape)))
    assert sum(isinstance(m, nn.Sequential) for m in model.modules()) == 13  # 2 × (2 FFN + 4 attention) + 1
    np.testing.assert_allclose(_logits(model, data.x_test), _logits(base, data.x_test), rtol=1e-4, atol=1e-5)


def test_all_parts_round_trip_through_config_compact_file_onnx_and_runtime(
    task: tuple[ModelConfig, TaskData, Path], tmp_path: Path
) -> None:
    cfg, data, _ = task
    res = _factor(task, _model(task), parts=("ffn", "attention", "embeddings"), params_kept=0.5, embed_rank=4)
    assert res.details["ranks"]["bert.embeddings.word_embeddings"] == 4
    assert res.details["ranks"][FFN[0]] == 10 and res.details["ranks"]["bert.encoder.layer.1.attention.self.key"] == 8
    model = res.model
    want = _logits(model, data.x_test)
    rebuilt = build_model(res.model_config, data.input_dim, data.num_labels).eval()
    rebuilt.load_state_dict(model.state_dict())  # strict: the config holds every factored shape
    np.testing.assert_allclose(_logits(rebuilt, data.x_test), want, rtol=1e-5, atol=1e-6)

    x = torch.from_numpy(data.x_test)
    meta = saved_config(res.model_config.model_dump(mode="json"), model)
    save_model(model, tmp_path / "w.msz", meta, data.input_dim, data.labels, data.preprocessing, example_input=x[:2])
    loaded, _ = load_model(tmp_path / "w.msz")
    np.testing.assert_allclose(_logits(loaded, data.x_test), want, rtol=1e-5, atol=1e-6)
    onnx = export_onnx(model, x[:2, -7:], tmp_path / "m.onnx")  # traced on another batch and length
    np.testing.assert_allclose(OnnxClassifier(onnx).predict_logits(data.x_test, batch_size=5), want, rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    texts = ["i feel so happy today", "zzqx blorf"]
    got = runtime.load(tmp_path / "w.msz").predict(texts)
    ids = text_encoder(cfg).encode(texts)
    np.testing.assert_allclose(got.probabilities, torch.softmax(torch.from_numpy(_logits(model, ids)), -1).numpy(),
                               atol=1e-5)  # fmt: skip


def test_after_prune_transformer_it_factors_the_pruned_shapes_and_rebuilds(
    task: tuple[ModelConfig, TaskData, Path],
) -> None:
    cfg, data, _ = task
    ctx = _ctx(cfg, data)
    prune = TransformerPruneConfig(importance="l2", epochs=0, head_sparsity=0.5, ffn_sparsity=0.5, vocab_keep=20)
    pruned = get_technique("prune.transformer").apply(_model(task), prune, ctx)
    ctx = dataclasses.replace(ctx, model_config=pruned.model_config)
    res = lowrank(pruned.model, LowRankConfig(epochs=0, parts=("ffn", "embeddings"), linear_rank=4, embed_rank=4), ctx)
    table = res.model.model.get_input_embeddings()[0]
    assert isinstance(table, RemappedEmbedding) and table.num_embeddings == 20  # the remap stays in front
    assert res.details["layer_parameters"][FFN[0]] == [32 * 32 + 32, 4 * 64 + 32]  # FFN 32 wide after the cut
    rebuilt = build_model(res.model_config, data.input_dim, data.num_labels).eval()
    rebuilt.load_state_dict(res.model.state_dict())
    np.testing.assert_allclose(_logits(rebuilt, data.x_test), _logits(res.model, data.x_test), rtol=1e-5, atol=1e-6)
    # The other order is refused by name: the pruner needs plain Linears.
    with pytest.raises(IncompatibleModelError, match="put prune.transformer before lowrank"):
        get_technique("prune.transformer").apply(res.model, prune.model_copy(update={"vocab_keep": None}), ctx)


def test_a_student_with_fewer_layers_keeps_its_layers_ranks(task: tuple[ModelConfig, TaskData, Path]) -> None:
    data = task[1]
    res = _factor(task, _model(task), linear_rank=5)
    student, keep = fewer_layers(res.model, 1)
    assert keep == [0] and getattr(student.model.config, RANKS_KEY) == dict.fromkeys(FFN[:2], 5)
    assert isinstance(student.model.bert.encoder.layer[0].intermediate.dense, nn.Sequential)
    assert _logits(student, data.x_test).shape == (len(data.x_test), 3)


def test_bad_settings_and_the_prune_structured_refusal(task: tuple[ModelConfig, TaskData, Path]) -> None:
    model = _model(task)
    with pytest.raises(ConfigError, match=r"linear_rank=32 is not below min\(dims\)=32"):
        _factor(task, copy.deepcopy(model), linear_rank=32)
    with pytest.raises(ValueError, match="names a part twice"):
        LowRankConfig(parts=("ffn", "ffn"))
    with pytest.raises(ValueError, match="parts"):
        LowRankConfig(parts=("pooler",))  # type: ignore[arg-type]
    lstm_cfg = ModelConfig(name="lstm", embed_dim=8, hidden=8)
    lstm = build_model(lstm_cfg, 64, 3)
    ctx = RunContext(example_input=torch.randint(0, 64, (2, 5)), model_config=lstm_cfg, input_dim=64, num_labels=3)
    with pytest.raises(ConfigError, match="remove `parts`"):
        lowrank(lstm, LowRankConfig(parts=("ffn",), epochs=0), ctx)
    assert set(LowRankConfig().model_dump()) == {"kind", "embed_rank", "linear_rank", "energy", "epochs"}  # hashes
    assert LowRankConfig(params_kept=0.5).search_label() == "lowrank-p0.5"
    # prune.structured on an hf model: one line naming the hf counterpart.
    with pytest.raises(IncompatibleModelError, match=r"use prune.transformer \(head_sparsity, ffn_sparsity"):
        get_technique("prune.structured").apply(model, get_technique("prune.structured").config_cls(), _ctx(*task[:2]))


def test_a_run_row_with_lowrank_on_the_hf_folder(task: tuple[ModelConfig, TaskData, Path], tmp_path: Path) -> None:
    cfg, _, csv = task
    step = {"kind": "lowrank", "params_kept": 0.5, "epochs": 1}
    config = parse_config({
        "data": {"task": "csv", "path": str(csv)}, "model": {"name": "hf", "path": cfg.path}, "seeds": [0],
        "train": {"epochs": 1, "batch_size": 16, "threads": 1},
        "variants": [{"name": "lowrank-ffn", "steps": [step]}],
    })  # fmt: skip
    (row,) = Runner(config, tmp_path / "o", log=lambda m: None).run()
    assert row["status"] == "ok", row.get("error")
    assert row["steps"][0]["details"]["ranks"] == dict.fromkeys(FFN, 10)
    assert row["compact_matches_model"] and row["hf_onnx"]["matches"]
