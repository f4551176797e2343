"""Flags of `run` and `search`: bad input gives one clear line and exit 2, before anything is written."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from modelshrink.cli import main

TINY = (
    "model: {embed_dim: 8, hidden: 8}\ndata: {vocab_size: 64, max_len: 16}\ntrain: {epochs: 1}\n"
    "variants: [{name: baseline, steps: []}]\n"
)


@pytest.fixture
def base_args(sweep: SimpleNamespace, tmp_path: Path) -> list[str]:
    (tmp_path / "c.yaml").write_text(TINY)
    csv = sweep.config(tmp_path)["data"]["path"]
    return ["--task", "csv", "--data", csv, "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--jobs", "0"], "--jobs must be at least 1, got 0"),
        (["run", "--seeds", "2", "--seed", "5"], "pass --seeds 2 (seeds 0..1) or --seed, not both"),
        (["run", "--resume"], "--resume needs --out pointing at an earlier run folder"),
        (["search", "--max-drop", "-1"], "--max-drop must be >= 0 percentage points"),
        (["search", "--max-drop", "1", "--budget-trials", "0"], "--budget-trials must be at least 1"),
        (["search", "--max-drop", "1", "--objective", "flops"], "unknown --objective 'flops'"),
    ],
)
def test_bad_flags(
    argv: list[str], message: str, base_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, *base_args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_seeds_and_export(base_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--seeds", "2", *base_args]) == 0
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(["export", str(out), "--format", "csv", "-o", "-"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("variant,seed,status") and [line.split(",")[1] for line in csv[1:]] == ["0", "1"]
    for fmt, name in (("json", "results.json"), ("md", "summary.md"), ("csv", "results.csv")):
        (out / name).unlink()
        assert main(["export", str(out), "--format", fmt]) == 0 and (out / name).is_file()
    summary = (out / "summary.md").read_text()
    assert "Test acc 95% CI" in summary and "| +0.00 |" not in summary  # baseline Δ is 0 with a ± over 2 seeds
    assert "| +0.00 ± 0.00 |" in summary
    assert main(["export", str(out), "--format", "xml"]) == 2
    assert "unknown --format 'xml'" in capsys.readouterr().err
    # --resume on the finished folder: nothing to redo.
    assert main(["run", "--seeds", "2", "--resume", *base_args]) == 0
    assert "already in the store" in capsys.readouterr().err
