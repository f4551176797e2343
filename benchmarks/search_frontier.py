"""Issue 19's floors, found by `modelshrink search` within a stated budget: it starts the search and prints its front.

Floors (paired with the same seed's baseline, measured from files):
- size: >= 100x smaller than the baseline's dense float32 weights, within 1 point of its test accuracy;
- latency: >= 2x lower latency than the baseline's float32 ONNX file at batch 256, within 1 point, in ONNX
  Runtime at 1 thread and at all threads.
The search chooses on validation accuracy only (its fronts and the pick below: the cheapest front point whose
validation accuracy is within `--max-drop` points); test accuracy is read afterwards and reported beside it.

    MODELSHRINK_DATA=path/to/emotions.csv python benchmarks/search_frontier.py \\
        --out runs/frontier --budget-trials 60 --budget-minutes 240 [--seed 0] [--jobs 2] [--preset seed] [--epochs N]
        [--confirm-seeds 3] [--retime-rounds 10]

A rerun into the same --out resumes the study (a bigger budget adds trials; finished ones are read back).
--confirm-seeds N: the floors are judged over seeds, paired with the same seed's baseline: the picked pipelines
(chosen on the search seed's validation accuracy) run again on seeds 0..N-1 in `--out`/confirm, and each floor's
verdict is read from their means there. The latency verdict reads a retiming (--retime-rounds, default 10): each
seed's baseline float32 ONNX file and the pick's ONNX file timed again side by side, interleaved, in this one
process; the rows' own timings were taken minutes apart and varied by about 20 % between seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from modelshrink.cli import main
from modelshrink.config import parse_config, read_preset
from modelshrink.report.pareto import search_figures
from modelshrink.runner.executors import make_executor
from modelshrink.runner.run import Runner
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
                "speed_x_min": min(_fp32_ms(base, "1") / f["ms_b256"], _fp32_ms(base, "all") / f["ms_b256_tall"]),
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


def report(out: Path) -> list[dict[str, Any]]:
    """Print the fronts and each floor's pick on the search seed; return the picks."""
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
    fast = pick(points, "speed_x_min", "val_loss_onnx")  # the floor asks for both thread counts
    if fast:
        reached = min(fast["speed_x_t1"], fast["speed_x_tall"]) >= LATENCY_FLOOR_X and fast["test_loss_onnx"] <= 1
        print(f"latency floor ({LATENCY_FLOOR_X:g}x at batch 256, 1 and all threads, within {MAX_LOSS_POINTS:g} pt): "
              f"{'reached' if reached else 'not reached'}: {fast['variant']} {fast['speed_x_t1']:.2f}x (1 thread), "
              f"{fast['speed_x_tall']:.2f}x (all), test loss {fast['test_loss_onnx']:+.2f} pt")  # fmt: skip
    return [p for p in (size, fast) if p is not None]


def _mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.2f}"


def retime(
    folder: Path, by: dict[tuple[str, int], dict[str, Any]], name: str, seeds: list[int], x_test: Any, rounds: int
) -> tuple[list[float], list[float]]:
    """Each seed's baseline float32 ONNX file and `name`'s ONNX file timed again at batch 256, side by side:
    `rounds` rounds, each timing every (file, thread count) once in turn, so a slower minute of the machine
    slows both. Returns the ratios of the median times per seed (baseline / variant) at 1 and at all threads."""
    from modelshrink.measure.latency import latency_batches, timed_runs
    from modelshrink.runner.row import thread_counts
    from modelshrink.runner.timing import LATENCY_BUDGET_S, onnx_artifact

    batches, counts = latency_batches(x_test, 256), thread_counts()
    ratios: dict[int, list[float]] = {t: [] for t in counts}
    for s in seeds:
        files = {"base": folder / by[("baseline", s)]["artifacts"]["onnx_fp32"],
                 "variant": folder / by[(name, s)]["artifacts"]["onnx"]}  # fmt: skip
        runs = {(k, t): onnx_artifact(k, p, t).timed(t) for k, p in files.items() for t in counts}
        ms: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
        for _ in range(rounds):
            for key, run in runs.items():
                ms[key].append(timed_runs(run, batches, LATENCY_BUDGET_S, warmup=2)["median_ms"])
        for t in counts:
            ratios[t].append(statistics.median(ms[("base", t)]) / statistics.median(ms[("variant", t)]))
    return ratios[counts[0]], ratios[counts[-1]]


