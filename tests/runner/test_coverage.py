"""The coverage table is measured on probe models, not written by hand."""

from __future__ import annotations

import pytest

from modelshrink.cli import main
from modelshrink.runner.coverage import LAYER_TYPES, coverage_table


def test_coverage_cells_read_what_the_technique_did() -> None:
    cells = {(c.technique, c.layer): c for c in coverage_table(["prune.magnitude", "quant.int8_static"])}
    assert len(cells) == 2 * len(LAYER_TYPES)
    assert all(c.how if c.supported else c.reason for c in cells.values())  # every "no" says why
    for layer in ("Linear", "Conv1d", "Conv2d", "Embedding", "LSTM", "GRU", "bidirectional RNN", "MultiheadAttention"):
        assert cells[("prune.magnitude", layer)].how == "sparse", layer
    assert not cells[("prune.magnitude", "LayerNorm")].supported
    assert "no weight this technique can change" in cells[("prune.magnitude", "LayerNorm")].reason
    assert cells[("quant.int8_static", "Linear")].how == "int8"  # read from the exported file's bytes
    lstm = cells[("quant.int8_static", "LSTM")]
    assert not lstm.supported and "no static int8 kernel" in lstm.reason  # the technique's own skipped reason


def test_coverage_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coverage", "--technique", "quant.fp16"]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert "BiRNN" in header and "BatchNorm" in header
    assert row.split() == ["quant.fp16"] + ["fp16"] * len(LAYER_TYPES)
    assert main(["coverage", "--technique", "nope"]) == 2
    assert "unknown technique 'nope'" in capsys.readouterr().err
