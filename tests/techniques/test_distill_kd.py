"""distill.kd: the Hinton loss, a real distillation on synthetic text, and clear refusals."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modelshrink.config import parse_config
from modelshrink.data.synthetic import synthetic_text_task, write_synthetic_csv
from modelshrink.data.tasks import TaskData
from modelshrink.errors import ConfigError
from modelshrink.models import ModelConfig, build_model
from modelshrink.runner.run import Runner
from modelshrink.techniques import RunContext, get_technique
from modelshrink.techniques.distill_kd import DistillKDConfig, distill_kd, kd_loss, student_config
from modelshrink.train import TrainConfig, evaluate, fit

TEACHER = ModelConfig(name="lstm", embed_dim=16, hidden=16, dropout=0.0)


def test_kd_loss_matches_hinton_formula() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4) * 3
    y = torch.randint(0, 4, (5,))
    for temp in (1.0, 2.0, 8.0):
        p_t = F.softmax(t / temp, -1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / temp, -1))).sum(-1).mean()
        expected = 0.7 * temp**2 * kl + 0.3 * F.cross_entropy(s, y)
        assert torch.allclose(kd_loss(s, t, y, temp, 0.7), expected, rtol=1e-5)
    assert torch.allclose(kd_loss(s, t, y, 4.0, 0.0), F.cross_entropy(s, y))  # alpha 0: labels only
    assert float(kd_loss(t, t, y, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)  # student = teacher: no soft loss


def test_temperature_squared_keeps_soft_gradients_comparable() -> None:
    # Hinton et al.: soft-target gradients scale as 1/T²; the T² factor undoes it, so the
    # gradient norm at T=8 stays within a small factor of T=2 (without it: ~16x smaller).
    torch.manual_seed(1)
    t = torch.randn(64, 6)
    y = torch.zeros(64, dtype=torch.long)
    norms = {}
    for temp in (2.0, 8.0):
        s = (t + 0.5 * torch.randn(64, 6)).requires_grad_()
        torch.manual_seed(2)
        kd_loss(s, t, y, temp, 1.0).backward()
        norms[temp] = float(s.grad.norm())  # type: ignore[union-attr]
    assert 0.25 < norms[8.0] / norms[2.0] < 4.0


def _setup(train_teacher: bool = True) -> tuple[TaskData, nn.Module, RunContext]:
    data = synthetic_text_task(n=300)
    cfg = TrainConfig(batch_size=16, threads=1, epochs=8, lr=0.02)
    torch.manual_seed(0)
    teacher = build_model(TEACHER, data.input_dim, data.num_labels)
    if train_teacher:
        fit(teacher, data, cfg, seed=0)
    ctx = RunContext(example_input=torch.from_numpy(data.x_train[:8]), teacher=teacher, model_config=TEACHER,
                     input_dim=data.input_dim, num_labels=data.num_labels,
                     train=lambda m, loss: fit(m, data, cfg, seed=0, loss_fn=loss))  # fmt: skip
    return data, teacher, ctx


def test_distilled_student_is_smaller_learns_and_rebuilds() -> None:
    data, teacher, ctx = _setup()
    before = copy.deepcopy(teacher.state_dict())
    cfg = DistillKDConfig(student={"embed_dim": 4, "hidden": 8}, temperature=2.0, alpha=0.5)
    res = distill_kd(teacher, cfg, ctx)  # the incoming model is not the student's start
    d = res.details
    assert d["student_params"] < d["teacher_params"] / 2
    assert d["student_params"] == sum(p.numel() for p in res.model.parameters())
    assert d["teacher_batches"] > 0 and d["teacher_inference_seconds"] >= 0.0
    assert res.model_config.embed_dim == 4 and res.model_config.hidden == 8 and res.input_dim == data.input_dim
    rebuilt = build_model(res.model_config, data.input_dim, data.num_labels)
    rebuilt.load_state_dict(res.model.state_dict())  # the compact file would rebuild it
    acc = evaluate(res.model, data.x_test, data.y_test, data.num_labels)["accuracy"]
    assert acc > 1 / data.num_labels + 0.2  # it learned (synthetic keywords are easy)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # teacher untouched


def test_default_student_is_half_width() -> None:
    assert student_config(DistillKDConfig(), TEACHER).model_dump() == {
        **TEACHER.model_dump(), "embed_dim": 8, "hidden": 8}  # fmt: skip  # channels: not read by lstm
    other = student_config(DistillKDConfig(student={"name": "cnn", "channels": 2}), TEACHER)
    assert other.name == "cnn" and other.channels == 2


def test_bad_students_and_missing_teacher_are_clear_errors() -> None:
    data, teacher, ctx = _setup(train_teacher=False)
    with pytest.raises(ConfigError, match=r"not fewer than the teacher's"):
        distill_kd(teacher, DistillKDConfig(student={"embed_dim": 64}), ctx)
    with pytest.raises(ConfigError, match=r"invalid student"):
        distill_kd(teacher, DistillKDConfig(student={"hiden": 4}), ctx)
    no_teacher = copy.copy(ctx)
    no_teacher.teacher = None
    with pytest.raises(ConfigError, match=r"needs a trained teacher"):
        distill_kd(teacher, DistillKDConfig(), no_teacher)


def test_registered() -> None:
    assert get_technique("distill.kd").config_cls is DistillKDConfig


def test_runner_rebuilds_changed_architectures_from_their_files(tmp_path: Path) -> None:
    """Distilled, low-rank and QAT variants through the runner: files load back and score as reported."""
    csv = write_synthetic_csv(tmp_path / "d.csv", 150)
    student = {"kind": "distill.kd", "student": {"embed_dim": 4, "hidden": 4}}
    cfg = parse_config({
        "data": {"task": "csv", "path": str(csv), "vocab_size": 64, "max_len": 16},
        "model": {"embed_dim": 8, "hidden": 8}, "train": {"epochs": 1}, "seeds": [0],
        "variants": [
            {"name": "baseline", "steps": []},
            {"name": "kd-pc", "steps": [student, {"kind": "prune.magnitude", "final_sparsity": 0.5, "epochs": 0},
                                        {"kind": "cluster.kmeans", "clusters": 3, "preserve_sparsity": True,
                                         "epochs": 0}]},
            {"name": "lowrank", "steps": [{"kind": "lowrank", "embed_rank": 2, "epochs": 0}]},
            {"name": "kd-qat", "steps": [student, {"kind": "quant.qat", "epochs": 1}]},
        ],
    })  # fmt: skip
    logged: list[str] = []
    rows = {r["variant"]: r for r in Runner(cfg, tmp_path / "o", log=logged.append).run()}
    assert all(r["status"] == "ok" for r in rows.values()), {k: r.get("error") for k, r in rows.items()}
    # The teacher classifies the training rows once for both students, and says so (minutes for a transformer).
    teacher = [m for m in logged if "the teacher classified" in m]
    assert len(teacher) == 1, logged
    assert 100 <= int(teacher[0].split("classified ")[1].split()[0]) <= 110  # the training split: 70 % of 150
    for name in ("kd-pc", "lowrank"):  # the compact file rebuilt the new architecture and scored as the ONNX file
        assert rows[name]["compact_test_accuracy"] == pytest.approx(rows[name]["test_accuracy"], abs=1e-9)
        assert rows[name]["compact_bytes"] < rows["baseline"]["compact_bytes"]
        assert rows[name]["parameters"] < rows["baseline"]["parameters"]
    kd = rows["kd-pc"]["steps"][0]["details"]
    assert kd["teacher_params"] == rows["baseline"]["parameters"] and kd["teacher_train_seconds"] > 0
    assert rows["kd-qat"]["export_format"] == "int8_weights" and rows["kd-qat"]["test_agreement_with_reference"] == 1.0
    assert rows["kd-qat"]["onnx_weights"]["int8_bytes"] > rows["kd-qat"]["onnx_weights"]["float_bytes"]


def test_teach_later_fine_tunes_later_steps_on_the_distillation_loss(tmp_path: Path, monkeypatch) -> None:
    """`teach_later`: a pruning step after distill.kd fine-tunes on the KD loss (one more epoch of kd_loss
    calls), and the step's details say which loss later steps use; without it they use the labels."""
    import modelshrink.techniques.distill_kd as kd_mod

    calls = {"n": 0}
    real = kd_mod.kd_loss

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(kd_mod, "kd_loss", counting)
    csv = write_synthetic_csv(tmp_path / "d.csv", 150)
    counts, details = {}, {}
    for later in (False, True):
        kd = {"kind": "distill.kd", "student": {"embed_dim": 4, "hidden": 4}, "teach_later": later}
        cfg = parse_config({
            "data": {"task": "csv", "path": str(csv), "vocab_size": 64, "max_len": 16},
            "model": {"embed_dim": 8, "hidden": 8}, "train": {"epochs": 1}, "seeds": [0],
            "variants": [{"name": "kd-pruned", "steps": [
                kd, {"kind": "prune.magnitude", "final_sparsity": 0.5, "schedule": "constant", "epochs": 1}]}],
        })  # fmt: skip
        calls["n"] = 0
        rows = Runner(cfg, tmp_path / f"o{later}", log=lambda m: None).run()
        assert rows[0]["status"] == "ok", rows[0].get("error")
        counts[later] = calls["n"]
        details[later] = rows[0]["steps"][0]["details"]["later_steps_fine_tune_on"]
    # The student trains 1 epoch on the KD loss either way; with teach_later the pruning step's 1 epoch too.
    assert counts[False] > 0 and counts[True] == 2 * counts[False]
    assert details == {False: "the labels", True: "this distillation loss"}
