"""Made-up result rows for the report's tests and benchmark, written through the real store.

The rows have the shape `Runner` writes (see runner/run.py), with invented numbers: they
test how the report draws and escapes, never what a technique achieves. Nothing in a real
run reads this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modelshrink.store import ResultStore, config_key

LABELS = ["anger", "fear", "joy", "love", "sadness", "surprise"]
CHAINS = [[], ["prune.magnitude"], ["cluster.kmeans"], ["quant.int8_dynamic"],
          ["prune.magnitude", "quant.int8_dynamic"], ["prune.magnitude", "cluster.kmeans"]]  # fmt: skip


def synthetic_row(variant: str, seed: int, chain: list[str], rng: np.random.Generator) -> dict[str, Any]:
    """The result part of one successful row, with random but plausible numbers."""
    int8 = "quant.int8_dynamic" in chain
    file_bytes = int(1_383_744 / (3.9 if int8 else 1.0) * rng.uniform(0.97, 1.0))
    test = float(np.clip(0.88 - 0.01 * len(chain) + rng.normal(0, 0.005), 0, 1))
    cm = rng.integers(0, 15, size=(len(LABELS), len(LABELS)))
    np.fill_diagonal(cm, rng.integers(100, 400, size=len(LABELS)))
    return {
        "export_format": "int8_dynamic" if int8 else "fp32",
        "steps": [{"kind": k, "skipped": [], "details": {}, "seconds": 1.0,
                   "history": [{"epoch": e, "train_loss": 0.4 / e + rng.uniform(0, 0.05), "seconds": 1.0}
                               for e in range(1, 3)] if k != "quant.int8_dynamic" else []}
                  for k in chain],  # fmt: skip
        "parameters": 345_478, "nonzeros": 172_998 if "prune.magnitude" in chain else 345_478,
        "distinct_values_max": 16 if "cluster.kmeans" in chain else 200_000, "dense_fp32_bytes": 1_381_912,
        "file_bytes": file_bytes, "file_gzip_bytes": int(file_bytes * 0.9), "file_zstd_bytes": int(file_bytes * 0.88),
        "compact_bytes": None if int8 else int(file_bytes * rng.uniform(0.2, 0.9)),
        "train_accuracy": min(1.0, test + 0.08), "val_accuracy": test + 0.005, "test_accuracy": test,
        "test_macro_f1": test - 0.05, "test_agreement_with_reference": 1.0,
        "test_confusion_matrix": cm.tolist(), "labels": LABELS,
        "baseline_history": [{"epoch": e, "train_loss": 1.6 / e, "val_loss": 1.5 / e + 0.2,
                              "val_accuracy": 0.9 - 0.5 / e, "seconds": 1.0} for e in range(1, 6)],
        "latency_ms_p50": float(0.05 * (0.6 if int8 else 1.0) * rng.uniform(0.9, 1.1)),
        "latency_ms_p90": 0.09, "latency_threads": 1,
        "torch": "2.13.0+cpu", "onnxruntime": "1.32.0", "python": "3.11.7", "git_sha": "abc1234",
        "machine": "x86_64 Linux", "cpu": "Synthetic CPU @ 1 GHz", "cpu_count": "2", "wall_s": 2.5,
    }  # fmt: skip


def write_synthetic_store(
    run_dir: Path,
    variants: list[str],
    seeds: list[int],
    failed: dict[str, str] | None = None,
    chains: dict[str, list[str]] | None = None,
) -> Path:
    """A results store in run_dir with one row per (variant, seed); `failed` maps variant → error message.

    The first variant is the baseline (no technique) unless `chains` says otherwise.
    """
    rng = np.random.default_rng(0)
    failed = failed or {}
    path = Path(run_dir) / "results.sqlite"
    with ResultStore(path) as store:
        for seed in seeds:
            for i, name in enumerate(variants):
                chain = (chains or {}).get(name, CHAINS[i % len(CHAINS)] if i else [])
                steps = [{"kind": k} for k in chain]
                config = {"variant": {"name": name, "start": "baseline", "steps": steps}, "seed": seed,
                          "train": {"epochs": 5, "threads": 2}}  # fmt: skip
                if name in failed:
                    store.put(config_key(config), name, seed, "failed", config, {"error": failed[name]})
                else:
                    store.put(config_key(config), name, seed, "ok", config, synthetic_row(name, seed, chain, rng))
    return path
