"""model.hf.onnx: an hf row's transformers-style file (input_ids + attention_mask, right-padded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from modelshrink.config import parse_config  # noqa: E402
from modelshrink.data.synthetic import tiny_hf_folder, write_synthetic_csv  # noqa: E402
from modelshrink.export.onnx_hf import export_hf_onnx, hf_onnx_predictor, right_padded  # noqa: E402
from modelshrink.models.builders import ModelConfig, build_model, text_encoder  # noqa: E402
from modelshrink.runner.run import Runner  # noqa: E402

LABELS = ["joy", "anger", "fear"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hfonnx")
    return tiny_hf_folder(root / "clf", LABELS), write_synthetic_csv(root / "d.csv", n=90)


def test_rows_become_right_padded_ids_and_a_mask() -> None:
    rows = np.array([[0, 0, 5, 6, 7], [8, 9, 1, 10, 11]])
    ids, mask = right_padded(rows, pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 0, 0], [8, 9, 1, 10, 11]] and mask.tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    ids, _ = right_padded(np.array([[0, 1, 2, 3]]), pad_id=1)  # RoBERTa: <s> is 0 (stored as 1), <pad> is 1
    assert ids.tolist() == [[0, 2, 3, 1]] and ids.dtype == np.int64


def test_the_file_takes_input_ids_and_attention_mask_and_matches_torch(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, _ = setup
    cfg = ModelConfig(name="hf", path=str(folder))
    enc = text_encoder(cfg)
    model = build_model(cfg, enc.vocab_size, 3).eval()
    rows = enc.encode(["i feel so happy today and glad", "mad", "i was a bit nervous", ""])
    path = export_hf_onnx(model, rows[:2, -9:], tmp_path / "m.hf.onnx")  # traced on 2 rows of 9
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"] and graph.output[0].name == "logits"
    assert [d.dim_param for d in graph.input[1].type.tensor_type.shape.dim] == ["batch", "sequence"]
    got = hf_onnx_predictor(path, 0)(rows)  # 4 rows of 64: other batch and length
    with torch.no_grad():
        want = model(torch.from_numpy(rows)).numpy()
        ids, mask = right_padded(rows, 0)
        inner = model.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, inner, rtol=1e-4, atol=1e-5)


def test_an_hf_row_writes_and_checks_it(
    setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    folder, csv = setup
    step = {"kind": "prune.transformer", "head_sparsity": 0.5, "ffn_sparsity": 0.5, "vocab_keep": "used",
            "importance": "l2", "epochs": 0}  # fmt: skip
    cfg = parse_config({
        "data": {"task": "csv", "path": str(csv)}, "model": {"name": "hf", "path": str(folder)}, "seeds": [0],
        "train": {"epochs": 1, "batch_size": 16, "threads": 1},
        "variants": [{"name": "vocab", "steps": [step]}],
    })  # fmt: skip
    (row,) = Runner(cfg, tmp_path / "o", log=lambda m: None).run()
    assert row["status"] == "ok", row.get("error")
    vocab = row["steps"][0]["details"]["vocabulary_rows"]  # the runner's context offers the training rows
    assert vocab["after"] < vocab["before"] and vocab["training_tokens_read_as_unk"] == 0.0
    hf = row["hf_onnx"]
    path = tmp_path / "o" / hf["file"]
    assert path.name == "model.hf.onnx" and hf["file_bytes"] == path.stat().st_size
    assert hf["matches"] and hf["compared_with"] == "onnx_fp32" and hf["max_abs_logit_diff"] < 1e-4
    assert hf["test_accuracy"] == pytest.approx(row["onnx_fp32_test_accuracy"], abs=1e-9)
    assert row["compact_matches_model"]