def confirm(
    out: Path, picks: list[dict[str, Any]], seeds: int, jobs: int | None, preset: str, data: Path | None,
    rounds: int = 0,
) -> None:  # fmt: skip
    """Run the picked pipelines on seeds 0..seeds-1 beside each seed's baseline; print the paired figures and verdicts."""
    with ResultStore(out / "results.sqlite", readonly=True) as store:
        searched = {r["variant"]: r for r in store.rows() if r["status"] == "ok"}
    names = list(dict.fromkeys(p["variant"] for p in picks))
    raw = read_preset(preset)
    raw["variants"] = [{"name": "baseline", "steps": []}, *(searched[n]["config"]["variant"] for n in names)]
    raw["seeds"] = list(range(seeds))
    if data is not None:
        raw["data"] = {**raw.get("data", {}), "path": str(data)}
    runner = Runner(parse_config(raw), out / "confirm", log=print)
    with make_executor("inprocess", jobs, None) as executor:
        rows = runner.run(executor=executor)
    by = {(r["variant"], r["seed"]): r for r in rows if r["status"] == "ok"}
    print(f"\nconfirmed over seeds 0-{seeds - 1} (each paired with its own baseline; test accuracy, deployable file "
          "for size, ONNX file for latency):")  # fmt: skip
    for n in names:
        got = [s for s in range(seeds) if (n, s) in by and ("baseline", s) in by]
        if len(got) < seeds:
            print(f"{n}: failed on seeds {sorted(set(range(seeds)) - set(got))}")
            continue
        f = {s: search_figures(by[(n, s)]) or {} for s in got}
        b = {s: search_figures(by[("baseline", s)]) or {} for s in got}
        size_x = [by[("baseline", s)]["dense_fp32_bytes"] / f[s]["bytes"] for s in got]
        t1 = [_fp32_ms(by[("baseline", s)], "1") / f[s]["ms_b256"] for s in got]
        tall = [_fp32_ms(by[("baseline", s)], "all") / f[s]["ms_b256_tall"] for s in got]
        loss = [100 * (b[s]["test_accuracy"] - f[s]["test_accuracy"]) for s in got]
        loss_onnx = [100 * (b[s]["onnx_test_accuracy"] - f[s]["onnx_test_accuracy"]) for s in got]
        if rounds > 0:  # the rows' timings were taken minutes apart: the latency verdict reads a paired retiming
            rt1, rtall = retime(out / "confirm", by, n, got, runner.prepare().x_test, rounds)
            print(f"{n}: ONNX b256 retimed beside each seed's baseline ({rounds} interleaved rounds): "
                  f"{_mean_sd(rt1)}x (1 thread), {_mean_sd(rtall)}x (all); the rows said {_mean_sd(t1)}x, "
                  f"{_mean_sd(tall)}x")  # fmt: skip
            t1, tall = rt1, rtall
        size_ok = statistics.mean(size_x) >= SIZE_FLOOR_X and statistics.mean(loss) <= MAX_LOSS_POINTS
        fast_ok = min(statistics.mean(t1), statistics.mean(tall)) >= LATENCY_FLOOR_X and statistics.mean(
            loss_onnx) <= MAX_LOSS_POINTS  # fmt: skip
        print(f"{n}: {f[got[0]]['file']} file {_mean_sd(size_x)}x smaller, test loss {_mean_sd(loss)} pt "
              f"(size floor {'met' if size_ok else 'not met'}); ONNX b256 {_mean_sd(t1)}x faster (1 thread), "
              f"{_mean_sd(tall)}x (all), test loss {_mean_sd(loss_onnx)} pt "
              f"(latency floor {'met' if fast_ok else 'not met'})")  # fmt: skip


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
    ap.add_argument("--confirm-seeds", type=int, default=0,
                    help="run the picked pipelines again on seeds 0..N-1, paired with each seed's baseline")  # fmt: skip
    ap.add_argument("--retime-rounds", type=int, default=10,
                    help="with --confirm-seeds: time each seed's baseline and pick again side by side, N rounds "
                         "(0: judge from the rows' own timings)")  # fmt: skip
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
    picks = report(args.out)
    if args.confirm_seeds > 0 and picks:
        confirm(args.out, picks, args.confirm_seeds, args.jobs, args.preset, args.data, args.retime_rounds)


if __name__ == "__main__":
    run()
