"""File sizes of compressed variants against the baseline's dense float32 bytes (issue 4 floors).

Trains a baseline on the real emotion data (few epochs: sizes barely depend on accuracy),
derives the variants through the runner as `modelshrink run` does, and prints, for each,
the compact file's bytes / (baseline parameters × 4) next to the issue's floor:

    50%-pruned ≤ 0.60×   16-cluster ≤ 0.17×   16-cluster on 50% sparsity ≤ 0.12×   int8 ≤ 0.27×

Every file was loaded back by the runner and evaluated (test accuracy printed).

    MODELSHRINK_DATA=path/to/emotions.csv .venv/bin/python benchmarks/sizes.py [--epochs 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import struct
import tempfile
import time
from pathlib import Path

from modelshrink.config import parse_config
from modelshrink.export.compact import read_compact_header
from modelshrink.runner import timing as measure_timing
from modelshrink.runner.run import Runner

PRUNE = {"kind": "prune.magnitude", "schedule": "constant", "final_sparsity": 0.5, "epochs": 1}
CLUSTER = {"kind": "cluster.kmeans", "clusters": 16, "init": "kmeans++", "epochs": 1}
VARIANTS = [  # (name, steps, floor from the issue)
    ("baseline", [], None),
    ("pruned-50", [PRUNE], 0.60),
    ("clustered-16", [CLUSTER], 0.17),
    ("pruned-50-clustered-16", [PRUNE, {**CLUSTER, "preserve_sparsity": True}], 0.12),
    ("int8", [{"kind": "quant.int8_dynamic"}], 0.27),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="emotions.csv (default: $MODELSHRINK_DATA, cache, Hub)")
    parser.add_argument("--epochs", type=int, default=3, help="baseline training epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="run folder to keep (default: a temporary one)")
    args = parser.parse_args()

    cfg = parse_config({
        "data": {"task": "emotion", **({"path": args.data} if args.data else {})},
        "train": {"epochs": args.epochs, "lr": 0.01},  # the quick preset's step: a few epochs already learn
        "seeds": [args.seed],
        "variants": [{"name": n, "steps": s} for n, s, _ in VARIANTS],
    })  # fmt: skip
    # Sizes only: keep latency runs short and skip the memory subprocesses.
    measure_timing.LATENCY_BUDGET_S = 0.01
    measure_timing.MEASURE_MEMORY = False
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "sizes"
        rows = {r["variant"]: r for r in Runner(cfg, out, log=lambda m: None).run()}
        failed = {n: r["error"] for n, r in rows.items() if r["status"] != "ok"}
        if failed:
            raise SystemExit(f"variants failed: {failed}")
        base = rows["baseline"]["dense_fp32_bytes"]
        print(f"baseline dense float32: {rows['baseline']['parameters']:,} parameters × 4 = {base:,} bytes")
        print(f"{'variant':24} {'compact bytes':>13} {'ratio':>7} {'floor':>6} {'ok':>3} {'header':>7} "
              f"{'test acc':>8} {'onnx bytes':>10} {'onnx ratio':>10}  encodings")  # fmt: skip
        results = []
        for name, _, floor in VARIANTS:
            r = rows[name]
            path = out / r["artifacts"]["compact"]
            header_len = struct.unpack_from("<I", path.read_bytes(), 8)[0] + 16
            codings = sorted({f"{e['positions']}+{e['values']}+{e['entropy']}{'+int8' if e.get('quant') else ''}"
                              for e in read_compact_header(path)["tensors"] if e["shape"] and len(e["shape"]) >= 2})  # fmt: skip
            ratio = r["compact_bytes"] / base
            ok = "" if floor is None else ("yes" if ratio <= floor else "NO")
            print(f"{name:24} {r['compact_bytes']:>13,} {ratio:>6.3f}× {floor or '':>6} {ok:>3} {header_len:>7,} "
                  f"{100 * r['compact_test_accuracy']:>7.2f}% {r['file_bytes']:>10,} {r['file_bytes'] / base:>9.3f}×  "
                  f"{', '.join(codings)}")  # fmt: skip
            results.append({"variant": name, "compact_bytes": r["compact_bytes"], "ratio": round(ratio, 4),
                            "floor": floor, "header_bytes": header_len, "compact_weights": r["compact_weights"],
                            "compact_test_accuracy": r["compact_test_accuracy"], "onnx_bytes": r["file_bytes"],
                            "onnx_format": r["export_format"], "test_accuracy_onnx": r["test_accuracy"]})  # fmt: skip
    print(json.dumps({"benchmark": "sizes", "baseline_dense_fp32_bytes": base, "epochs": args.epochs,
                      "wall_s": round(time.perf_counter() - t0, 1), "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
