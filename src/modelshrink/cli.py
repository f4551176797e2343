"""Command line: argv → config → runner/report. No logic of its own."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from modelshrink.errors import ConfigError, ModelshrinkError

app = typer.Typer(
    help="Compare pruning, clustering and quantization on a real model and data, honestly measured.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
_debug = False

DataOpt = Annotated[
    Path | None, typer.Option("--data", help="CSV file (default: $MODELSHRINK_DATA, the cache, the Hub).")
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Run folder (default: runs/<timestamp>/).")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", min=1, help="Most baseline training epochs.")]
SeedOpt = Annotated[list[int] | None, typer.Option("--seed", help="Seed; repeat for several (default: the preset's).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file; its keys override the preset.")]
PresetOpt = Annotated[str, typer.Option("--preset", help="Packaged preset (see `modelshrink list`).")]
TaskOpt = Annotated[
    str | None, typer.Option("--task", help="emotion | text-csv | digits | image-folder | mnist | cifar10.")
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Built-in model (see `modelshrink list`) or your own: path/to/file.py:function."),
]
OnnxOpt = Annotated[
    Path | None,
    typer.Option("--onnx", help="Your own ONNX classifier: runs int8 dynamic/static and fp16 on it, and measures."),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option("--weights", help="Your trained weights for --model (.safetensors, or a .pt/.pth state_dict): "
                 "the baseline is measured as given, not trained."),
]  # fmt: skip
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="Where training runs: auto | cpu (default) | cuda | mps.")
]
OnnxOutputOpt = Annotated[
    str | None, typer.Option("--onnx-output", help="With --onnx: the output holding the [batch, labels] scores.")
]
TextColOpt = Annotated[str | None, typer.Option("--text-column", help="CSV column with the text (default: text).")]
LabelColOpt = Annotated[str | None, typer.Option("--label-column", help="CSV column with the label (default: label).")]
StratifyOpt = Annotated[bool, typer.Option("--stratify", help="Stratify the 70/15/15 split by label.")]
SubsampleOpt = Annotated[int | None, typer.Option("--subsample", min=10, help="Use a random subset of N rows.")]
SeedsOpt = Annotated[int | None, typer.Option("--seeds", min=1, help="Run seeds 0..N-1 (instead of --seed).")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Resume the run in --out (finished rows are skipped; the default there too).")
]
JobsOpt = Annotated[int | None, typer.Option("--jobs", help="Rows run at once, in local processes (or Ray tasks).")]
ExecutorOpt = Annotated[str, typer.Option("--executor", help="inprocess | processes | ray.")]
RowTimeoutOpt = Annotated[
    float | None,
    typer.Option("--row-timeout", help="Stop a row after this many seconds: a failed row (runs rows in processes)."),
]
MlflowOpt = Annotated[
    str | None,
    typer.Option("--mlflow", help="Also log each row to MLflow: a tracking URI (e.g. sqlite:///mlflow.db, "
                 "http://host:5000); alone, an SQLite store in the run folder. Needs modelshrink[mlflow]."),
]  # fmt: skip
RayAddressOpt = Annotated[
    str | None, typer.Option("--ray-address", help="Ray head HOST:PORT, 'auto', or 'local' (start one for the run).")
]
RowRetriesOpt = Annotated[
    int | None, typer.Option("--row-retries", help="Ray: rerun a row whose worker or node died at most N times (3).")
]
ArtifactsOpt = Annotated[
    str | None,
    typer.Option("--artifacts", help="Ray: pass files back through this fsspec URI (file:///shared/x, s3://b/p, "
                 "gs://b/p) instead of Ray's object store; the run folder still gets every file."),
]  # fmt: skip


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    global _debug
    _debug = debug
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )


def _config(
    preset: str, config: Path | None, data: Path | None, task: str | None, text_column: str | None,
    label_column: str | None, stratify: bool, subsample: int | None, epochs: int | None,
    seeds: list[int] | None, model: str | None = None, baseline_only: bool = False, weights: str | None = None,
    device: str | None = None,
) -> Any:  # fmt: skip
    """The flags as config.Overrides, resolved over the preset and the YAML file."""
    from modelshrink.config import Overrides, resolve

    overrides = Overrides(str(data) if data is not None else None, task, text_column, label_column, stratify,
                          subsample, epochs, seeds, model, baseline_only, weights, device)  # fmt: skip
    cfg, note = resolve(preset, config, overrides)
    if note:
        console.print(note)
    return cfg


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
    )  # fmt: skip


def _execute(
    cfg: Any, out: Path | None, jobs: int | None = None, executor: str = "inprocess", ray_address: str | None = None,
    onnx: Path | None = None, onnx_output: str | None = None, row_timeout: float | None = None,
    mlflow: str | None = None, row_retries: int | None = None, artifacts: str | None = None,
) -> None:  # fmt: skip
    from modelshrink.runner.executors import make_executor
    from modelshrink.runner.job import default_out, prepare, run_job

    out = out or default_out()
    try:
        data = prepare(
            cfg, out, onnx=onnx, onnx_output=onnx_output
        )  # bad data or folder: one error line, before any progress bar or file
        with (
            make_executor(executor, jobs, ray_address, row_timeout, row_retries, artifacts) as ex,
            _progress() as progress,
        ):
            res = run_job(cfg, out, data, ex, onnx, progress, progress.console.print, onnx_output, mlflow)
    except KeyboardInterrupt:
        console.print(
            f"interrupted: finished rows are saved in {out}/results.sqlite; run again with --out {out} to resume"
        )
        raise typer.Exit(130) from None
    console.print((out / "summary.md").read_text(), markup=False, highlight=False)
    console.print(f"results: {', '.join(str(p) for p in res.paths)}")
    if res.failed:  # the finished rows are saved; the exit code still tells a script something failed
        console.print(f"[red]{len(res.failed)} of {len(res.rows)} rows failed[/red]; their errors are in summary.md")
        for r in res.failed:
            console.print(f"  {escape(r['variant'])} seed {r['seed']}: {escape(str(r.get('error', '')))}")
        raise typer.Exit(1)


def _seed_flags(seed: list[int] | None, seeds: int | None) -> list[int] | None:

    if seeds is not None and seed:
        raise ConfigError(f"pass --seeds {seeds} (seeds 0..{seeds - 1}) or --seed, not both")
    return list(range(seeds)) if seeds is not None else seed


def _check_resume(resume: bool, out: Path | None) -> None:

    if resume and (out is None or not (out / "results.sqlite").is_file()):
        raise ConfigError(
            f"--resume needs --out pointing at an earlier run folder; {str(out)!r} holds no results.sqlite"
        )


@app.command()
def run(
    data: DataOpt = None, out: OutOpt = None, epochs: EpochsOpt = None, seed: SeedOpt = None,
    config: ConfigOpt = None, preset: PresetOpt = "seed", task: TaskOpt = None, text_column: TextColOpt = None,
    label_column: LabelColOpt = None, stratify: StratifyOpt = False, subsample: SubsampleOpt = None,
    seeds: SeedsOpt = None, resume: ResumeOpt = False, jobs: JobsOpt = None, executor: ExecutorOpt = "inprocess",
    ray_address: RayAddressOpt = None, model: ModelOpt = None, onnx: OnnxOpt = None, weights: WeightsOpt = None,
    device: DeviceOpt = None, onnx_output: OnnxOutputOpt = None, row_timeout: RowTimeoutOpt = None,
    mlflow: MlflowOpt = None, row_retries: RowRetriesOpt = None, artifacts: ArtifactsOpt = None,
) -> None:  # fmt: skip
    """The main job: train the baseline (or take yours: --weights, --onnx), apply every variant, measure, report."""
    _check_resume(resume, out)
    if onnx is not None and model is not None:
        raise ConfigError("--onnx and --model both name the model; pass one of them")
    if onnx is not None and weights is not None:
        raise ConfigError("--weights goes with --model (the model they fit); an --onnx file holds its own weights")
    if onnx_output is not None and onnx is None:
        raise ConfigError(f"--onnx-output {onnx_output!r} names an output of an --onnx file; pass --onnx FILE too")
    seed = _seed_flags(seed, seeds)
    cfg = _config(preset, config, data, task, text_column, label_column, stratify, subsample, epochs, seed, model,
                  weights=weights, device=device)  # fmt: skip
    _execute(cfg, out, jobs, executor, ray_address, onnx, onnx_output, row_timeout, mlflow, row_retries, artifacts)


@app.command()
def train(
    data: DataOpt = None, out: OutOpt = None, epochs: EpochsOpt = None, seed: SeedOpt = None,
    config: ConfigOpt = None, preset: PresetOpt = "seed", task: TaskOpt = None, text_column: TextColOpt = None,
    label_column: LabelColOpt = None, stratify: StratifyOpt = False, subsample: SubsampleOpt = None,
    model: ModelOpt = None, weights: WeightsOpt = None, device: DeviceOpt = None,
) -> None:  # fmt: skip
    """Train and measure the baseline only (with --weights: measure the given weights, no training)."""
    cfg = _config(preset, config, data, task, text_column, label_column, stratify, subsample, epochs, seed, model, True,
                  weights, device)  # fmt: skip
    _execute(cfg, out)


@app.command()
def report(folder: Annotated[Path, typer.Argument(help="A run folder holding results.sqlite.")]) -> None:
    """Rebuild report.html, its figures, summary.md, results.json and results.csv from a run folder's store."""
    from modelshrink.report.html import write_report

    paths = write_report(folder)  # raises ConfigError when the folder has no store
    console.print(f"report: {paths[0]}")
    console.print(f"results: {', '.join(str(p) for p in paths[1:])}")


