"""The report: report.html (self-contained), summary.md and one PNG per figure, from the store alone.

The page is rendered by jinja2 with autoescaping on, so every user string (variant names,
labels, paths, error messages) is text, never markup. Its only script is the table sorter,
allowed by a Content-Security-Policy hash, so even markup that slipped through could not run
a script or load anything from the network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.figure import Figure

from modelshrink.errors import ConfigError
from modelshrink.report import plots, ship
from modelshrink.report.tables import write_exports
from modelshrink.report.view import (
    Stat,
    VariantView,
    baseline_of,
    best_variant,
    build_views,
    fmt_pct,
    verdict,
)
from modelshrink.store import ResultStore

FIGURE_DIR = "figures"

# The table sorter: click a header to sort by it, again to reverse. Cells carry data-sort
# (a number, or empty for "—", which always sorts last); other columns sort as text.
SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.querySelectorAll("thead th");
  heads.forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col];
        var raw = cell.getAttribute("data-sort");
        if (raw === null) { return cell.textContent.trim().toLowerCase(); }
        return raw === "" ? null : parseFloat(raw);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return (x === null) - (y === null); }
        var c = typeof x === "number" ? x - y : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

# Keys of a row that describe where it ran (shown in the Environment section when present).
ENV_KEYS = ["torch", "onnxruntime", "python", "git_sha", "machine", "cpu", "cpu_count", "latency_threads", "threads"]

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("modelshrink.report", "templates"),
    autoescape=True,  # every {{ value }} is HTML-escaped; only the SVGs and the script are marked safe
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _cell(text: str, sort: float | None | str = "text") -> dict[str, Any]:
    """A table cell: its text and its sort key (None: missing; "text": sort by the text)."""
    return {"text": text, "sort": None if sort == "text" else ("" if sort is None else repr(float(sort)))}


def _stat_cell(s: Stat | None, fmt: Callable[[Stat], str]) -> dict[str, Any]:
    return _cell("—", None) if s is None else _cell(fmt(s), s.mean)


def _table(views: list[VariantView]) -> tuple[list[str], list[list[dict[str, Any]]]]:
    heads = ["Variant", "Technique chain", "Seeds", "Test accuracy", "Test macro-F1", "File bytes", "Compression ×",
             "Latency p50 (ms)", "Status"]  # fmt: skip
    body = []
    for v in views:
        status = "ok" if not v.failed else f"failed on {len(v.failed)} seed(s): {v.failed[0].get('error', '')}"
        body.append([
            _cell(v.name), _cell(v.chain_text), _cell(str(len(v.ok)), len(v.ok)),
            _stat_cell(v.stat("test_accuracy"), fmt_pct),
            _stat_cell(v.stat("test_macro_f1"), fmt_pct),
            _stat_cell(v.stat("file_bytes"), lambda s: f"{s.mean:,.0f}"),
            _stat_cell(v.compression, lambda s: f"{s.mean:.2f}×"),
            _stat_cell(v.stat("latency_ms_p50"), lambda s: f"{s.mean:.3f}" + (f" ± {s.std:.3f}" if s.n > 1 else "")),
            _cell(status),
        ])  # fmt: skip
    return heads, body


def _environment(rows: list[dict[str, Any]], config: dict[str, Any] | None) -> list[tuple[str, str]]:
    env: list[tuple[str, str]] = []
    for key in ENV_KEYS:
        values = list(dict.fromkeys(str(r[key]) for r in rows if r.get(key) is not None))
        if values:
            env.append((key, ", ".join(values)))
    seeds = sorted({r["seed"] for r in rows})
    env.append(("seeds", ", ".join(map(str, seeds))))
    train = (config or {}).get("train") if isinstance(config, dict) else None
    if isinstance(train, dict) and "threads" in train:
        env.append(("training threads", str(train["threads"])))
    return env


def _read_config(run_dir: Path, rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """The run's config.json when the folder has it, else the first row's resolved config."""
    path = run_dir / "config.json"
    try:
        config = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        config = None  # unreadable: fall back to what the store says
    if isinstance(config, dict):
        return config, f"{path}"
    first = rows[0].get("config") if rows else None
    return (first if isinstance(first, dict) else None), "the first row of the results store"


def _figures(views: list[VariantView], out_dir: Path) -> tuple[list[plots.Plot], list[str]]:
    best = best_variant(views)
    specs: list[tuple[str, str, str, Callable[[], Figure | None]]] = [
        ("pareto_size", "Size vs accuracy",
         "Deployable file bytes (log scale) against test accuracy; error bars are one standard deviation over seeds. "
         "Points on the red staircase are Pareto-optimal: no other variant is both smaller and more accurate.",
         lambda: plots.pareto_size(views)),
        ("pareto_latency", "Latency vs accuracy",
         "Median latency of one prediction against test accuracy; the red staircase is the Pareto frontier.",
         lambda: plots.pareto_latency(views)),
        ("search_front", "Search: the fronts on validation accuracy",
         "Trials of `modelshrink search` (variants search-*) and the baseline: the deployable file's bytes (left) "
         "and the ONNX file's latency at batch 256 (right) against validation accuracy; the red staircase is the "
         "front the search chose on validation only (search.json reports each point's test accuracy).",
         lambda: plots.search_front(views)),
        ("size_bars", "Size on disk",
         "Bytes of real files: the deployable ONNX file, its gzip/zstd size and the compact weights file "
         "(— where a variant has none, e.g. compact for quantized models).",
         lambda: plots.size_bars(views)),
        ("accuracy_bars", "Train, validation and test accuracy",
         "Accuracy of each variant's deployable file per split, mean ± std over seeds; bars start at 0.",
         lambda: plots.accuracy_bars(views)),
        ("training_curves", "Training curves",
         "Left: the baseline's training (loss per epoch, validation accuracy); right: each variant's "
         "fine-tuning loss per epoch, across its steps.",
         lambda: plots.training_curves(views)),
        ("best_classes", f"Per-class F1 and confusion matrix of the best variant ({best.name if best else '—'})",
         "The variant with the highest mean test accuracy; test-set confusion matrices summed over its seeds.",
         lambda: plots.best_classes(best) if best else None),
    ]  # fmt: skip
    out, problems = [], []
    for name, title, caption, build in specs:
        stale = out_dir / f"{name}.png"
        stale.unlink(missing_ok=True)  # no data now: an old PNG would contradict the report
        try:
            fig = build()
            if fig is not None:
                out.append(plots.render(fig, name, title, caption, out_dir))
        except Exception as err:  # rows of another version: the rest of the report is still worth having
            problems.append(f"{title}: could not be drawn ({type(err).__name__}: {err})")
    return out, problems


def _failures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"variant": r["variant"], "seed": r["seed"], "error": str(r.get("error") or "no message recorded")}
            for r in rows if r.get("status") != "ok"]  # fmt: skip


def _skipped(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    found = set()
    for r in rows:
        for step in r.get("steps") or [] if r.get("status") == "ok" else []:
            for s in step.get("skipped") or [] if isinstance(step, dict) else []:
                if isinstance(s, dict):
                    found.add((str(r["variant"]), str(s.get("name", "?")), str(s.get("reason", ""))))
    return sorted(found)


def render_html(rows: list[dict[str, Any]], run_dir: Path, figure_dir: Path) -> str:
    """The report page for these rows; writes the figures' PNGs into figure_dir."""
    views = build_views(rows)
    config, config_source = _read_config(run_dir, rows)
    heads, body = _table(views)
    script_hash = base64.b64encode(hashlib.sha256(SORT_JS.encode()).digest()).decode()
    base = baseline_of(views)
    figures, figure_problems = _figures(views, figure_dir)
    return _env.get_template("report.html.j2").render(
        title=f"modelshrink report: {run_dir.resolve().name}",
        run_dir=str(run_dir.resolve()),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        verdicts=verdict(views),
        ship_heads=ship.HEADS,
        ship_rows=ship.table(views),
        baseline=base.name if base else None,
        heads=heads,
        body=body,
        figures=figures,
        figure_problems=figure_problems,
        failures=_failures(rows),
        skipped=_skipped(rows),
        environment=_environment(rows, config),
        config=json.dumps(config, indent=2, sort_keys=False) if config is not None else None,
        config_source=config_source,
        n_rows=len(rows),
        script=SORT_JS,
        script_hash=script_hash,
    )


def write_report(run_dir: Path) -> list[Path]:
    """report.html, summary.md (with results.json/csv) and figures/*.png in run_dir, from its results store."""
    run_dir = Path(run_dir)
    db = run_dir / "results.sqlite"
    if not db.is_file():
        raise ConfigError(f"{str(run_dir)!r} holds no results.sqlite; pass a folder written by `modelshrink run`")
    with ResultStore(db) as store:
        rows = store.rows()
    if not rows:
        raise ConfigError(f"the results store {str(db)!r} has no rows yet; run `modelshrink run --out {run_dir}`")
    paths = write_exports(rows, run_dir)
    page = render_html(rows, run_dir, run_dir / FIGURE_DIR)
    html = run_dir / "report.html"
    tmp = html.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, html)  # a reader never sees half a report
    return [html, *paths, *sorted((run_dir / FIGURE_DIR).glob("*.png"))]
