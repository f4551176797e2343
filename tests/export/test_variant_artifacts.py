"""Every variant kind of the `seed` preset, run through the runner on tiny data: each artifact
is written, loads back, and the compact file predicts exactly as the in-memory model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modelshrink.config import parse_config, read_preset
from modelshrink.data.synthetic import write_synthetic_csv
from modelshrink.data.tasks import DataConfig, load_task
from modelshrink.export.compact import load_model, read_compact_header
from modelshrink.export.onnx import OnnxClassifier
from modelshrink.report.tables import summary_markdown
from modelshrink.runner import measure as measure_variant
from modelshrink.runner import timing
from modelshrink.runner.run import Runner


def _tiny(step: dict) -> dict:
    """The preset's step with tiny-data settings (same technique, same kind of result)."""
    if step["kind"] == "prune.magnitude":
        return {
            "kind": "prune.magnitude",
            "schedule": "constant",
            "final_sparsity": step["final_sparsity"],
            "epochs": 1,
        }
    if step["kind"] == "cluster.kmeans":
        return {**step, "epochs": 1}
    return step


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict], DataConfig]:
    tmp = tmp_path_factory.mktemp("seedlike")
    csv = write_synthetic_csv(tmp / "d.csv", 150)
    variants = [{"name": v["name"], "steps": [_tiny(s) for s in v["steps"]]} for v in read_preset("seed")["variants"]]
    data = DataConfig(task="csv", path=str(csv), vocab_size=64, max_len=16)
    cfg = parse_config({"data": data.model_dump(mode="json"), "model": {"embed_dim": 8, "hidden": 8},
                        "train": {"epochs": 1}, "seeds": [0], "variants": variants})  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:  # keep the test fast: short latency runs, memory tested apart
        mp.setattr(timing, "LATENCY_BUDGET_S", 0.002)
        mp.setattr(timing, "MEASURE_MEMORY", False)
        rows = Runner(cfg, tmp / "o", log=lambda m: None).run()
    return tmp / "o", {r["variant"]: r for r in rows}, data


def test_every_seed_variant_round_trips_exactly(run: tuple[Path, dict[str, dict], DataConfig]) -> None:
    out, rows, data_cfg = run
    assert set(rows) == {"baseline", "pruned", "clustered", "baseline-int8", "pruned-int8", "clustered-int8"}
    data = load_task(data_cfg)
    for name, row in rows.items():
        assert row["status"] == "ok", row.get("error")
        assert row["compact_matches_model"] is True, name  # checked by the runner: weights bit for bit
        model, meta = load_model(out / row["artifacts"]["compact"])
        with torch.no_grad():
            pred = model(torch.from_numpy(data.x_test)).argmax(1).numpy()
        assert meta["labels"] == data.labels
        # Full padded rows here vs trimmed batches in the runner: predictions agree.
        assert abs(float((pred == data.y_test).mean()) - row["compact_test_accuracy"]) < 1e-9, name
        expected = "int8 per-channel weight-only" if name.endswith("int8") else "float32"
        assert row["compact_weights"] == expected


def test_int8_compact_holds_int8_and_pruning_shows(run: tuple[Path, dict[str, dict], DataConfig]) -> None:
    out, rows, _ = run
    entries = {
        e["name"]: e for e in read_compact_header(out / rows["baseline-int8"]["artifacts"]["compact"])["tensors"]
    }
    assert entries["lstm.weight_ih_l0"]["quant"] == "int8" and "quant" not in entries["lstm.bias_ih_l0"]
    pruned = {e["name"]: e for e in read_compact_header(out / rows["pruned"]["artifacts"]["compact"])["tensors"]}
    assert pruned["embedding.weight"]["positions"] in ("bitmask", "delta")
    # Smaller files where the technique removed information.
    assert rows["baseline-int8"]["compact_bytes"] < rows["baseline"]["compact_bytes"]
    assert rows["clustered"]["compact_bytes"] < rows["baseline"]["compact_bytes"]


