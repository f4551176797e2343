"""Issue 19's floors, found by `modelshrink search` within a stated budget: it starts the search and prints its front.

Floors (paired with the same seed's baseline, measured from files):
- size: >= 100x smaller than the baseline's dense float32 weights, within 1 point of its test accuracy;
- latency: >= 2x lower latency than the baseline's float32 ONNX file at batch 256, within 1 point, in ONNX
  Runtime at 1 thread and at all threads.
The search chooses on validation accuracy only (its fronts and the pick below: the cheapest front point whose
validation accuracy is within `--max-drop` points); test accuracy is read afterwards and reported beside it.

    MODELSHRINK_DATA=path/to/emotions.csv python benchmarks/search_frontier.py \\
        --out runs/frontier --budget-trials 60 --budget-minutes 240 [--seed 0] [--jobs 2] [--preset seed] [--epochs N]

A rerun into the same --out resumes the study (a bigger budget adds trials; finished ones are read back).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from modelshrink.cli import main
from modelshrink.store import ResultStore

SIZE_FLOOR_X, LATENCY_FLOOR_X, MAX_LOSS_POINTS = 100.0, 2.0, 1.0


def _fp32_ms(row: dict[str, Any], threads: str) -> float:
    return float(row[f"ms_onnx_fp32_b256_t{threads}"])


def table(res: dict[str, Any], rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every point of the size and batch-256 fronts with its gains over the baseline and its accuracy losses."""
    base = rows["baseline"]
    dense, b_val, b_test = base["dense_fp32_bytes"], res["baseline"]["figures"], rows["baseline"]
    out = {}
    for objective in ("size", "latency256"):
        for p in res["fronts"][objective]:
            f = p["figures"]
            out[p["variant"]] = {
                "variant": p["variant"], "file": f["file"], "bytes": f["bytes"], "size_x": dense / f["bytes"],
                "speed_x_t1": _fp32_ms(base, "1") / f["ms_b256"],
                "speed_x_tall": _fp32_ms(base, "all") / f["ms_b256_tall"],
                # validation losses choose (the deployable file's for size, the ONNX file's for latency) ...
                "val_loss_size": 100 * (b_val["val_accuracy"] - f["val_accuracy"]),
                "val_loss_onnx": 100 * (b_val["onnx_val_accuracy"] - f["onnx_val_accuracy"]),
                # ... test losses are reported: the deployable file's and the ONNX file's, paired with the baseline's
                "test_loss_size": 100 * (b_val["test_accuracy"] - f["test_accuracy"]),
                "test_loss_onnx": 100 * (b_test["test_accuracy"] - f["onnx_test_accuracy"]),
            }  # fmt: skip
    return list(out.values())


def pick(points: list[dict[str, Any]], gain: str, val_loss: str) -> dict[str, Any] | None:
    """The largest gain among points within MAX_LOSS_POINTS on validation (test accuracy plays no part)."""
    ok = [p for p in points if p[val_loss] <= MAX_LOSS_POINTS]
    return max(ok, key=lambda p: p[gain]) if ok else None


def report(out: Path) -> None:
    res = json.loads((out / "search.json").read_text())
    with ResultStore(out / "results.sqlite", readonly=True) as store:
        rows = {r["variant"]: r for r in store.rows() if r["status"] == "ok"}
    points = table(res, rows)
    print(f"{len(res['trials'])} trials in {res['minutes_spent']} min (budget: {res['budget_trials']} trials, "
          f"{res['budget_minutes']} min), seed {res['seed']}; chosen on validation, test reported")  # fmt: skip
    print(f"{'variant':48} {'file':8} {'bytes':>9} {'x dense':>8} {'x b256/1':>8} {'x b256/all':>10} "
          f"{'val loss':>8} {'test loss':>9} {'onnx val':>8} {'onnx test':>9}")  # fmt: skip
    for p in sorted(points, key=lambda p: p["bytes"]):
        print(f"{p['variant']:48} {p['file']:8} {p['bytes']:>9,} {p['size_x']:>8.1f} {p['speed_x_t1']:>8.2f} "
              f"{p['speed_x_tall']:>10.2f} {p['val_loss_size']:>+8.2f} {p['test_loss_size']:>+9.2f} "
              f"{p['val_loss_onnx']:>+8.2f} {p['test_loss_onnx']:>+9.2f}")  # fmt: skip
    size = pick(points, "size_x", "val_loss_size")
    if size:
        verdict = (
            "reached" if size["size_x"] >= SIZE_FLOOR_X and size["test_loss_size"] <= MAX_LOSS_POINTS else "not reached"
        )
        print(f"size floor ({SIZE_FLOOR_X:g}x within {MAX_LOSS_POINTS:g} pt): {verdict}: {size['variant']} "
              f"({size['file']} file) {size['size_x']:.1f}x, test loss {size['test_loss_size']:+.2f} pt")  # fmt: skip
    fast = pick(points, "speed_x_t1", "val_loss_onnx")
    if fast:
        reached = min(fast["speed_x_t1"], fast["speed_x_tall"]) >= LATENCY_FLOOR_X and fast["test_loss_onnx"] <= 1
        print(f"latency floor ({LATENCY_FLOOR_X:g}x at batch 256, 1 and all threads, within {MAX_LOSS_POINTS:g} pt): "
              f"{'reached' if reached else 'not reached'}: {fast['variant']} {fast['speed_x_t1']:.2f}x (1 thread), "
              f"{fast['speed_x_tall']:.2f}x (all), test loss {fast['test_loss_onnx']:+.2f} pt")  # fmt: skip


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=None, help="emotions CSV (default: $MODELSHRINK_DATA)")
    ap.add_argument("--budget-trials", type=int, default=60)
    ap.add_argument("--budget-minutes", type=float, default=240.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--preset", default="seed")
    ap.add_argument(
        "--epochs", type=int, default=None, help="most training epochs (default: the preset's); a smoke run"
    )
    ap.add_argument("--report-only", action="store_true", help="print the front of an existing --out folder")
    args = ap.parse_args()
    if not args.report_only:
        argv = ["search", "--max-drop", str(MAX_LOSS_POINTS), "--budget-trials", str(args.budget_trials),
                "--budget-minutes", str(args.budget_minutes), "--preset", args.preset, "--task", "emotion",
                "--seed", str(args.seed), "--out", str(args.out)]  # fmt: skip
        argv += ["--data", str(args.data)] if args.data else []
        argv += ["--epochs", str(args.epochs)] if args.epochs else []
        argv += ["--jobs", str(args.jobs), "--executor", "processes"] if args.jobs else []
        if (code := main(argv)) != 0:
            raise SystemExit(code)
    report(args.out)


if __name__ == "__main__":
    run()