@app.command()
def export(
    folder: Annotated[Path, typer.Argument(help="A run folder holding results.sqlite.")],
    fmt: Annotated[str, typer.Option("--format", help="csv | json | md.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write; '-' for stdout.")] = None,
) -> None:
    """Export a run folder's store as CSV, JSON or Markdown (default: results.csv etc. in the folder)."""
    from modelshrink.report.tables import EXPORTS, export_text
    from modelshrink.store import ResultStore

    if fmt not in EXPORTS:
        raise ConfigError(f"unknown --format {fmt!r}; known: {', '.join(EXPORTS)}")
    if not (folder / "results.sqlite").is_file():
        raise ConfigError(f"{str(folder)!r} holds no results.sqlite; pass a folder written by `modelshrink run`")
    with ResultStore(folder / "results.sqlite", readonly=True) as store:
        text = export_text(store.rows(), fmt)
    if output is not None and str(output) == "-":
        typer.echo(text, nl=False)
        return
    path = output or folder / EXPORTS[fmt]
    path.write_text(text)
    console.print(f"wrote {path}")


@app.command()
def search(
    max_drop: Annotated[float, typer.Option("--max-drop", help="Most validation accuracy lost, percentage points.")],
    budget_trials: Annotated[int, typer.Option("--budget-trials", help="Pipelines to try (the study's, all runs).")] = 20,
    budget_minutes: Annotated[float | None, typer.Option("--budget-minutes", help="Stop proposing after this many "
                              "minutes spent on the study (all runs that resumed it); default: no limit.")] = None,
    objective: Annotated[str, typer.Option("--objective", help="Which front picks the winner: size (deployable "
                         "file bytes) | latency (ms, batch 1) | latency256 (ms, batch 256).")] = "size",
    data: DataOpt = None, out: OutOpt = None, epochs: EpochsOpt = None, seed: SeedOpt = None,
    config: ConfigOpt = None, preset: PresetOpt = "seed", task: TaskOpt = None, text_column: TextColOpt = None,
    label_column: LabelColOpt = None, stratify: StratifyOpt = False, subsample: SubsampleOpt = None,
    jobs: JobsOpt = None, executor: ExecutorOpt = "inprocess", ray_address: RayAddressOpt = None,
    row_timeout: RowTimeoutOpt = None, row_retries: RowRetriesOpt = None, artifacts: ArtifactsOpt = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna RDB URL of the study (default: SQLite "
                       "search.db in the run folder); a rerun resumes it, other machines join it.")] = None,
) -> None:  # fmt: skip
    """Search pipelines of every technique: Pareto fronts of size and latency against validation accuracy."""
    from modelshrink.runner.executors import make_executor
    from modelshrink.runner.job import default_out
    from modelshrink.runner.search import check_arguments
    from modelshrink.runner.search import search as run_search
    from modelshrink.runner.search_front import front_table

    check_arguments(max_drop, budget_trials, objective, budget_minutes)  # before any data is read or executor started
    if seed and len(seed) > 1:
        raise ConfigError(f"search uses one seed; got --seed {' --seed '.join(map(str, seed))}")
    cfg = _config(preset, config, data, task, text_column, label_column, stratify, subsample, epochs, seed)
    out = out or default_out("search-")
    with make_executor(executor, jobs, ray_address, row_timeout, row_retries, artifacts) as ex:
        res = run_search(cfg, out, max_drop, budget_trials, objective, ex, jobs or 1, console.print, storage,
                         budget_minutes)  # fmt: skip
    col = res["cost_column"]
    console.print(f"{len(res['trials'])} trials, {res['minutes_spent']} min; chosen on validation accuracy, "
                  f"test accuracy reported afterwards")  # fmt: skip
    for line in front_table(res):
        console.print(escape(line), soft_wrap=True)  # one line per point, however narrow the terminal
    w = res["winner"]
    console.print(f"winner (within {res['max_drop_pp']} pp): {escape(w['variant'])}: {col} {w['cost']:,.3f}, "
                  f"val acc {w['val_accuracy']:.4f}, test acc {w['test_accuracy']:.4f}; details in {out}/search.json")  # fmt: skip


