"""Tables from the results store: results.json, results.csv and summary.md.

Reads only the store's rows, so a report can be rebuilt from any run folder at any time.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

# Measured numbers of a row, averaged over seeds in the summary.
NUMERIC_COLUMNS = [
    "parameters", "nonzeros", "distinct_values_max", "dense_fp32_bytes", "file_bytes", "file_gzip_bytes",
    "file_zstd_bytes", "compact_bytes", "train_accuracy", "val_accuracy", "test_accuracy", "test_macro_f1",
    "test_agreement_with_torch", "compact_test_accuracy", "latency_ms_p50", "latency_ms_p90",
]  # fmt: skip
# Columns of results.csv, in order (flat values; nested details stay in results.json).
CSV_COLUMNS = ["variant", "seed", "status", "export_format", *NUMERIC_COLUMNS, "latency_threads", "wall_s", "error",
               "key", "torch", "onnxruntime", "git_sha", "machine"]  # fmt: skip

# The thesis's table (DESIGN.md): size in KB was an h5 file that held the Adam state.
THESIS = [
    ("Teacher (baseline)", "4075.12", "99.55%", "90.10%", "91.57%"),
    ("Pruned (50% sparsity)", "1365.81", "99.36%", "89.23%", "90.30%"),
    ("Clustered (16 clusters)", "1365.78", "98.85%", "89.27%", "90.03%"),
]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per variant (in first-seen order): mean and std over its successful seeds."""
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        ok = [r for r in rows if r["variant"] == name and r["status"] == "ok"]
        entry: dict[str, Any] = {"variant": name, "seeds": len(ok),
                                 "failed": sum(1 for r in rows if r["variant"] == name and r["status"] != "ok")}  # fmt: skip
        if ok:
            entry["export_format"] = ok[0].get("export_format", "—")
            for col in NUMERIC_COLUMNS:
                # None: not applicable to this variant (e.g. the compact size of an int8 model).
                values = [float(r[col]) for r in ok if r.get(col) is not None]
                entry[col] = _mean_std(values) if len(values) == len(ok) else None
        out.append(entry)
    return out


def _pct(ms: tuple[float, float] | None, seeds: int) -> str:
    if ms is None:  # not measured for every seed (e.g. a row from an older version): never shown as 0
        return "—"
    mean, std = ms
    return f"{100 * mean:.2f}%" + (f" ± {100 * std:.2f}" if seeds > 1 else "")


def _kb(ms: tuple[float, float] | None) -> str:
    return "—" if ms is None else f"{ms[0] / 1024:,.1f}"


def _num(ms: tuple[float, float] | None, fmt: str = "{:,.0f}") -> str:
    return "—" if ms is None else fmt.format(ms[0])


def summary_markdown(rows: list[dict[str, Any]], title: str = "modelshrink results") -> str:
    agg = aggregate(rows)
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# {title}", "",
             f"Seeds: {', '.join(map(str, seeds))}. Accuracies are mean ± standard deviation over seeds, measured by "
             "running each variant's ONNX file in ONNX Runtime. Sizes are bytes of real files on disk that load back; "
             "optimizer state is never counted.", "",
             "| Variant | Format | ONNX file (KB) | gzip (KB) | Compact (KB) | Params | Nonzeros | Distinct/tensor (max) "
             "| Train acc | Val acc | Test acc | Test macro-F1 | Latency p50 (ms) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for a in agg:
        if not a["seeds"]:
            lines.append(f"| {a['variant']} | failed ({a['failed']} seeds) | | | | | | | | | | | |")
            continue
        n = a["seeds"]
        lines.append(
            f"| {a['variant']} | {a.get('export_format', '—')} | {_kb(a['file_bytes'])} | {_kb(a['file_gzip_bytes'])} "
            f"| {_kb(a['compact_bytes'])} | {_num(a['parameters'])} | {_num(a['nonzeros'])} "
            f"| {_num(a['distinct_values_max'])} | {_pct(a['train_accuracy'], n)} | {_pct(a['val_accuracy'], n)} "
            f"| {_pct(a['test_accuracy'], n)} | {_pct(a['test_macro_f1'], n)} | {_num(a['latency_ms_p50'], '{:.3f}')} |"
        )
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed", ""] + [f"- {r['variant']} seed {r['seed']}: {r.get('error', '')}" for r in failed]
    skipped = {(r["variant"], s["name"], s["reason"]) for r in rows if r["status"] == "ok"
               for step in r.get("steps") or [] for s in step.get("skipped", [])}  # fmt: skip
    if skipped:
        lines += ["", "## Layers a technique did not change", ""]
        lines += [f"- {v}: {name} — {reason}" for v, name, reason in sorted(skipped)]
    lines += [
        "", "## Columns", "",
        "- **ONNX file**: the deployable model file in its format (fp32, or int8 weights for `int8_dynamic`).",
        "- **gzip**: that file gzip-compressed (level 9), the convention TensorFlow Model Optimization uses to show "
        "what sparsity and clustering save.",
        "- **Compact**: the project's compact weights file (bitmask/codebook coding + zstd), loaded back and checked; "
        "it holds float weights, so it is not given for quantized variants (—).",
        "- **Nonzeros / Distinct**: counted on the float weights before export.",
        "- **Latency**: median wall time of one prediction (one unpadded test sentence) with the ONNX file in "
        "ONNX Runtime on the CPU, fixed threads, after a warm-up; p90 is in results.csv.",
        "", "## The thesis's table, for reference", "",
        "Its sizes were Keras .h5 files that included the Adam optimizer state (about two thirds of the file); "
        "its pruned and clustered models were stored densely, and no size was measured after quantization.", "",
        "| Model | Size (KB) | Train acc | Val acc | Test acc (quantized) |", "|---|---:|---:|---:|---:|",
    ] + [f"| {' | '.join(t)} |" for t in THESIS]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_exports(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """results.json, results.csv and summary.md in `out` (exports of the store, never the store)."""
    paths = [out / "results.json", out / "results.csv", out / "summary.md"]
    paths[0].write_text(json.dumps(rows, indent=1))
    pd.DataFrame([{c: r.get(c) for c in CSV_COLUMNS} for r in rows], columns=CSV_COLUMNS).to_csv(paths[1], index=False)
    paths[2].write_text(summary_markdown(rows))
    return paths
