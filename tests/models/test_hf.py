"""`--model hf:PATH`: a tiny BERT folder (2 layers, hidden 32, WordPiece tokenizer) built offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from modelshrink import runtime  # noqa: E402
from modelshrink.cli import main  # noqa: E402
from modelshrink.config import Overrides, resolve  # noqa: E402
from modelshrink.data.hf_text import HFTextEncoder  # noqa: E402
from modelshrink.data.synthetic import tiny_hf_folder, write_synthetic_csv  # noqa: E402
from modelshrink.data.tasks import DataConfig, load_task  # noqa: E402
from modelshrink.errors import ConfigError  # noqa: E402
from modelshrink.export.compact import load_model, save_model  # noqa: E402
from modelshrink.export.onnx import OnnxClassifier, export_onnx  # noqa: E402
from modelshrink.models.builders import (  # noqa: E402
    ModelConfig,
    build_model,
    fresh_head,
    model_fingerprint,
    pretrained,
    saved_config,
    text_encoder,
)

LABELS = ["joy", "anger", "fear"]  # not sorted: the data must follow the head's order


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Built once per session: a sequence classifier for the synthetic labels, and an encoder-only folder."""
    root = tmp_path_factory.mktemp("hf")
    return {"clf": tiny_hf_folder(root / "clf", LABELS), "encoder": tiny_hf_folder(root / "enc", None, layers=1)}


@pytest.fixture(scope="session")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_csv(tmp_path_factory.mktemp("data") / "d.csv", n=90)


def _task(folder: Path, csv: Path, max_len: int | None = None) -> tuple[ModelConfig, object]:
    cfg = ModelConfig(name="hf", path=str(folder), max_len=max_len)
    return cfg, load_task(DataConfig(task="csv", path=str(csv)), text_encoder(cfg))


def test_wrapper_reads_pre_padded_ids_like_the_model_reads_one_sentence(hf_folders: dict[str, Path]) -> None:
    cfg = ModelConfig(name="hf", path=str(hf_folders["clf"]))
    enc = text_encoder(cfg)
    assert enc is not None and enc.max_len == 64 and enc.labels == LABELS  # min(128, 64 positions)
    x = enc.encode(["i feel so happy today", "furious"])
    assert x.shape == (2, 64) and (x[:, -1] == 3).all() and x[1, -3] == 2  # pre-padded: [CLS] ... [SEP] at the end
    model = build_model(cfg, enc.vocab_size, 3).eval()
    with torch.no_grad():
        padded = model(torch.from_numpy(x))
        alone = model.model(input_ids=torch.from_numpy(x[1:, -3:])).logits  # the short one, unpadded
    torch.testing.assert_close(padded[1:], alone, rtol=1e-4, atol=1e-5)


def test_pad_id_other_than_zero_is_swapped_and_restored() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<s>": 0, "<pad>": 1, "a": 2, "b": 3}, unk_token="a"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    enc = HFTextEncoder(tok.to_str(), max_len=5, pad_id=1)
    x = enc.encode(["<s> a b"])
    assert x.tolist() == [[0, 0, 1, 2, 3]]  # <s> (0) is stored as 1; 0 is padding


def test_onnx_export_has_dynamic_axes_and_matches_torch(hf_folders: dict[str, Path], tmp_path: Path) -> None:
    cfg = ModelConfig(name="hf", path=str(hf_folders["clf"]))
    enc = text_encoder(cfg)
    model = build_model(cfg, enc.vocab_size, 3).eval()
    x = enc.encode(["i feel so happy today and glad", "mad", "i was a bit nervous"])[:, -12:]
    path = export_onnx(model, torch.from_numpy(x[:2, -9:]), tmp_path / "m.onnx")  # traced on another shape
    got = OnnxClassifier(path).predict_logits(x, batch_size=3)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_labels_follow_the_head_and_the_baseline_is_taken_as_is(hf_folders: dict[str, Path], csv_path: Path) -> None:
    cfg, data = _task(hf_folders["clf"], csv_path)
    assert data.labels == LABELS and data.preprocessing["hf_tokenizer"]["pad_id"] == 0
    assert pretrained(cfg, data.labels)
    enc_cfg, enc_data = _task(hf_folders["encoder"], csv_path)
    assert enc_data.labels == sorted(LABELS) and not pretrained(enc_cfg, enc_data.labels)  # no head: a new one