@app.command()
def predict(
    model_dir: Annotated[
        Path,
        typer.Argument(
            help="A model folder of a run (runs/X/models/baseline-seed0), a compact file (.msz) or a .pte file."
        ),
    ],
    texts: Annotated[list[str], typer.Argument(help="Sentences to classify.")],
) -> None:
    """Classify raw text with a saved model (its ONNX file and preprocessing.json)."""
    from modelshrink.predict import load_text_classifier

    classify = load_text_classifier(model_dir)
    for text, (label, prob) in zip(texts, classify(texts), strict=True):
        typer.echo(f"{label}\t{prob:.3f}\t{text}")  # tab-separated, for scripts


@app.command("eval")
def eval_(
    file: Annotated[Path, typer.Argument(help="A compact model file (.msz), or a run's model folder / .onnx file.")],
    data: Annotated[Path, typer.Option("--data", help="Labelled CSV to evaluate on.")],
    text_column: TextColOpt = None,
    label_column: LabelColOpt = None,
) -> None:
    """Accuracy and macro-F1 of a saved model file, using the preprocessing stored with it."""
    from modelshrink.measure.evaluate import evaluate_file

    res = evaluate_file(file, data, text_column or "text", label_column or "label")
    typer.echo(f"accuracy {res['accuracy']:.4f}\tmacro-F1 {res['macro_f1']:.4f}\trows {res['rows']}\t"
               f"{res['kind']} ({res['weights']}) in {res['runtime']}\t{file}")  # fmt: skip


