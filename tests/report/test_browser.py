"""report.html in a real headless Chromium, with the network cut off: renders, sorts, runs no injected code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelshrink.report.html import write_report
from modelshrink.report.synthetic import write_synthetic_store

XSS = "<script>alert(1)</script>"


def test_report_in_headless_chromium(browser: Any, tmp_path: Path) -> None:
    variants = ["baseline", "pruned", "clustered", XSS, "pruned-int8", "broken"]
    write_synthetic_store(tmp_path, variants, seeds=[0, 1], failed={"broken": "RuntimeError: out of memory"})
    write_report(tmp_path)

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    dialogs: list[str] = []
    external: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    def block(route: Any) -> None:  # no network: anything but the file itself is aborted and recorded
        if not route.request.url.startswith("file://"):
            external.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", block)
    page.goto((tmp_path / "report.html").as_uri())
    page.wait_for_load_state("load")

    shot = tmp_path / "report-screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of report.html: {shot}")
    assert shot.stat().st_size > 10_000

    assert errors == [], errors
    assert external == [], external  # self-contained: nothing requested from anywhere else
    assert dialogs == []  # the variant named <script>alert(1)</script> ran no code

    # Every figure is drawn with a non-zero size.
    figures = page.locator("figure.plot svg")
    assert figures.count() == 6  # pareto size, pareto latency, size bars, accuracy bars, curves, best classes
    for i in range(figures.count()):
        box = figures.nth(i).bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100, (i, box)

    # One table row per variant; the script-named variant shows as text.
    rows = page.locator("#summary-table tbody tr")
    assert rows.count() == len(variants)
    names = rows.locator("td:first-child").all_inner_texts()
    assert names == variants
    assert "failed" in rows.nth(5).inner_text() and "out of memory" in rows.nth(5).inner_text()

    # Clicking a header sorts by it; clicking again reverses; "—" (failed) stays last.
    heads = page.locator("#summary-table thead th")
    col = heads.all_inner_texts().index("File bytes")

    def column() -> list[str]:
        return rows.locator(f"td:nth-child({col + 1})").evaluate_all("cells => cells.map(c => c.dataset.sort)")

    heads.nth(col).click()
    assert heads.nth(col).get_attribute("aria-sort") == "ascending"
    up = column()
    numbers = [float(x) for x in up if x]
    assert numbers == sorted(numbers) and up[-1] == "" and len(numbers) == len(variants) - 1
    heads.nth(col).click()
    down = column()
    assert [float(x) for x in down if x] == sorted(numbers, reverse=True) and down[-1] == ""
    heads.nth(0).click()  # text column
    assert rows.locator("td:first-child").all_inner_texts() == sorted(variants, key=str.lower)
    page.close()