def test_a_head_for_other_labels_is_replaced(hf_folders: dict[str, Path], csv_path: Path, tmp_path: Path) -> None:
    other = shutil.copytree(hf_folders["clf"], tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {"0": "neg", "1": "pos", "2": "neutral"}
    config["label2id"] = {"neg": 0, "pos": 1, "neutral": 2}
    (other / "config.json").write_text(json.dumps(config))
    cfg, data = _task(other, csv_path)
    assert data.labels == sorted(LABELS) and not pretrained(cfg, data.labels)
    model = build_model(cfg, data.input_dim, 3)
    before = model.model.classifier.weight.detach().clone()
    fresh_head(model, data.labels)
    assert not torch.equal(before, model.model.classifier.weight)
    assert model.config_dict()["id2label"] == {"0": "anger", "1": "fear", "2": "joy"}


def test_compact_file_rebuilds_without_the_folder(hf_folders: dict[str, Path], csv_path: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(hf_folders["clf"], tmp_path / "clf")
    cfg, data = _task(folder, csv_path)
    model = build_model(cfg, data.input_dim, data.num_labels).eval()
    meta_cfg = saved_config(cfg.model_dump(mode="json"), model)
    assert "path" not in meta_cfg and meta_cfg["hf_config"]["model_type"] == "bert"
    x = torch.from_numpy(data.x_test)
    save_model(
        model, tmp_path / "w.msz", meta_cfg, data.input_dim, data.labels, data.preprocessing, example_input=x[:2]
    )
    texts = ["i feel so mad", "what a lovely day", ""]
    ids = text_encoder(cfg).encode(texts)
    shutil.rmtree(folder)  # nothing may be read from the folder now
    # The torch-free runtime tokenizes with the file's own tokenizer and runs the file's graph.
    got = runtime.load(tmp_path / "w.msz").predict(texts)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(ids)), dim=-1).numpy()
    np.testing.assert_allclose(got.probabilities, want, atol=1e-5)
    assert got.labels == [data.labels[i] for i in want.argmax(axis=1)]
    loaded, meta = load_model(tmp_path / "w.msz")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    saved = HFTextEncoder.from_dict(meta["preprocessing"]["hf_tokenizer"])  # the file's own tokenizer
    assert (
        saved.encode(["i feel so mad"]).tolist()
        == text_encoder(ModelConfig(name="hf", path=str(hf_folders["clf"]))).encode(["i feel so mad"]).tolist()
    )


def test_folder_is_fingerprinted(hf_folders: dict[str, Path], tmp_path: Path) -> None:
    folder = shutil.copytree(hf_folders["encoder"], tmp_path / "f")
    first = model_fingerprint(ModelConfig(name="hf", path=str(folder)))
    changed = shutil.copytree(folder, tmp_path / "g")
    (changed / "config.json").write_text((changed / "config.json").read_text() + " ")
    assert first == model_fingerprint(ModelConfig(name="hf", path=str(tmp_path / "f")))
    assert first != model_fingerprint(ModelConfig(name="hf", path=str(changed)))
    assert model_fingerprint(ModelConfig(name="lstm")) is None


def _broken(src: Path, dest: Path, how: str) -> Path:
    folder = shutil.copytree(src, dest)
    if how == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
    elif how == "remote-code":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    elif how == "pickle":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    elif how == "unknown":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "no-such-arch"}))
    return folder


@pytest.mark.parametrize(
    ("how", "said"),
    [("no-tokenizer", "no tokenizer.json"), ("remote-code", "trust_remote_code stays off"),
     ("pickle", "pytorch_model.bin is pickle"), ("unknown", "unknown architecture")],
)  # fmt: skip
def test_bad_folders_are_refused_in_one_line(
    how: str, said: str, hf_folders: dict[str, Path], csv_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    folder = _broken(hf_folders["encoder"], tmp_path / how, how)
    out = tmp_path / "run"
    assert main(["run", "--task", "csv", "--data", str(csv_path), "--model", f"hf:{folder}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_max_len_beyond_positions_and_offline_hub_name(
    hf_folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="beyond the model's 64 position embeddings"):
        text_encoder(ModelConfig(name="hf", path=str(hf_folders["clf"]), max_len=65))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network in tests: the Hub route must fail fast, naming the fix
    cfg, _ = resolve("quick", overrides=Overrides(model="hf:no-such-org/no-such-model"))
    with pytest.raises(ConfigError, match="pass hf:path/to/folder"):
        text_encoder(cfg.model)