@app.command("list")
def list_() -> None:
    """Techniques, presets, tasks and models."""
    from modelshrink.config import preset_names
    from modelshrink.data.tasks import TASKS
    from modelshrink.models.builders import MODELS
    from modelshrink.techniques import TECHNIQUES

    out = Console()
    out.print("[bold]techniques[/bold]")
    for kind in sorted(TECHNIQUES):
        out.print(f"  {kind:22} {TECHNIQUES[kind].summary}")
    out.print("[bold]presets[/bold]\n  " + ", ".join(preset_names()))
    out.print("[bold]tasks[/bold]")
    for name in TASKS:
        out.print(f"  {name:22} {(TASKS.get(name).__doc__ or '').strip()}")
    out.print("[bold]models[/bold]\n  " + ", ".join(MODELS.names()) + "  (custom: --model path/to/file.py:function)")


@app.command()
def coverage(
    technique: Annotated[
        list[str] | None, typer.Option("--technique", help="Only this technique; repeat for several (default: all).")
    ] = None,
) -> None:
    """Which technique changes which layer type: measured now on a tiny probe model per layer type."""
    from modelshrink.runner.coverage import coverage_table, format_table
    from modelshrink.techniques import get_technique

    for kind in technique or []:
        get_technique(kind)  # an unknown name: one error line listing the known ones
    typer.echo(format_table(coverage_table(technique or None)))  # plain text: no wrapping of the wide grid


@app.command()
def schema() -> None:
    """Print the JSON Schema of a run config file (point an editor's YAML support at it)."""
    import json

    from modelshrink.config import run_config_schema

    typer.echo(json.dumps(run_config_schema(), indent=1))


def _mlflow_default(argv: list[str]) -> list[str]:
    """`--mlflow` with no URI after it means the local store (typer has no option with an optional value)."""
    if "--mlflow" in argv:
        i = argv.index("--mlflow")
        if i + 1 == len(argv) or argv[i + 1].startswith("-"):
            argv.insert(i + 1, "local")
    return argv


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for errors the user can fix, as for bad flags)."""
    try:
        app(args=_mlflow_default(list(argv if argv is not None else sys.argv[1:])), prog_name="modelshrink")
    except SystemExit as exc:  # typer exits after --help, and with 2 on a bad flag
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ModelshrinkError as err:
        if _debug:
            raise
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
