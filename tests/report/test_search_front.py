"""The report draws search's fronts from the store's rows alone, on validation accuracy."""

from typing import Any

import numpy as np

from modelshrink.report.pareto import search_figures
from modelshrink.report.plots import FRONT_COLOR, search_front
from modelshrink.report.view import VariantView


def _row(nbytes: int, ms256: float, val: float, compact: tuple[int, float] | None = None) -> dict[str, Any]:
    row = {"status": "ok", "file_bytes": nbytes, "val_accuracy": val, "test_accuracy": 0.5,
           "artifacts": {"onnx": "m/model.onnx", "onnx_fp32": "m/model.onnx", "onnx_int8": "m/x.onnx"},
           "ms_onnx_fp32_b1_t1": 0.1, "ms_onnx_fp32_b256_t1": ms256, "ms_onnx_int8_b256_t1": 999.0,
           "compact_bytes": None}  # fmt: skip
    if compact:
        row.update(compact_bytes=compact[0], compact_val_accuracy=compact[1], compact_test_accuracy=0.4)
    return row


def test_search_figures_take_the_smaller_file_with_its_own_accuracies() -> None:
    f = search_figures(_row(1000, 5.0, 0.9, compact=(200, 0.88)))
    assert f is not None and (f["file"], f["bytes"], f["val_accuracy"], f["test_accuracy"]) == (
        "compact",
        200,
        0.88,
        0.4,
    )
    assert (f["ms_b256"], f["onnx_val_accuracy"]) == (5.0, 0.9)  # the deployable ONNX file's, not int8's
    assert search_figures(_row(1000, 5.0, 0.9, compact=(2000, 0.88)))["file"] == "onnx"  # type: ignore[index]
    assert search_figures({"status": "failed"}) is None


def test_search_front_is_drawn_on_validation_accuracy() -> None:
    rows = {
        "baseline": _row(1000, 10.0, 0.90),
        "search-a": _row(100, 4.0, 0.89),
        "search-b": _row(500, 8.0, 0.80),
        "search-c": _row(50, 2.0, 0.70),
        "pruned": _row(10, 1.0, 0.99),
    }  # not a search trial: left out
    views = [VariantView(name, [], "baseline", ok=[row]) for name, row in rows.items()]
    fig = search_front(views)
    assert fig is not None
    size_ax, latency_ax = fig.axes[:2]
    front = next(line for line in size_ax.get_lines() if line.get_color() == FRONT_COLOR)
    assert list(front.get_xdata()) == [50, 100, 1000]  # search-b (500 B, 80 %) is dominated by search-a
    assert np.allclose(front.get_ydata(), [70, 89, 90])
    front256 = next(line for line in latency_ax.get_lines() if line.get_color() == FRONT_COLOR)
    assert list(front256.get_xdata()) == [2.0, 4.0, 10.0]
    assert search_front(views[:1] + views[4:]) is None  # no search trials: no figure
