"""The whole `seed` preset (the thesis's comparison, done right): prints its table and wall time.

Issue target: ≤ 100 s per seed on 2 cores (`make run`). With --save, writes the results file the
README's table is made from: the figures, the config's hash (`config_hash`), commit, date, machine;
tests/test_results_files.py fails when that hash is not the preset's any more. With --readme, also
replaces the README's table between its `<!-- results: FILE -->` and `<!-- /results -->` lines.

    MODELSHRINK_DATA=path/to/emotions.csv .venv/bin/python benchmarks/seed_comparison.py [--out DIR] [--jobs N]
        [--save benchmarks/results/seed.json --readme README.md]

--jobs N: N worker processes train, this process measures (what `make run` does, with N = the cores, at most
3); --jobs 1: all in this process.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelshrink.config import RunConfig, config_hash, parse_config, read_preset
from modelshrink.report.tables import aggregate, summary_markdown, write_exports
from modelshrink.runner.executors import make_executor
from modelshrink.runner.folder import environment
from modelshrink.runner.run import Runner

COLUMNS = ("file_bytes", "file_gzip_bytes", "compact_bytes", "nonzeros", "distinct_values_max", "val_accuracy",
           "test_accuracy", "test_accuracy_change", "latency_ms_p50")  # fmt: skip


def _commit() -> str:
    """The checkout's commit, `-dirty` when files under src/ differ from it (then the figures are not its)."""
    git = ["git", "-C", str(Path(__file__).resolve().parent)]
    sha = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout.strip()
    return (sha or "unknown") + ("-dirty" if dirty else "")


def _pct(ms: tuple[float, float] | None) -> str:
    return "—" if ms is None else f"{100 * ms[0]:.2f}% ± {100 * ms[1]:.2f}"


def _pp(ms: tuple[float, float] | None) -> str:
    return "—" if ms is None else f"{100 * ms[0]:+.2f} ± {100 * ms[1]:.2f}".replace("-", "−")


def _kb(ms: tuple[float, float] | None) -> str:
    return "—" if ms is None else f"{ms[0] / 1024:,.1f}"


def _num(ms: tuple[float, float] | None, fmt: str = "{:,.0f}") -> str:
    return "—" if ms is None else fmt.format(ms[0])


def readme_table(agg: list[dict[str, Any]], seeds: int) -> list[str]:
    """The README's table: the columns a reader compares, one line per variant (means ± sd over seeds)."""
    lines = [f"| Variant | Format | ONNX file (KB) | gzip (KB) | Compact (KB) | Nonzeros | Distinct/tensor | Val acc "
             f"| Test acc ({seeds} seeds) | Δ test vs same-seed baseline (pp) | Latency p50 (ms) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for a in agg:
        if not a["seeds"]:
            lines.append(f"| {a['variant']} | failed | | | | | | | | | |")
            continue
        change = "—" if a["variant"] == "baseline" else _pp(a.get("test_accuracy_change"))
        lines.append(
            f"| {a['variant']} | {a['export_format']} | {_kb(a['file_bytes'])} | {_kb(a['file_gzip_bytes'])} "
            f"| {_kb(a['compact_bytes'])} | {_num(a['nonzeros'])} | {_num(a['distinct_values_max'])} "
            f"| {_pct(a['val_accuracy'])} | {_pct(a['test_accuracy'])} | {change} | {_num(a['latency_ms_p50'], '{:.3f}')} |"
        )
    return lines


def write_readme(readme: Path, results: Path, record: dict[str, Any]) -> None:
    """Replace the block between `<!-- results: RESULTS -->` and `<!-- /results -->` with the provenance and table."""
    text = readme.read_text(encoding="utf-8")
    start = f"<!-- results: {results.as_posix()} -->"
    found = re.search(re.escape(start) + r"\n.*?<!-- /results -->", text, flags=re.S)
    if found is None:
        sys.exit(f"{readme}: no block from {start!r} to '<!-- /results -->'; add those two lines around the table")
    block = "\n".join([start, record["provenance"], "", *record["readme_table"], "<!-- /results -->"])
    readme.write_text(text[: found.start()] + block + text[found.end() :], encoding="utf-8")


def save(
    path: Path,
    readme: Path | None,
    preset: str,
    cfg: RunConfig,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    wall: float,
) -> None:
    """Write the results file (and the README's block from it)."""
    env, date, commit = environment(), datetime.date.today().isoformat(), _commit()
    agg = aggregate(rows)
    command = f"benchmarks/seed_comparison.py --preset {preset} --jobs {summary['jobs']} --save {path.as_posix()}"
    record = {
        **summary, "out": None, "commit": commit, "date": date, "command": command,
        "machine": {k: env.get(k) for k in ("cpu", "cpu_count", "machine", "torch", "onnxruntime")},
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "config": cfg.model_dump(mode="json", exclude={"data": {"path"}}),
        "variants": [{"variant": a["variant"], "seeds": a["seeds"], **{c: a.get(c) for c in COLUMNS}} for a in agg],
        "provenance": f"Measured {date}, commit {commit}, `{command}` (config {summary['config_hash']}), "
        f"{wall / 60:.1f} min ({summary['s_per_seed']:.0f} s per seed) on {env.get('cpu_count')} CPU cores.",
        "readme_table": readme_table(agg, len(cfg.seeds)),
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if readme is not None:
        write_readme(readme, path, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--preset", default="seed")
    parser.add_argument(
        "--save", type=Path, default=None, help="write the results file (e.g. benchmarks/results/seed.json)"
    )
    parser.add_argument("--readme", type=Path, default=None, help="with --save: update this README's results block")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(3, os.cpu_count() or 1),
        help="worker processes that train (default: as `make run`, the cores, at most 3)",
    )
    args = parser.parse_args()
    if args.readme is not None and args.save is None:
        sys.exit("--readme needs --save: the README's table is made from the results file")
    out = args.out or Path(tempfile.mkdtemp(prefix="modelshrink-bench-"))

    cfg = parse_config(read_preset(args.preset))
    t0 = time.perf_counter()
    with make_executor("inprocess", args.jobs, None) as executor:
        # Progress on stderr, flushed at once (also when it goes to a log file); the table and figures on stdout.
        rows = Runner(cfg, out, log=lambda msg: print(msg, file=sys.stderr, flush=True)).run(executor=executor)
    wall = time.perf_counter() - t0
    write_exports(rows, out)
    print(summary_markdown(rows, title=f"preset {args.preset!r}").split("\n## Columns")[0])
    summary = {"benchmark": "seed_comparison", "preset": args.preset, "config_hash": config_hash(cfg),
               "jobs": args.jobs, "wall_s": round(wall, 1), "s_per_seed": round(wall / len(cfg.seeds), 1), "rows": len(rows),
               "failed": sum(r["status"] != "ok" for r in rows), "out": str(out)}  # fmt: skip
    print(json.dumps(summary))
    if args.save is None:
        return
    save(args.save, args.readme, args.preset, cfg, rows, summary, wall)


if __name__ == "__main__":
    main()
