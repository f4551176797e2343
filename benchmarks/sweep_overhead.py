"""Overhead of the results store and of Ray against the in-process executor, for a sweep of tiny variants.

Target (issue 7): the overhead per row is at most 5% of a tiny variant's in-process run time.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sweep_overhead.py [--rows 300] [--repeats 30] [--no-ray]
    PYTHONPATH=src python benchmarks/sweep_overhead.py --cluster path/to/emotions.csv [--subsample N] [--epochs N]

Prints, per row: the in-process time of a tiny variant (its measured `wall_s`), the store's
commit (and resume lookup) time, and Ray's per-task round trip with a row's real payload; then
the end-to-end wall time of the same sweep in-process and on Ray (one worker, so the difference
is overhead plus the prefix work each Ray task redoes, not parallelism), with Ray's start-up apart.

`--cluster CSV`: the multi-node case (issue 17) on the seed preset, 1 seed: a real Ray cluster on this
machine (ray.cluster_utils.Cluster, loopback only, a head with no CPUs for tasks) with 1 worker node,
then 2 (1 CPU each; no shared disk assumed: rows are self-contained), with `train.threads: 1` everywhere. The baseline is trained once
beforehand and sent from the driver's folder, so the figures are about rows. Prints Ray's overhead per
row as a share of the row's own work (1 node: (sweep time - sum of the rows' wall_s) / sum of wall_s;
target <= 5 %), the speed-up of 2 nodes over 1 (target >= 1.6x on a quiet machine), and the load average.
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
from modelshrink.runner.folder import RunFolder
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
    ap.add_argument("--cluster", metavar="CSV", help="the multi-node case on the seed preset, with this data")
    ap.add_argument("--subsample", type=int, default=None, help="--cluster: rows of the data used")
    ap.add_argument("--epochs", type=int, default=None, help="--cluster: most baseline epochs")
    args = ap.parse_args()
    if args.cluster:
        cluster_case(Path(args.cluster), args.subsample, args.epochs)
        return
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


def _sweep_on_cluster(cfg: object, data: object, baseline: Path, out: Path, nodes: int) -> tuple[float, list[dict]]:
    """The sweep's wall time on a fresh cluster of `nodes` worker nodes (1 CPU each), and its rows."""
    import shutil

    import ray
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    ray_constants.ENABLE_RAY_CLUSTER = False  # keep the driver on loopback, where the nodes listen
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                      "node_ip_address": "127.0.0.1"})  # fmt: skip
    try:
        for _ in range(nodes):
            c.add_node(num_cpus=1, node_ip_address="127.0.0.1", env_vars={"TMPDIR": tempfile.mkdtemp()})
        shutil.copytree(baseline, out / baseline.name)  # the baseline cache, sent to the tasks from here
        with RayExecutor(c.address) as ex:
            t = time.perf_counter()
            rows = Runner(cfg, out, log=lambda _m: None).run(data, ex)  # type: ignore[arg-type]
            return time.perf_counter() - t, rows
    finally:
        ray.shutdown()
        c.shutdown()


def cluster_case(csv: Path, subsample: int | None, epochs: int | None) -> None:
    import os

    from modelshrink.config import Overrides, resolve

    cfg, _ = resolve("seed", None, Overrides(data_path=str(csv), subsample=subsample, epochs=epochs, seeds=[0]))
    # One torch thread per row everywhere: the nodes have 1 CPU each, a Ray row holds train.threads CPUs, and
    # the in-process run then computes the same numbers as the cluster's rows.
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"threads": 1})})
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        runner = Runner(cfg, tmp / "inproc", log=lambda _m: None)
        data = runner.prepare()
        t = time.perf_counter()
        RowRunner(cfg, runner.out, log=lambda _m: None).baseline(data, 0)
        print(f"baseline trained once: {time.perf_counter() - t:.1f} s")
        baseline = RunFolder(runner.out, cfg).baseline_dir(data, 0).parent
        t = time.perf_counter()
        inproc = runner.run(data)
        print(f"in-process: {len(inproc)} rows in {time.perf_counter() - t:.1f} s (shares pipeline prefixes)")
        t1, rows1 = _sweep_on_cluster(cfg, data, baseline, tmp / "one", 1)
        work = sum(r["wall_s"] for r in rows1)
        print(f"1 worker node: {t1:.1f} s; the rows' own work (sum of wall_s) {work:.1f} s; Ray overhead per row "
              f"{(t1 - work) / len(rows1):.2f} s = {100 * (t1 - work) / work:.1f}% of the row's work")  # fmt: skip
        t2, rows2 = _sweep_on_cluster(cfg, data, baseline, tmp / "two", 2)
        keys = [{(r["variant"], r["test_accuracy"], r["file_bytes"]) for r in rs} for rs in (inproc, rows1, rows2)]
        same = keys[0] == keys[1] == keys[2]
        print(f"2 worker nodes: {t2:.1f} s; speed-up over 1 node {t1 / t2:.2f}x; rows equal to in-process: {same}")
    print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
