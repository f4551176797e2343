"""prune.transformer vocab_keep: word-embedding rows the training data never uses, cut out of a tiny BERT."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from modelshrink import runtime  # noqa: E402
from modelshrink.data.hf_text import tokenizer_special_ids, tokenizer_unk_id  # noqa: E402
from modelshrink.data.synthetic import tiny_hf_folder, write_synthetic_csv  # noqa: E402
from modelshrink.data.tasks import DataConfig, TaskData, load_task  # noqa: E402
from modelshrink.errors import ConfigError  # noqa: E402
from modelshrink.export.compact import load_model, save_model  # noqa: E402
from modelshrink.export.onnx import OnnxClassifier, export_onnx  # noqa: E402
from modelshrink.models.builders import ModelConfig, build_model, saved_config, text_encoder  # noqa: E402
from modelshrink.models.hf_prune import VOCAB_KEY, RemappedEmbedding  # noqa: E402
from modelshrink.techniques import RunContext, get_technique  # noqa: E402
from modelshrink.techniques.prune_transformer import TransformerPruneConfig  # noqa: E402

LABELS = ["joy", "anger", "fear"]
UNK = 1  # tiny_hf_folder's specials: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelConfig, TaskData]:
    root = tmp_path_factory.mktemp("vocab")
    cfg = ModelConfig(name="hf", path=str(tiny_hf_folder(root / "clf", LABELS)))
    return cfg, load_task(
        DataConfig(task="csv", path=str(write_synthetic_csv(root / "d.csv", n=90))), text_encoder(cfg)
    )


def _ctx(cfg: ModelConfig, data: TaskData, offered: bool = True) -> RunContext:
    return RunContext(example_input=torch.from_numpy(data.x_train[:8]), model_config=cfg, input_dim=data.input_dim,
                      num_labels=data.num_labels, train_inputs=(lambda: data.x_train) if offered else None,
                      preprocessing=data.preprocessing)  # fmt: skip


def _prune(model: torch.nn.Module, cfg: ModelConfig, data: TaskData, **fields: Any) -> Any:  # noqa: ANN401
    tcfg = TransformerPruneConfig(**{"importance": "l2", "epochs": 0, "head_sparsity": 0.0, "ffn_sparsity": 0.0,
                                     **fields})  # type: ignore[arg-type]  # fmt: skip
    return get_technique("prune.transformer").apply(model, tcfg, _ctx(cfg, data))


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_tokenizer_ids_are_read_from_tokenizer_json(task: tuple[ModelConfig, TaskData]) -> None:
    tokenizer = task[1].preprocessing["hf_tokenizer"]["tokenizer_json"]
    assert tokenizer_special_ids(tokenizer) == [0, 1, 2, 3, 4] and tokenizer_unk_id(tokenizer) == UNK


def test_unused_rows_go_and_kept_text_reads_as_before(task: tuple[ModelConfig, TaskData]) -> None:
    cfg, data = task
    base = build_model(cfg, data.input_dim, data.num_labels).eval()
    vocab = data.input_dim
    seen = set(np.unique(data.x_train).tolist()) - {0} | {0, 1, 2, 3, 4}  # ids in training + the specials

    used = _prune(copy.deepcopy(base), cfg, data, vocab_keep="used")
    table = used.model.model.get_input_embeddings()
    assert isinstance(table, RemappedEmbedding) and table.num_embeddings == len(seen) < vocab
    assert used.details["vocabulary_rows"]["after"] == len(seen) and used.details["vocabulary_rows"]["before"] == vocab
    assert used.details["parameters_before"] - used.details["parameters_after"] == (vocab - len(seen)) * 32
    assert used.model_config.hf_config[VOCAB_KEY] == len(seen)
    # Every training row reads exactly as before (its ids are all kept).
    np.testing.assert_allclose(_logits(used.model, data.x_train), _logits(base, data.x_train), rtol=1e-5, atol=1e-6)

    # vocab_keep N: the 5 specials and the most frequent training ids, N rows in all.
    keep = 20
    res = _prune(copy.deepcopy(base), cfg, data, vocab_keep=keep)
    remap = res.model.model.get_input_embeddings().remap
    assert res.model.model.get_input_embeddings().num_embeddings == keep
    kept = {i for i in range(vocab) if i == UNK or int(remap[i]) != int(remap[UNK])}
    counts = np.bincount(data.x_train.ravel(), minlength=vocab)
    counts[[0, 1, 2, 3, 4]] = 0
    assert len(kept) == keep and {0, 1, 2, 3, 4} <= kept and set(np.argsort(-counts, kind="stable")[:15]) <= kept
    assert 0 < res.details["vocabulary_rows"]["training_tokens_read_as_unk"] < 1
    x = data.x_test
    whole = np.isin(x, list(kept)).all(axis=1)
    unk_x = np.where(np.isin(x, list(kept)), x, UNK)  # each dropped token written as [UNK]
    assert whole.any() and (~whole).any()  # rows of both kinds
    pruned_x = _logits(res.model, x)
    np.testing.assert_allclose(pruned_x[whole], _logits(base, x[whole]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pruned_x, _logits(base, unk_x), rtol=1e-5, atol=1e-6)  # dropped id == [UNK]
    assert not np.allclose(pruned_x[~whole], _logits(base, x[~whole]), rtol=1e-5, atol=1e-6)


def test_with_heads_and_ffn_the_files_rebuild_it(task: tuple[ModelConfig, TaskData], tmp_path: Path) -> None:
    cfg, data = task
    base = build_model(cfg, data.input_dim, data.num_labels).eval()
    x = torch.from_numpy(data.x_test)
    res = _prune(base, cfg, data, vocab_keep=20, head_sparsity=0.5, ffn_sparsity=0.5)
    pruned = res.model
    assert res.details["heads_per_layer"]["after"] == [1, 1] and res.details["ffn_per_layer"]["after"] == 32
    want = _logits(pruned, data.x_test)

    rebuilt = build_model(res.model_config, data.input_dim, data.num_labels).eval()
    rebuilt.load_state_dict(pruned.state_dict())  # strict: the config holds every shape, remap included
    meta_cfg = saved_config(res.model_config.model_dump(mode="json"), pruned)
    save_model(pruned, tmp_path / "w.msz", meta_cfg, data.input_dim, data.labels, data.preprocessing,
               example_input=x[:2])  # fmt: skip
    loaded, _ = load_model(tmp_path / "w.msz")
    np.testing.assert_allclose(_logits(rebuilt, data.x_test), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_logits(loaded, data.x_test), want, rtol=1e-5, atol=1e-6)

    onnx = export_onnx(pruned, x[:2, -7:], tmp_path / "m.onnx")  # traced on another batch and length
    np.testing.assert_allclose(OnnxClassifier(onnx).predict_logits(data.x_test, batch_size=5), want,
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    # The torch-free runtime: the file's own tokenizer, its graph with the remap; unseen words read [UNK].
    texts = ["i feel so happy today", "zzqx blorf", ""]
    got = runtime.load(tmp_path / "w.msz").predict(texts)
    ids = text_encoder(cfg).encode(texts)
    np.testing.assert_allclose(got.probabilities, torch.softmax(torch.from_numpy(_logits(pruned, ids)), -1).numpy(),
                               atol=1e-5)  # fmt: skip


def test_vocab_keep_is_checked(task: tuple[ModelConfig, TaskData]) -> None:
    cfg, data = task
    model = build_model(cfg, data.input_dim, data.num_labels).eval()
    with pytest.raises(ConfigError, match="fewer than the tokenizer's 5 special tokens"):
        _prune(copy.deepcopy(model), cfg, data, vocab_keep=4)
    tcfg = TransformerPruneConfig(vocab_keep="used", importance="l2", epochs=0)
    with pytest.raises(ConfigError, match="needs the training rows"):
        get_technique("prune.transformer").apply(model, tcfg, _ctx(cfg, data, offered=False))
    for bad in ("all", 1):
        with pytest.raises(ValueError, match="vocab_keep"):
            TransformerPruneConfig(vocab_keep=bad)  # type: ignore[arg-type]
    assert "vocab_keep" not in TransformerPruneConfig().model_dump()  # unset: config hashes stay
    assert TransformerPruneConfig(vocab_keep=7).search_label() == "heads0.5-ffn0.5-vocab7"
    assert TransformerPruneConfig.model_validate_json(tcfg.model_dump_json()) == tcfg
