"""Overhead of the results store and of Ray against the in-process executor, for a sweep of tiny variants.

Target (issue 7): the overhead per row is at most 5% of a tiny variant's in-process run time.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sweep_overhead.py [--rows 300] [--repeats 30] [--no-ray]

Prints, per row: the in-process time of a tiny variant (its measured `wall_s`), the store's
commit (and resume lookup) time, and Ray's per-task round trip with a row's real payload; then
the end-to-end wall time of the same sweep in-process and on Ray (one worker, so the difference
is overhead plus the prefix work each Ray task redoes, not parallelism), with Ray's start-up apart.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from modelshrink.config import parse_config
from modelshrink.data.synthetic import write_synthetic_csv
from modelshrink.runner.executors import RayExecutor, _setup
from modelshrink.runner.run import Runner
from modelshrink.runner.task import RowRunner
from modelshrink.store import ResultStore

PRUNE = {"kind": "prune.magnitude", "schedule": "constant", "final_sparsity": 0.5, "epochs": 1}
VARIANTS = [
    {"name": "baseline", "steps": []},
    {"name": "int8", "steps": [{"kind": "quant.int8_dynamic"}]},
    {"name": "fp16", "steps": [{"kind": "quant.fp16"}]},
    {"name": "pruned", "steps": [PRUNE]},
    {"name": "pruned-int8", "steps": [PRUNE, {"kind": "quant.int8_dynamic"}]},
    {"name": "clustered", "steps": [{"kind": "cluster.kmeans", "clusters": 4, "epochs": 1}]},
]


def _noop_row(setup: object, variant_json: str, seed: int, result: dict) -> tuple[str, dict]:
    """What a Ray row task costs beyond its work: arguments in, a row's result out."""
    return "ok", result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300, help="synthetic data rows")
    ap.add_argument("--repeats", type=int, default=30, help="timed store commits and Ray round trips")
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    quiet = lambda _m: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        csv = write_synthetic_csv(tmp / "d.csv", args.rows)
        cfg = parse_config({"data": {"task": "csv", "path": str(csv), "vocab_size": 64, "max_len": 16},
                            "model": {"embed_dim": 8, "hidden": 8}, "train": {"epochs": 1}, "seeds": [0],
                            "variants": VARIANTS})  # fmt: skip
        runner = Runner(cfg, tmp / "inproc", log=quiet)
        data = runner.prepare()
        RowRunner(cfg, runner.out, log=quiet).baseline(
            data, 0
        )  # trained once beforehand for both executors (cached on disk)
        t0 = time.perf_counter()
        rows = runner.run(data)
        inproc_s = time.perf_counter() - t0
        row_s = statistics.fmean(r["wall_s"] for r in rows)
        print(f"in-process: {len(rows)} tiny variants, {inproc_s:.2f} s in all, {row_s * 1000:.1f} ms per row (mean)")

        # The store: commit a row (one transaction, WAL) and look one up, as a resume does.
        puts, looks = [], []
        with ResultStore(tmp / "bench.sqlite") as store:
            for i in range(args.repeats):
                r = rows[i % len(rows)]
                result = {k: v for k, v in r.items() if k not in ("key", "variant", "seed", "status", "config")}
                t = time.perf_counter()
                store.put(f"k{i}", r["variant"], r["seed"], r["status"], r["config"], result)
                puts.append(time.perf_counter() - t)
                t = time.perf_counter()
                store.done(f"k{i}")
                looks.append(time.perf_counter() - t)
        store_s = statistics.median(puts) + statistics.median(looks)
        print(f"store: commit {statistics.median(puts) * 1000:.2f} ms + lookup {statistics.median(looks) * 1000:.3f} ms"
              f" per row (median) = {100 * store_s / row_s:.2f}% of a tiny variant's run")  # fmt: skip
        if args.no_ray:
            return

        t = time.perf_counter()
        with RayExecutor("local", jobs=1) as ex:
            start_s = time.perf_counter() - t
            import ray

            setup = ray.put(_setup(RowRunner(cfg, runner.out, log=quiet), data, 1))
            noop = ray.remote(num_cpus=1)(_noop_row)
            payload = {k: v for k, v in rows[-1].items() if k not in ("config",)}
            ray.get(noop.remote(setup, cfg.variants[-1].model_dump_json(), 0, payload))  # warm the worker
            trips = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                ray.get(noop.remote(setup, cfg.variants[-1].model_dump_json(), 0, payload))
                trips.append(time.perf_counter() - t)
            trip_s = statistics.median(trips)
            print(f"ray: start {start_s:.1f} s once per run; task round trip {trip_s * 1000:.2f} ms per row (median)"
                  f" = {100 * trip_s / row_s:.2f}% of a tiny variant's run")  # fmt: skip
            ray_runner = Runner(cfg, tmp / "ray", log=quiet)
            RowRunner(cfg, ray_runner.out, log=quiet).baseline(
                data, 0
            )  # its folder's baseline cache, outside the timing as for in-process
            t = time.perf_counter()
            ray_rows = ray_runner.run(data, ex)
            ray_s = time.perf_counter() - t
        same = {(r["variant"], r["test_accuracy"], r["file_bytes"]) for r in ray_rows} == {
            (r["variant"], r["test_accuracy"], r["file_bytes"]) for r in rows
        }
        print(f"ray sweep, 1 worker: {ray_s:.2f} s vs in-process {inproc_s:.2f} s "
              f"({(ray_s - inproc_s) / len(rows) * 1000:+.0f} ms per row, including each task's worker set-up, "
              f"baseline load and recomputed prefixes); same results: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
