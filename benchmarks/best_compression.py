"""The 40x goal: run a config (or preset), print the frontier of file bytes vs test accuracy and the best point.

Every figure is computed from the rows in the run folder's results store. A variant's file is
the smallest artifact the runner loaded back and evaluated: the compact file (weights.msz,
`compact_bytes` / `compact_test_accuracy`) for float variants, the ONNX file (`file_bytes` /
`test_accuracy`) for quantized ones. The ratio is the baseline's dense float32 weight bytes
over the file's bytes; the accuracy loss is paired per seed (baseline − variant, in points).

    MODELSHRINK_DATA=/path/emotions.csv python benchmarks/best_compression.py \\
        --config benchmarks/best_compression.yaml --out runs/best [--jobs 2] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from modelshrink.config import merge, parse_config, read_preset, read_yaml
from modelshrink.runner.executors import make_executor
from modelshrink.runner.run import Runner
from modelshrink.store import ResultStore

GOAL_RATIO = 40.0
MAX_LOSS_POINTS = 1.0


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def artifact(row: dict[str, Any]) -> tuple[str, int, float]:
    """(file kind, bytes, test accuracy) of the smallest file the runner loaded back and evaluated."""
    if row.get("compact_bytes") is not None and row["compact_bytes"] <= row["file_bytes"]:
        return "compact .msz", int(row["compact_bytes"]), float(row["compact_test_accuracy"])
    return f"ONNX {row['export_format']}", int(row["file_bytes"]), float(row["test_accuracy"])


def summarize(rows: list[dict[str, Any]], baseline: str = "baseline") -> list[dict[str, Any]]:
    """One entry per variant: bytes, ratio, accuracy and paired loss as mean ± std over its seeds."""
    ok = [r for r in rows if r["status"] == "ok"]
    base = {r["seed"]: r for r in ok if r["variant"] == baseline}
    if not base:
        raise SystemExit(f"no finished {baseline!r} rows in the store: the ratio needs the baseline's dense bytes")
    by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        if r["seed"] in base:
            by_variant[r["variant"]].append(r)
    out = []
    for name, group in by_variant.items():
        kinds, sizes, accs, losses, ratios, params = set(), [], [], [], [], []
        for r in group:
            kind, nbytes, acc = artifact(r)
            b = base[r["seed"]]
            kinds.add(kind)
            sizes.append(nbytes)
            accs.append(acc)
            losses.append(100 * (b["test_accuracy"] - acc))
            ratios.append(b["dense_fp32_bytes"] / nbytes)
            params.append(b["parameters"] / r["parameters"])
        out.append({"variant": name, "seeds": sorted(r["seed"] for r in group), "file": "/".join(sorted(kinds)),
                    "bytes": _ms(sizes), "ratio": _ms(ratios), "test_accuracy": _ms(accs),
                    "loss_points": _ms(losses), "params_reduction": _ms(params)})  # fmt: skip
    return sorted(out, key=lambda e: e["bytes"][0])


def frontier(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pareto front on mean bytes (lower) and mean test accuracy (higher), smallest first."""
    front: list[dict[str, Any]] = []
    for e in sorted(entries, key=lambda e: (e["bytes"][0], -e["test_accuracy"][0])):
        if not front or e["test_accuracy"][0] > front[-1]["test_accuracy"][0]:
            front.append(e)  # more accurate than every smaller file
    return front


def _fmt(ms: tuple[float, float], digits: int = 1) -> str:
    return f"{ms[0]:,.{digits}f} ± {ms[1]:,.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path(__file__).with_name("best_compression.yaml"))
    parser.add_argument("--preset", default=None, help="a packaged preset instead of --config")
    parser.add_argument("--data", type=Path, default=None, help="emotions CSV (default: $MODELSHRINK_DATA)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumes; finished rows are reused)")
    parser.add_argument("--report-only", action="store_true", help="read the store, run nothing")
    parser.add_argument("--jobs", type=int, default=None, help="local worker processes (default: one process)")
    args = parser.parse_args()

    if not args.report_only:
        raw = read_preset(args.preset) if args.preset else read_yaml(args.config)
        if args.data is not None:
            raw = merge(raw, {"data": {"path": str(args.data)}})
        with make_executor("inprocess", args.jobs, None) as executor:  # progress on stderr, also into a log file
            Runner(parse_config(raw), args.out, log=lambda msg: print(msg, file=sys.stderr, flush=True)).run(
                executor=executor)  # fmt: skip
    with ResultStore(args.out / "results.sqlite") as store:
        rows = store.rows()
    entries = summarize(rows)
    print("| variant | seeds | file | bytes | × smaller than dense fp32 | test acc % | loss (points) | params ÷ |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for e in entries:
        acc = (100 * e["test_accuracy"][0], 100 * e["test_accuracy"][1])
        print(f"| {e['variant']} | {len(e['seeds'])} | {e['file']} | {_fmt(e['bytes'], 0)} | {_fmt(e['ratio'])} "
              f"| {_fmt(acc, 2)} | {_fmt(e['loss_points'], 2)} | {_fmt(e['params_reduction'], 2)} |")  # fmt: skip
    front = frontier(entries)
    print("\nfrontier (bytes ↑, accuracy ↑): " + " → ".join(
        f"{e['variant']} ({e['bytes'][0]:,.0f} B, {100 * e['test_accuracy'][0]:.2f}%)" for e in front))  # fmt: skip
    seeds_max = max(len(e["seeds"]) for e in entries)
    eligible = [e for e in entries if e["loss_points"][0] <= MAX_LOSS_POINTS and len(e["seeds"]) == seeds_max]
    best = min(eligible, key=lambda e: e["bytes"][0]) if eligible else None
    if best is None:
        print(f"\nno variant within {MAX_LOSS_POINTS} point of the baseline")
    else:
        verdict = "met" if best["ratio"][0] >= GOAL_RATIO else "NOT met"
        print(f"\nbest within {MAX_LOSS_POINTS} point ({len(best['seeds'])} seeds): {best['variant']}: "
              f"{best['bytes'][0]:,.0f} B ({best['file']}), {best['ratio'][0]:.1f}× smaller than the baseline's "
              f"dense float32 weights, loss {_fmt(best['loss_points'], 2)} points → {GOAL_RATIO:.0f}× goal {verdict}")  # fmt: skip
    print(json.dumps({"benchmark": "best_compression", "out": str(args.out), "best": best and best["variant"],
                      "best_ratio": best and round(best["ratio"][0], 2), "rows": len(rows)}))  # fmt: skip


if __name__ == "__main__":
    main()
