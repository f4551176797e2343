"""Tables from the results store: results.json, results.csv and summary.md.

Reads only the store's rows, so a report can be rebuilt from any run folder at any time.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from modelshrink.report import ship
from modelshrink.report.view import build_views

# Measured numbers of a row, averaged over seeds in the summary.
NUMERIC_COLUMNS = [
    "parameters", "nonzeros", "distinct_values_max", "dense_fp32_bytes", "file_bytes", "file_gzip_bytes",
    "file_zstd_bytes", "compact_bytes", "train_accuracy", "val_accuracy", "test_accuracy", "test_macro_f1",
    "test_agreement_with_reference", "compact_test_accuracy", "latency_ms_p50", "latency_ms_p90",
    "baseline_dense_fp32_bytes", "compression_x", "compact_gzip_bytes", "compact_compression_x",
    "compact_test_macro_f1", "onnx_fp32_bytes", "onnx_fp16_bytes", "onnx_int8_bytes", "onnx_fp32_test_accuracy",
    "onnx_fp16_test_accuracy", "onnx_int8_test_accuracy",
]  # fmt: skip
# Artifacts measured for every variant (runner/measure.py), and the latency settings.
ARTIFACTS = ["onnx_fp32", "onnx_fp16", "onnx_int8", "onnx_int8_static", "onnx_int8_weights", "compact"]
LATENCY_COLUMNS = [f"ms_{a}_b{b}_t{t}" for a in ARTIFACTS for b in (1, 256) for t in ("1", "all")]
MEMORY_COLUMNS = [f"peak_rss_mb_{a}" for a in ARTIFACTS]
# Columns of results.csv, in order (flat values; nested details stay in results.json).
CSV_COLUMNS = ["variant", "seed", "status", "export_format", *NUMERIC_COLUMNS, "compact_weights",
               "compact_matches_model", *LATENCY_COLUMNS, *MEMORY_COLUMNS, "latency_threads", "wall_s", "error",
               "key", "superseded", "executor", "torch", "onnxruntime", "git_sha", "machine"]  # fmt: skip

# The thesis's table (DESIGN.md): size in KB was an h5 file that held the Adam state.
THESIS = [
    ("Teacher (baseline)", "4075.12", "99.55%", "90.10%", "91.57%"),
    ("Pruned (50% sparsity)", "1365.81", "99.36%", "89.23%", "90.30%"),
    ("Clustered (16 clusters)", "1365.78", "98.85%", "89.27%", "90.03%"),
]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def ci95(values: list[float]) -> tuple[float, float] | None:
    """95% confidence interval of the mean (Student's t, n - 1 degrees of freedom); None below 2 values."""
    if len(values) < 2:
        return None
    from scipy import stats  # scipy comes with scikit-learn; imported here to keep the module light

    mean, std = _mean_std(values)
    half = float(stats.t.ppf(0.975, len(values) - 1)) * std / len(values) ** 0.5
    return mean - half, mean + half


def is_baseline_row(row: dict[str, Any]) -> bool:
    """The trained baseline itself: no steps, starting from the baseline."""
    variant = row.get("config", {}).get("variant", {})
    return not variant.get("steps") and variant.get("start", "baseline") == "baseline"


def accuracy_changes(rows: list[dict[str, Any]], split: str = "test") -> dict[str, dict[int, float]]:
    """Per variant and seed: accuracy minus the SAME seed's baseline accuracy (seeds without one are left out)."""
    base: dict[int, float] = {}
    for r in rows:
        if r["status"] == "ok" and is_baseline_row(r):
            base.setdefault(r["seed"], r[f"{split}_accuracy"])
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["status"] == "ok" and r["seed"] in base:
            out.setdefault(r["variant"], {})[r["seed"]] = r[f"{split}_accuracy"] - base[r["seed"]]
    return out


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per variant (in first-seen order): mean and std over its successful seeds.

    Also `ci95` (per column, the 95% t-interval of the mean, None with one seed) and
    `test_accuracy_change` / `val_accuracy_change` (mean, std of the accuracy minus the same
    seed's baseline accuracy) with their `_ci95`.
    """
    rows = [r for r in rows if not r.get("superseded")]
    changes = {split: accuracy_changes(rows, split) for split in ("test", "val")}
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        ok = [r for r in rows if r["variant"] == name and r["status"] == "ok"]
        entry: dict[str, Any] = {"variant": name, "seeds": len(ok),
                                 "failed": sum(1 for r in rows if r["variant"] == name and r["status"] != "ok")}  # fmt: skip
        if ok:
            entry["export_format"] = ok[0].get("export_format", "—")
            entry["ci95"] = {}
            for col in NUMERIC_COLUMNS:
                # None: not applicable to this variant (e.g. the compact size of an int8 model).
                values = [float(r[col]) for r in ok if r.get(col) is not None]
                entry[col] = _mean_std(values) if len(values) == len(ok) else None
                entry["ci95"][col] = ci95(values) if len(values) == len(ok) else None
            for split in ("test", "val"):
                deltas = list(changes[split].get(name, {}).values())
                entry[f"{split}_accuracy_change"] = _mean_std(deltas) if deltas else None
                entry[f"{split}_accuracy_change_ci95"] = ci95(deltas)
        out.append(entry)
    return out


def _pct(ms: tuple[float, float] | None, seeds: int) -> str:
    if ms is None:  # not measured for every seed (e.g. a row from an older version): never shown as 0
        return "—"
    mean, std = ms
    return f"{100 * mean:.2f}%" + (f" ± {100 * std:.2f}" if seeds > 1 else "")


def _ci_pct(ci: tuple[float, float] | None) -> str:
    return "—" if ci is None else f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"


def _pp(ms: tuple[float, float] | None, n: int) -> str:
    if ms is None:
        return "—"
    return f"{100 * ms[0]:+.2f}" + (f" ± {100 * ms[1]:.2f}" if n > 1 else "")


def _kb(ms: tuple[float, float] | None) -> str:
    return "—" if ms is None else f"{ms[0] / 1024:,.1f}"


def _num(ms: tuple[float, float] | None, fmt: str = "{:,.0f}") -> str:
    return "—" if ms is None else fmt.format(ms[0])


def summary_markdown(rows: list[dict[str, Any]], title: str = "modelshrink results") -> str:
    rows = [r for r in rows if not r.get("superseded")]
    agg = aggregate(rows)
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# {title}", "",
             f"Seeds: {', '.join(map(str, seeds))}. Accuracies are mean ± standard deviation over seeds, measured by "
             "running each variant's ONNX file in ONNX Runtime; the 95% confidence interval of the mean uses "
             "Student's t (two or more seeds); Δ is the change against the same seed's baseline, in percentage "
             "points. Sizes are bytes of real files on disk that load back; optimizer state is never counted.", "",
             "| Variant | Format | ONNX file (KB) | gzip (KB) | Compact (KB) | Params | Nonzeros | Distinct/tensor (max) "
             "| Train acc | Val acc | Test acc | Test acc 95% CI | Δ test acc (pp) | Test macro-F1 | Latency p50 (ms) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for a in agg:
        if not a["seeds"]:
            lines.append(f"| {a['variant']} | failed ({a['failed']} seeds) | | | | | | | | | | | | | |")
            continue
        n = a["seeds"]
        lines.append(
            f"| {a['variant']} | {a.get('export_format', '—')} | {_kb(a['file_bytes'])} | {_kb(a['file_gzip_bytes'])} "
            f"| {_kb(a['compact_bytes'])} | {_num(a['parameters'])} | {_num(a['nonzeros'])} "
            f"| {_num(a['distinct_values_max'])} | {_pct(a['train_accuracy'], n)} | {_pct(a['val_accuracy'], n)} "
            f"| {_pct(a['test_accuracy'], n)} | {_ci_pct(a['ci95'].get('test_accuracy'))} "
            f"| {_pp(a.get('test_accuracy_change'), n)} | {_pct(a['test_macro_f1'], n)} "
            f"| {_num(a['latency_ms_p50'], '{:.3f}')} |"
        )
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed", ""] + [f"- {r['variant']} seed {r['seed']}: {r.get('error', '')}" for r in failed]
    skipped = {(r["variant"], s["name"], s["reason"]) for r in rows if r["status"] == "ok"
               for step in r.get("steps") or [] for s in step.get("skipped", [])}  # fmt: skip
    if skipped:
        lines += ["", "## Layers a technique did not change", ""]
        lines += [f"- {v}: {name} — {reason}" for v, name, reason in sorted(skipped)]
    lines += ship.markdown(build_views(rows)) + size_section(rows) + latency_section(rows)
    lines += [
        "", "## Columns", "",
        "- **ONNX file**: the deployable model file in its format (fp32, or int8 weights for `int8_dynamic`).",
        "- **gzip**: that file gzip-compressed (level 9), the convention TensorFlow Model Optimization uses to show "
        "what sparsity and clustering save.",
        "- **Compact**: the project's compact model file (docs/compact-format.md: bitmask or delta positions, "
        "codebooks, int8 with per-channel scales, zstd or byte-shuffled zstd), loaded back with no pickle; for an int8 "
        "variant it "
        "holds int8 weights (weight-only, run in PyTorch), for fp16 float16 weights.",
        "- **Nonzeros / Distinct**: counted on the float weights before export.",
        "- **Latency**: median wall time of one prediction (one unpadded test sentence) with the ONNX file in "
        "ONNX Runtime on the CPU, fixed threads, after a warm-up; p90 is in results.csv.",
    ]  # fmt: skip
    if any((r.get("config") or {}).get("data", {}).get("task") == "emotion" for r in rows):  # the thesis's task only
        lines += [
            "", "## The thesis's table, for reference", "",
            "Its sizes were Keras .h5 files that included the Adam optimizer state (about two thirds of the file); "
            "its pruned and clustered models were stored densely, and no size was measured after quantization.", "",
            "| Model | Size (KB) | Train acc | Val acc | Test acc (quantized) |", "|---|---:|---:|---:|---:|",
        ] + [f"| {' | '.join(t)} |" for t in THESIS]  # fmt: skip
    return "\n".join(lines) + "\n"


def _rows_of(rows: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    """variant → the per-artifact entries (`sizes`, `latency` or `memory`) of its successful seeds."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "ok":
            out.setdefault(r["variant"], []).extend(r.get(key) or [])
    return out


def _mean(entries: list[dict[str, Any]], field: str) -> float:
    return statistics.fmean(float(e[field]) for e in entries)


def size_section(rows: list[dict[str, Any]]) -> list[str]:
    """Per variant and artifact: bytes, gzip bytes, compression vs the baseline's dense float32, accuracy."""
    by_variant = _rows_of(rows, "sizes")
    if not any(by_variant.values()):
        return []
    lines = ["", "## Size of every artifact", "",
             "compression_x = the same seed's baseline dense float32 bytes (parameters × 4) / file bytes. "
             "Each file was loaded back and run on the test split (ONNX files in ONNX Runtime, the compact file in "
             "PyTorch); means over seeds.", "",
             "| Variant | Artifact | Weights | File (KB) | gzip (KB) | compression_x | Params | Nonzeros | Test acc |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for variant, entries in by_variant.items():
        for name in dict.fromkeys(e["artifact"] for e in entries):
            es = [e for e in entries if e["artifact"] == name]
            lines.append(
                f"| {variant} | {name} | {es[0]['weights']} | {_mean(es, 'file_bytes') / 1024:,.1f} "
                f"| {_mean(es, 'gzip_bytes') / 1024:,.1f} | {_mean(es, 'compression_x'):.2f}× "
                f"| {_mean(es, 'params'):,.0f} | {_mean(es, 'nonzeros'):,.0f} | {100 * _mean(es, 'test_accuracy'):.2f}% |"
            )
    return lines


def _cell(es: list[dict[str, Any]]) -> str:
    return f"{_mean(es, 'median_ms'):.3f} ({_mean(es, 'p90_ms'):.3f})" if es else "—"


def latency_section(rows: list[dict[str, Any]]) -> list[str]:
    """Per variant and artifact: median (p90) ms at batch 1 and 256, 1 and all threads; peak memory."""
    lat, mem = _rows_of(rows, "latency"), _rows_of(rows, "memory")
    if not any(lat.values()):
        return []
    threads = sorted({e["threads"] for es in lat.values() for e in es})
    configs = [(b, t) for b in (1, 256) for t in threads]
    lines = ["", "## Latency and memory", "",
             "Median (p90) ms per call after a warm-up, time-bounded runs; batch 1 is one unpadded test sentence, "
             "batch 256 a padded batch of test rows. ONNX files run in ONNX Runtime, the compact file in PyTorch "
             "(int8 weights dequantized to float32). Peak RSS: a fresh process that loads the file and runs one batch "
             "of 256 (runtime import included; the model's share in results.json). Means over seeds; wall-clock "
             "figures depend on the machine and its load.", "",
             "| Variant | Artifact | Runtime | " + " | ".join(f"b{b} t{t} ms" for b, t in configs)
             + " | samples/s (b256, most threads) | Peak RSS (MB) |",
             "|---|---|---|" + "---:|" * (len(configs) + 2)]  # fmt: skip
    slower: list[str] = []
    for variant, entries in lat.items():
        names = list(dict.fromkeys(e["artifact"] for e in entries))
        for name in names:
            es = [e for e in entries if e["artifact"] == name]
            cells = [_cell([e for e in es if (e["batch"], e["threads"]) == c]) for c in configs]
            top = [e for e in es if e["batch"] == 256 and e["threads"] == threads[-1]]
            ms = [m for m in mem.get(variant, []) if m["artifact"] == name]
            rate = f"{_mean(top, 'samples_per_s'):,.0f}" if top else "—"  # not timed at 256 (a benchmark's batches)
            rss = f"{_mean(ms, 'peak_rss_mb'):.0f}" if ms else "—"
            lines.append(f"| {variant} | {name} | {es[0]['runtime']} | " + " | ".join(cells) + f" | {rate} | {rss} |")
        for b, t in configs:
            int8 = [e for e in entries if e["artifact"] == "onnx_int8" and (e["batch"], e["threads"]) == (b, t)]
            fp32 = [e for e in entries if e["artifact"] == "onnx_fp32" and (e["batch"], e["threads"]) == (b, t)]
            if int8 and fp32 and _mean(int8, "median_ms") > _mean(fp32, "median_ms"):
                slower.append(f"- {variant}, batch {b}, {t} thread(s): int8 {_mean(int8, 'median_ms'):.3f} ms "
                              f"vs float32 {_mean(fp32, 'median_ms'):.3f} ms")  # fmt: skip
    if slower:
        lines += ["", "**ONNX Runtime int8 is slower than float32 here** (dynamic int8 quantizes activations on "
                  "every call; its LSTM kernel is slower on this CPU):", ""] + slower  # fmt: skip
    return lines


EXPORTS = {"json": "results.json", "csv": "results.csv", "md": "summary.md"}


def export_text(rows: list[dict[str, Any]], fmt: str) -> str:
    """The store's rows as JSON (every field), CSV (flat columns) or the Markdown summary."""
    if fmt == "json":
        return json.dumps(rows, indent=1)
    if fmt == "csv":
        return pd.DataFrame([{c: r.get(c) for c in CSV_COLUMNS} for r in rows], columns=CSV_COLUMNS).to_csv(index=False)
    if fmt == "md":
        return summary_markdown(rows)
    raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(EXPORTS)}")


def write_exports(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """results.json, results.csv and summary.md in `out` (exports of the store, never the store)."""
    paths = []
    for fmt, name in EXPORTS.items():
        (out / name).write_text(export_text(rows, fmt))
        paths.append(out / name)
    return paths
