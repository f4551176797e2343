"""`modelshrink run` ends with the report, and its rows carry what the report draws (tiny real run)."""

from __future__ import annotations

import json
from pathlib import Path

from modelshrink.cli import main
from modelshrink.data.synthetic import write_synthetic_csv


def test_run_writes_the_report_from_real_rows(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {embed_dim: 8, hidden: 8}\ndata: {vocab_size: 64, max_len: 16}\ntrain: {epochs: 2}\n"
                   "variants: [{name: baseline, steps: []},\n"
                   "           {name: pruned, steps: [{kind: prune.magnitude, schedule: constant, epochs: 2}]},\n"
                   "           {name: bad, steps: [{kind: cluster.kmeans, clusters: 100000, epochs: 0}]}]\n")  # fmt: skip
    out = tmp_path / "run"
    csv = write_synthetic_csv(tmp_path / "tiny.csv", 120)
    argv = ["run", "--task", "csv", "--data", str(csv), "--config", str(cfg), "--seed", "0", "--out", str(out)]
    assert main(argv) == 1  # one variant failed; the report is still written

    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())}
    base, pruned = rows["baseline"], rows["pruned"]
    assert 1 <= len(base["baseline_history"]) <= 2 and {"train_loss", "val_loss", "val_accuracy"} <= set(
        base["baseline_history"][0]
    )
    assert [h["epoch"] for h in pruned["steps"][0]["history"]] == [1, 2]  # the pruning step's fine-tuning
    cm = base["test_confusion_matrix"]
    assert len(cm) == len(base["labels"]) == 3 and sum(map(sum, cm)) > 0
    assert abs(sum(cm[i][i] for i in range(3)) / sum(map(sum, cm)) - base["test_accuracy"]) < 1e-9

    page = (out / "report.html").read_text()
    assert "clusters=100000" in page and '<tr class="failed">' in page
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"pareto_size", "pareto_latency", "size_bars", "accuracy_bars", "training_curves", "best_classes"} == figures


def test_latency_table_without_batch_256_timings() -> None:
    """A benchmark that times other batches (transformer.py: 1 and 32) gets dashes, not a crash."""
    from modelshrink.report.tables import latency_section

    lat = [{"artifact": "onnx_fp32", "runtime": "onnxruntime", "batch": b, "threads": 1, "median_ms": m,
            "p90_ms": m + 1} for b, m in ((1, 2.0), (32, 40.0))]  # fmt: skip
    lines = latency_section([{"status": "ok", "variant": "baseline", "latency": lat, "memory": []}])
    row = next(line for line in lines if line.startswith("| baseline | onnx_fp32"))
    assert "| 2.000 (3.000) |" in row and row.endswith("| — | — |")
