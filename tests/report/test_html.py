"""The report from a synthetic store: files, escaping, failed variants, missing figures, the CLI."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import markupsafe
import numpy as np
import pytest
from sklearn.metrics import f1_score

from modelshrink.cli import main
from modelshrink.report.html import write_report
from modelshrink.report.pareto import pareto_front
from modelshrink.report.plots import per_class_f1
from modelshrink.report.synthetic import synthetic_row, write_synthetic_store
from modelshrink.report.view import build_views, stat_of, verdict
from modelshrink.store import ResultStore

XSS = "<script>alert(1)</script>"


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, flags=re.S)


def test_report_files_and_self_contained(tmp_path: Path) -> None:
    write_synthetic_store(tmp_path, ["baseline", "pruned", "int8"], seeds=[0, 1, 2])
    (tmp_path / "config.json").write_text(json.dumps({"train": {"epochs": 7, "threads": 3}, "seeds": [0, 1, 2]}))
    paths = write_report(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert paths[0] == tmp_path / "report.html"
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert pngs == sorted(f"{n}.png" for n in ("pareto_size", "pareto_latency", "size_bars", "accuracy_bars",
                                                 "training_curves", "best_classes"))  # fmt: skip
    for p in (tmp_path / "figures").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5_000
    assert len(_svgs(page)) == 6
    # Self-contained: nothing to fetch. Only in-document references (#id) and XML namespaces.
    assert not re.search(r"\ssrc=", page)
    assert {h for h in re.findall(r'href="([^"#][^"]*)"', page) if not h.startswith("data:image/png")} == set()
    assert "<link" not in page and "@import" not in page and "url(http" not in page
    assert page.count("<script") == 1  # the table sorter, allowed by its CSP hash
    assert "script-src 'sha256-" in page
    # The run's config (from config.json) and environment are shown.
    assert "&#34;epochs&#34;: 7" in page or '"epochs": 7' in page
    assert "2.13.0+cpu" in page and "abc1234" in page and "0, 1, 2" in page and "Synthetic CPU @ 1 GHz" in page
    # summary.md: the thesis-style table, one line per variant.
    md = (tmp_path / "summary.md").read_text()
    assert all(f"| {v} |" in md for v in ("baseline", "pruned", "int8"))


def test_script_in_names_and_labels_is_text(tmp_path: Path) -> None:
    """A variant and a class label named <script>alert(1)</script> are escaped in the page and the SVGs."""
    odd = "cost $x^{2$ \\ & 'q'"  # unbalanced mathtext for matplotlib, quotes and & for HTML
    write_synthetic_store(tmp_path, ["baseline", XSS, odd], seeds=[0])
    with ResultStore(tmp_path / "results.sqlite") as store:
        rows = store.rows()
        for r in rows:  # the label too, in the confusion matrix of the best variant
            r["labels"] = [XSS, *r["labels"][1:]]
            result = {k: v for k, v in r.items() if k not in ("key", "variant", "seed", "status", "config")}
            store.put(r["key"], r["variant"], r["seed"], r["status"], r["config"], result)
    (tmp_path / "config.json").write_text(json.dumps({"note": XSS}))
    write_report(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert XSS not in page
    assert page.count("<script") == 1
    assert html.escape(XSS, quote=False).replace(">", "&gt;") in page.replace("&#39;", "'")
    for svg in _svgs(page):  # matplotlib writes text as glyph paths and a comment, both escaped
        assert "<script" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in "".join(_svgs(page))
    assert str(markupsafe.escape(odd)) in page


def test_failed_variants_show_as_failed_with_message(tmp_path: Path) -> None:
    message = "IncompatibleModelError: no Conv2d or Linear layer to prune in <model>"
    write_synthetic_store(tmp_path, ["baseline", "pruned", "broken"], seeds=[0, 1], failed={"broken": message})
    write_report(tmp_path)
    page = (tmp_path / "report.html").read_text()
    row = re.search(r'<tr class="failed">(.*?)</tr>', page, flags=re.S)
    assert row is not None and ">broken<" in row.group(1)
    assert html.escape(message) in row.group(1)
    assert page.count(html.escape(message)) >= 3  # the table row and one line per failed seed
    assert "broken</strong> seed 1: failed" in page
    # The failed variant has no figures to draw, but the others still do.
    assert len(_svgs(page)) == 6
    md = (tmp_path / "summary.md").read_text()
    assert "| broken | failed (2 seeds)" in md and message in md


def test_missing_figures_are_dashes_and_figures_are_left_out(tmp_path: Path) -> None:
    """Rows of an older version lack latency, histories and confusion matrices: shown as —, never 0."""
    rng = np.random.default_rng(0)
    with ResultStore(tmp_path / "results.sqlite") as store:
        for name, chain in (("baseline", []), ("pruned", ["prune.magnitude"])):
            result = synthetic_row(name, 0, chain, rng)
            for key in ("latency_ms_p50", "latency_ms_p90", "test_confusion_matrix", "labels", "file_gzip_bytes",
                        "parameters"):  # fmt: skip
                del result[key]
            result["baseline_history"] = ["not an epoch"]  # malformed: no curve, no crash
            for step in result["steps"]:
                del step["history"]
            cfg = {"variant": {"name": name, "start": "baseline", "steps": [{"kind": k} for k in chain]}}
            store.put(name, name, 0, "ok", cfg, result)
    write_report(tmp_path)
    page = (tmp_path / "report.html").read_text()
    body = page[page.index("<tbody>") : page.index("</tbody>")]
    latency = re.findall(r'<td class="num" data-sort="">—</td>', body)
    assert len(latency) == 2  # one latency cell per variant, empty sort key
    names = {p.stem for p in (tmp_path / "figures").glob("*.png")}
    assert names == {"pareto_size", "size_bars", "accuracy_bars"}
    assert "No variant within 1 point has a measured latency_ms_p50" in page
    md = (tmp_path / "summary.md").read_text()
    assert "| — |" in md


def test_cli_report_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic_store(tmp_path, ["baseline", "pruned"], seeds=[0])
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").is_file()
    assert "report.html" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "holds no results.sqlite" in capsys.readouterr().err
    assert not (empty / "report.html").exists() and not (empty / "results.sqlite").exists()


def test_verdict_smallest_and_fastest_within_one_point(tmp_path: Path) -> None:
    write_synthetic_store(tmp_path, ["baseline", "small-bad", "small-ok", "fast-ok"], seeds=[0],
                          chains={"small-bad": ["quant.int8_dynamic"], "small-ok": ["prune.magnitude"],
                                  "fast-ok": ["cluster.kmeans"]})  # fmt: skip
    with ResultStore(tmp_path / "results.sqlite") as store:
        rows = store.rows()
    figures = {"baseline": (0.90, 1000, 1.0), "small-bad": (0.885, 100, 0.5), "small-ok": (0.895, 400, 0.9),
               "fast-ok": (0.905, 900, 0.2)}  # fmt: skip
    for r in rows:
        r["test_accuracy"], r["file_bytes"], r["latency_ms_p50"] = figures[r["variant"]]
    views = build_views(rows)
    smallest, fastest = verdict(views)
    assert smallest.variant == "small-ok"  # small-bad is 1.5 points below: out
    assert "2.50× smaller" in smallest.text and "-0.50 points" in smallest.text
    assert fastest.variant == "fast-ok" and "5.00× the baseline's speed" in fastest.text
    assert [v.compression.mean if v.compression else None for v in views] == [1.0, 10.0, 2.5, 1000 / 900]


def test_helpers() -> None:
    # (bytes, accuracy): the frontier keeps what no other point beats on both.
    pts = [(100, 0.80), (50, 0.85), (200, 0.90), (60, 0.84), (300, 0.89)]
    assert pareto_front(pts) == [1, 2]
    assert stat_of([1.0, None]) is None and stat_of([]) is None and stat_of([True]) is None
    s = stat_of([1, 3])
    assert s is not None and s.mean == 2 and s.n == 2 and abs(s.std - 2**0.5) < 1e-12
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    cm = np.zeros((4, 4), dtype=int)
    np.add.at(cm, (y, p), 1)
    assert np.allclose(per_class_f1(cm), f1_score(y, p, average=None, labels=range(4)))


def test_a_figure_that_cannot_be_drawn_is_named_and_the_rest_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelshrink.report import plots

    def broken(views: object) -> None:
        raise KeyError("size_bytes_v2")

    monkeypatch.setattr(plots, "size_bars", broken)
    write_synthetic_store(tmp_path, ["baseline", "pruned"], seeds=[0])
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "size_bars.png").write_bytes(b"old")
    write_report(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "Size on disk: could not be drawn (KeyError: &#39;size_bytes_v2&#39;)" in page
    assert len(_svgs(page)) == 5 and not (tmp_path / "figures" / "size_bars.png").exists()
