"""Checked-in results must come from the configuration they describe.

The README's tables are made from results files under benchmarks/results/ (written by
`benchmarks/seed_comparison.py --save FILE --readme README.md`). Each file records the hash of the
resolved config that made it (`config_hash`); when a preset changes (a new training recipe, another
variant), its file no longer matches and these tests fail until the figures are measured again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from modelshrink.config import config_hash, parse_config, read_preset

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- results: (?P<file>\S+) -->\n(?P<body>.*?)\n<!-- /results -->", flags=re.S)
REMEDY = "measure again: MODELSHRINK_DATA=path/to/emotions.csv python benchmarks/seed_comparison.py --preset {preset} --save {file} --readme README.md"  # fmt: skip


def problems(path: Path) -> list[str]:
    """Why the results file at `path` does not describe its preset as it is today (empty: it does)."""
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    preset = record.get("preset")
    if not isinstance(preset, str):
        return [f"{path.name}: no 'preset' recorded"]
    cfg = parse_config(read_preset(preset))
    if record.get("config_hash") == config_hash(cfg):
        return []
    now = cfg.model_dump(mode="json", exclude={"data": {"path"}})
    old = record.get("config") or {}
    changed = sorted(k for k in set(now) | set(old) if now.get(k) != old.get(k)) or ["(config not recorded)"]
    return [
        f"{path.name} was made by config {record.get('config_hash')}, but preset {preset!r} is now "
        f"{config_hash(cfg)} (changed: {', '.join(changed)}); "
        + REMEDY.format(preset=preset, file=path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path)
    ]


def readme_blocks() -> list[re.Match[str]]:
    return list(BLOCK.finditer(README.read_text(encoding="utf-8")))


def test_readme_tables_come_from_results_files() -> None:
    blocks = readme_blocks()
    assert blocks, "README.md has no <!-- results: FILE --> block: its measured table must be made from a results file"
    for block in blocks:
        path = ROOT / block["file"]
        assert path.is_file(), f"README.md's table names {block['file']}, which does not exist; " + REMEDY.format(
            preset="seed", file=block["file"]
        )
        record = json.loads(path.read_text(encoding="utf-8"))
        table = [line for line in block["body"].splitlines() if line.startswith("|")]
        assert table == record["readme_table"], f"README.md's table differs from {block['file']}; " + REMEDY.format(
            preset=record["preset"], file=block["file"]
        )


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.json")), ids=lambda p: p.name)
def test_results_file_matches_its_preset(path: Path) -> None:
    assert problems(path) == []


def test_a_results_file_from_another_config_is_caught(tmp_path: Path) -> None:
    cfg = parse_config(read_preset("seed"))
    dump = cfg.model_dump(mode="json", exclude={"data": {"path"}})
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"preset": "seed", "config_hash": config_hash(cfg), "config": dump}))
    assert problems(good) == []
    # The same preset with another training recipe (patience 3): caught, and the changed section named.
    other = parse_config({**dump, "train": {**dump["train"], "patience": 3}})
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "preset": "seed",
                "config_hash": config_hash(other),
                "config": other.model_dump(mode="json", exclude={"data": {"path"}}),
            }
        )
    )
    (found,) = problems(bad)
    assert "changed: train" in found and "seed_comparison.py --preset seed" in found
