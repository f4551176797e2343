"""distill.kd on a transformer teacher (a tiny BERT built offline): a student with fewer layers
(DistilBERT style), a built-in student with its own word tokenizer (Tang et al. 2019), and the
teacher logits computed once per training row for every student and epoch."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from modelshrink.config import parse_config  # noqa: E402
from modelshrink.data.synthetic import tiny_hf_folder, write_synthetic_csv  # noqa: E402
from modelshrink.data.tasks import DataConfig, load_task  # noqa: E402
from modelshrink.data.text import read_text_csv, split_indices  # noqa: E402
from modelshrink.errors import ConfigError  # noqa: E402
from modelshrink.export.compact import load_model, save_model  # noqa: E402
from modelshrink.export.onnx import OnnxClassifier, export_onnx  # noqa: E402
from modelshrink.measure.accuracy import predict_logits  # noqa: E402
from modelshrink.models.builders import ModelConfig, build_model, saved_config, text_encoder  # noqa: E402
from modelshrink.models.hf import HFClassifier  # noqa: E402
from modelshrink.predict import load_text_classifier  # noqa: E402
from modelshrink.runner.pipeline import make_context  # noqa: E402
from modelshrink.runner.run import Runner  # noqa: E402
from modelshrink.techniques.base import RunContext  # noqa: E402
from modelshrink.techniques.distill_kd import DistillKDConfig, distill_kd  # noqa: E402
from modelshrink.train import TrainConfig, torch_predictor  # noqa: E402

LABELS = ["joy", "anger", "fear"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("distill_hf")
    return tiny_hf_folder(root / "bert", LABELS, layers=2), write_synthetic_csv(root / "d.csv", n=150)


def _teacher_ctx(folder: Path, csv: Path, epochs: int = 2) -> tuple[HFClassifier, object, object, list[int]]:
    cfg = ModelConfig(name="hf", path=str(folder))
    data = load_task(DataConfig(task="csv", path=str(csv)), text_encoder(cfg))
    teacher = build_model(cfg, data.input_dim, data.num_labels).eval()
    calls: list[int] = []

    def logits() -> torch.Tensor:
        calls.append(1)
        return torch.from_numpy(predict_logits(torch_predictor(teacher), data.x_train))

    ctx = make_context(data, TrainConfig(epochs=epochs, batch_size=16, threads=1), 0, teacher=teacher,
                       model_config=cfg, teacher_logits=logits)  # fmt: skip
    return teacher, data, ctx, calls  # type: ignore[return-value]


def test_fewer_layers_student_starts_from_the_teachers_layer_trains_exports_rebuilds(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, csv = setup
    teacher, data, ctx, calls = _teacher_ctx(folder, csv)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    res = distill_kd(teacher, DistillKDConfig(student={"layers": 1}, temperature=2.0), ctx)  # type: ignore[arg-type]
    student = res.model
    assert isinstance(student, HFClassifier) and student.model.config.num_hidden_layers == 1
    assert res.details["teacher_layers_kept"] == [0] and res.details["student_params"] < res.details["teacher_params"]
    assert len(calls) == 1 and res.details["teacher_batches"] == 0  # the teacher's logits: asked for once, by row
    assert res.model_config.name == "hf" and res.model_config.path is None and res.view is None
    # At init the student is the teacher's layer 0, embeddings and head: rebuild it untrained and compare.
    from modelshrink.models.hf import fewer_layers

    fresh, kept = fewer_layers(teacher, 1)
    t_state = teacher.state_dict()
    layer = "model.bert.encoder.layer."
    for key, value in fresh.state_dict().items():
        source = key.replace(f"{layer}0.", f"{layer}{kept[0]}.") if key.startswith(layer) else key
        assert torch.equal(value, t_state[source]), key
    assert not any(k.startswith(f"{layer}1.") for k in fresh.state_dict())
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in student.state_dict().items())  # it trained
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # teacher untouched
    # Rebuilds from its saved config (no folder), exports to ONNX like the teacher, and the compact file loads back.
    rebuilt = build_model(res.model_config, data.input_dim, data.num_labels).eval()
    rebuilt.load_state_dict(student.state_dict())
    x = data.x_test
    expected = predict_logits(torch_predictor(student), x)
    np.testing.assert_allclose(predict_logits(torch_predictor(rebuilt), x), expected, atol=1e-5)
    onnx = OnnxClassifier(export_onnx(student, torch.from_numpy(x[:4]), tmp_path / "s.onnx", "fp32"))
    np.testing.assert_allclose(predict_logits(lambda b: onnx.predict_logits(b, len(b)), x), expected, atol=1e-4)
    meta = saved_config(res.model_config.model_dump(mode="json"), student)
    save_model(student, tmp_path / "s.msz", meta, data.input_dim, data.labels, data.preprocessing)
    loaded, _ = load_model(tmp_path / "s.msz")
    np.testing.assert_allclose(predict_logits(torch_predictor(loaded), x), expected, atol=1e-5)


def test_refusals_name_the_combination(setup: tuple[Path, Path]) -> None:
    folder, csv = setup
    teacher, _, ctx, _ = _teacher_ctx(folder, csv)
    with pytest.raises(ConfigError, match=r"student layers 2 must be fewer than the teacher's 2"):
        distill_kd(teacher, DistillKDConfig(student={"layers": 2}), ctx)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"an hf student takes only `layers`.*\['hidden'\]"):
        distill_kd(teacher, DistillKDConfig(student={"layers": 1, "hidden": 8}), ctx)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"student 'cnn' reads images"):
        distill_kd(teacher, DistillKDConfig(student={"name": "cnn"}), ctx)  # type: ignore[arg-type]
    no_view = copy.copy(ctx)
    no_view.view_context = None  # a hand-made context: no word-tokenized view of the same rows
    with pytest.raises(ConfigError, match=r"'lstm' student of an hf teacher reads its own word tokens"):
        distill_kd(teacher, DistillKDConfig(student={"name": "lstm"}), no_view)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'lstm' student of an hf teacher"):  # unnamed widths: the reference LSTM
        distill_kd(teacher, DistillKDConfig(student={"embed_dim": 8, "hidden": 16}), no_view)  # type: ignore[arg-type]
    lstm = ModelConfig(embed_dim=4, hidden=4)
    built_in = RunContext(example_input=torch.zeros(1, 4, dtype=torch.long), teacher=build_model(lstm, 20, 3),
                          model_config=lstm, input_dim=20, num_labels=3, train=lambda m, loss: [])  # fmt: skip
    with pytest.raises(ConfigError, match=r"a transformer \(hf\) student is made from an hf teacher's layers"):
        distill_kd(built_in.teacher, DistillKDConfig(student={"name": "hf"}), built_in)  # type: ignore[arg-type]


def test_lstm_student_with_its_own_tokenizer_and_teacher_logits_once(
    setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, csv = setup
    rows_seen: list[int] = []
    forward = HFClassifier.forward

    def counted(self: HFClassifier, x: torch.Tensor) -> torch.Tensor:
        rows_seen.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(HFClassifier, "forward", counted)
    kd = {"kind": "distill.kd", "temperature": 2.0}
    lstm, bilstm = {"name": "lstm", "embed_dim": 8, "hidden": 8}, {"name": "bilstm", "embed_dim": 8, "hidden": 4}
    cfg = parse_config({
        "data": {"task": "csv", "path": str(csv), "vocab_size": 64, "max_len": 16},
        "model": {"name": "hf", "path": str(folder)}, "seeds": [0],
        "train": {"epochs": 2, "batch_size": 16, "threads": 1},  # one thread: the loaded CI machine's 2 cores
        "variants": [{"name": "kd-lstm", "steps": [{**kd, "student": lstm}]},
                     {"name": "kd-bilstm", "steps": [{**kd, "student": bilstm}]}],
    })  # fmt: skip
    rows = {r["variant"]: r for r in Runner(cfg, tmp_path / "o", log=lambda m: None).run()}
    assert all(r["status"] == "ok" for r in rows.values()), {k: r.get("error") for k, r in rows.items()}
    # The teacher (measured as given: its head fits the labels) ran once over the training rows,
    # for 2 students x 2 epochs.
    n_train = len(load_task(cfg.data).x_train)
    assert sum(rows_seen) == n_train
    details = [rows[v]["steps"][0]["details"] for v in ("kd-lstm", "kd-bilstm")]
    assert [d["teacher_batches"] for d in details] == [0, 0] and all(d["epochs"] == 2 for d in details)
    row = rows["kd-lstm"]
    model_dir = tmp_path / "o" / "models" / "kd-lstm-seed0"
    pre = json.loads((model_dir / "preprocessing.json").read_text())
    assert "tokenizer" in pre and "hf_tokenizer" not in pre  # the student's own word tokenizer travels with it
    assert row["compact_matches_model"] and row["test_agreement_with_reference"] == 1.0
    assert row["compact_test_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-9)
    # Raw text through the files (the word tokenizer applied by predict and by the runtime) scores as the row says.
    texts, labels = read_text_csv(csv, "text", "label")
    test = split_indices(labels, cfg.data.split, cfg.data.split_seed, cfg.data.stratify)[2]
    for path in (model_dir, model_dir / "weights.msz"):
        predicted = [lab for lab, _ in load_text_classifier(path)([texts[i] for i in test])]
        accuracy = float(np.mean([p == labels[i] for p, i in zip(predicted, test, strict=True)]))
        assert accuracy == pytest.approx(row["test_accuracy"], abs=1e-9), path