def test_onnx_artifacts_and_size_columns(run: tuple[Path, dict[str, dict], DataConfig]) -> None:
    out, rows, _ = run
    for row in rows.values():
        names = [a["artifact"] for a in row["sizes"]]
        assert names == ["onnx_fp32", "onnx_fp16", "onnx_int8", "compact", "msz_runtime"]
        for a in row["sizes"]:
            assert a["file_bytes"] == (out / a["file"]).stat().st_size
            assert a["compression_x"] == pytest.approx(row["baseline_dense_fp32_bytes"] / a["file_bytes"])
            assert 0 < a["gzip_bytes"] and a["params"] == row["parameters"] and a["nonzeros"] == row["nonzeros"]
            assert 0.0 <= a["test_accuracy"] <= 1.0
            if a["artifact"] not in ("compact", "msz_runtime"):
                OnnxClassifier(out / a["file"])  # loads in ONNX Runtime
        assert row["onnx_int8_bytes"] < row["onnx_fp32_bytes"]
        # The compact file shipped in the torch-free runtime: the same file, the accuracy of the same weights.
        assert row["msz_runtime_bytes"] == row["compact_bytes"] and row["not_exported"] == {}
        if row["compact_weights"] == "float32":  # the same weights as the float32 ONNX file
            assert row["msz_runtime_test_accuracy"] == row["onnx_fp32_test_accuracy"]
        assert row["baseline_dense_fp32_bytes"] == rows["baseline"]["dense_fp32_bytes"]
    # The variant's own file is the one of its format.
    assert rows["baseline-int8"]["file_bytes"] == rows["baseline-int8"]["onnx_int8_bytes"]


def test_latency_table_covers_batches_threads_and_runtimes(run: tuple[Path, dict[str, dict], DataConfig]) -> None:
    _, rows, _ = run
    lat = rows["pruned"]["latency"]
    combos = {(r["artifact"], r["runtime"], r["batch"], r["threads"]) for r in lat}
    threads = {r["threads"] for r in lat}
    assert 1 in threads and len(combos) == 5 * 2 * len(threads)
    assert {r["runtime"] for r in lat} == {"onnxruntime", "torch", "modelshrink.runtime"}
    for r in lat:
        assert 0 < r["median_ms"] <= r["p90_ms"] and r["runs"] >= 5
        assert r["samples_per_s"] == pytest.approx(r["batch"] / (r["median_ms"] / 1e3), rel=0.05)
    summary = summary_markdown(list(rows.values()))
    assert "## Size of every artifact" in summary and "## Latency and memory" in summary
    assert "| pruned | onnx_int8 | onnxruntime |" in summary
    assert np.isfinite(rows["pruned"]["ms_onnx_int8_b256_tall"])


def test_eval_reads_a_model_folder_and_its_compact_file(run: tuple[Path, dict[str, dict], DataConfig]) -> None:
    from modelshrink.measure.evaluate import evaluate_file

    out, rows, data_cfg = run
    csv = Path(str(data_cfg.path))
    folder = out / "models" / "clustered-seed0"
    onnx = evaluate_file(folder, csv)
    compact = evaluate_file(out / rows["clustered"]["artifacts"]["compact"], csv)
    assert onnx["kind"] == "onnx" and compact["kind"] == "compact" and onnx["rows"] == compact["rows"] == 150
    # float32 ONNX in ONNX Runtime and the same weights in PyTorch: the same predictions up to float noise.
    assert abs(onnx["accuracy"] - compact["accuracy"]) <= 1 / 150


def test_compact_matches_needs_the_same_weights_and_tolerates_only_rounding() -> None:
    import numpy as np
    import torch

    from modelshrink.runner.measure import compact_matches

    a = torch.nn.Linear(4, 3)
    b = torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    logits = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    assert compact_matches(a, b, logits + np.float32(2e-9), logits)  # last-bit noise: still the same model
    assert not compact_matches(a, b, logits + np.float32(1e-3), logits)  # different outputs
    with torch.no_grad():
        b.weight[0, 0] += 1e-6
    assert not compact_matches(a, b, logits, logits)  # a weight changed on the way: not the same file


def test_slow_measuring_steps_say_so_and_batches_follow_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big model's row is minutes of measuring: each step that took SLOW_S or more logs one line; the
    batch sizes an artifact is timed at are the module's when the artifact is made (benchmarks change them)."""
    lines: list[str] = []
    assert measure_variant.said(lines.append, "v: onnx_fp32", lambda: 7) == 7
    assert lines == []  # fast: silent
    monkeypatch.setattr(measure_variant, "SLOW_S", 0.0)
    measure_variant.said(lines.append, "v: onnx_fp32", lambda: None)
    assert len(lines) == 1 and lines[0].startswith("v: onnx_fp32 measured in ")
    monkeypatch.setattr(timing, "BATCHES", (1, 32))
    art = measure_variant.Artifact("compact", "torch", Path("x"), "fp32", lambda x: x, lambda n: print, None)
    assert art.batches == (1, 32)
