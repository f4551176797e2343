"""The `all` and `structured` presets: every registered technique, at several operating points."""

from __future__ import annotations

from collections import Counter

from modelshrink.config import parse_config, read_preset
from modelshrink.techniques import TECHNIQUES

NO_PARAMETERS = {"quant.int8_dynamic", "quant.fp16"}  # nothing to vary: one operating point each


def test_all_preset_covers_every_registered_technique_at_five_points() -> None:
    cfg = parse_config(read_preset("all"), "all")
    single = Counter(v.steps[0].kind for v in cfg.variants if len(v.steps) == 1)
    # A technique added to the registry must be added to `all` too.
    assert set(TECHNIQUES) <= set(single), f"missing from preset 'all': {sorted(set(TECHNIQUES) - set(single))}"
    few = {k: n for k, n in single.items() if n < 5 and k not in NO_PARAMETERS}
    assert not few, f"techniques with fewer than 5 operating points in 'all': {few}"
    assert any(len(v.steps) >= 3 for v in cfg.variants)  # pipelines too


def test_structured_preset_expands_into_named_operating_points() -> None:
    cfg = parse_config(read_preset("structured"), "structured")
    names = [v.name for v in cfg.variants]
    assert "structured-units[unit_sparsity=0.5]" in names
    kinds = Counter(v.steps[0].kind for v in cfg.variants if v.steps)
    assert kinds["prune.structured"] >= 5 and kinds["prune.random"] >= 1 and kinds["prune.magnitude"] >= 1
