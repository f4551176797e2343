"""Every technique on a user's own trained model: `modelshrink run --preset all` on a checkpoint and on a
Hugging Face folder (issue 13's "done when").

Both run on a synthetic three-label text CSV (built here, offline), one seed, through the CLI a user
types:

1. a checkpoint: `modelshrink train --model lstm` writes a baseline's safetensors, then
   `modelshrink run --preset all --model lstm --weights that.safetensors` measures it as given and
   applies every variant of the `all` preset to it;
2. a Hugging Face folder: a tiny encoder-only BERT (2 layers, hidden 32, WordPiece tokenizer trained on
   the texts) saved with `save_pretrained`, then `modelshrink run --preset all --model hf:FOLDER`: it
   gets a classification head for the data's labels and is fine-tuned first, as a sentence-transformers
   folder would be.

It prints, per technique (the kinds in a variant's steps), how many rows finished and each distinct
failure reason (a technique that does not apply must fail with a refusal naming the model, never
silently skip), and the wall time of each run.

`--one-point` runs the preset's variants with every grid cut to its first value (26 rows instead of 74:
each technique and pipeline once), for a coverage answer in under an hour on a busy 2-core machine.

    .venv/bin/python benchmarks/byo_all.py [--out DIR] [--rows 300] [--only checkpoint|hf] [--one-point]
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from modelshrink.config import read_preset
from modelshrink.data.synthetic import tiny_hf_folder, write_synthetic_csv


def one_point_config(out: Path) -> Path:
    """The `all` preset's variants with each list-valued step setting cut to its first value, as a --config file."""
    preset = read_preset("all")
    variants = [{**v, "steps": [{k: (x[0] if isinstance(x, list) else x) for k, x in step.items()}
                                for step in v.get("steps") or []]} for v in preset["variants"]]  # fmt: skip
    path = out / "one-point.json"  # JSON is YAML
    path.write_text(json.dumps({"variants": variants}))
    return path


def cli(*args: str, rows_may_fail: bool = False) -> float:
    """Run `modelshrink ARGS` (its log on this terminal); return its wall seconds; stop on failure. A run whose
    rows failed (a technique refusing the model) exits 1: with `rows_may_fail` its rows are still summarized."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "modelshrink", *args], check=False)
    if done.returncode not in ((0, 1) if rows_may_fail else (0,)):
        sys.exit(f"modelshrink {' '.join(args)} exited {done.returncode}")
    return time.perf_counter() - start


def summarize(name: str, run: Path, seconds: float) -> None:
    rows = json.loads((run / "results.json").read_text())
    ok: dict[str, int] = defaultdict(int)
    failed: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        steps = row.get("steps") or row.get("config", {}).get("variant", {}).get("steps") or []  # failed: its config's
        kinds = " → ".join(s["kind"] for s in steps) or "baseline"
        if row["status"] == "ok":
            ok[kinds] += 1
        else:
            failed[kinds].add(str(row.get("error") or "").splitlines()[0][:160])
    print(f"\n## {name}: {len(rows)} rows in {seconds:.0f} s ({run})")
    print("| technique chain | rows ok | failed: reason |\n|---|---:|---|")
    for kinds in sorted(ok.keys() | failed.keys()):
        print(f"| {kinds} | {ok.get(kinds, 0)} | {'; '.join(sorted(failed.get(kinds, ()))) or ''} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the data, models and run folders")
    parser.add_argument("--rows", type=int, default=300, help="rows of the synthetic CSV")
    parser.add_argument("--only", choices=["checkpoint", "hf"], default=None)
    parser.add_argument("--one-point", action="store_true", help="each grid at its first value only")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="byo-all-"))
    out.mkdir(parents=True, exist_ok=True)
    csv = write_synthetic_csv(out / "texts.csv", n=args.rows)
    common = ["--task", "csv", "--data", str(csv), "--seed", "0"]
    if args.one_point:
        common += ["--config", str(one_point_config(out))]

    if args.only in (None, "checkpoint"):
        trained = out / "ckpt-train"
        cli("train", *common, "--model", "lstm", "--epochs", "5", "--out", str(trained))
        weights = sorted(glob.glob(str(trained / "baselines" / "seed0-*" / "model.safetensors")))
        if not weights:
            sys.exit(f"no baseline weights under {trained}/baselines")
        run = out / "ckpt-all"
        seconds = cli("run", *common, "--preset", "all", "--model", "lstm", "--weights", weights[0], "--out", str(run),
                      rows_may_fail=True)  # fmt: skip
        summarize("checkpoint (--model lstm --weights)", run, seconds)

    if args.only in (None, "hf"):
        folder = tiny_hf_folder(out / "tiny-bert", None)  # encoder-only: a new head, fine-tuned first
        run = out / "hf-all"
        seconds = cli(
            "run", *common, "--preset", "all", "--model", f"hf:{folder}", "--out", str(run), rows_may_fail=True
        )
        summarize(f"Hugging Face folder (--model hf:{folder.name})", run, seconds)


if __name__ == "__main__":
    main()
