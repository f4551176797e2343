"""SIGKILL a running sweep mid-variant, resume it: the same table as an uninterrupted run,
no row lost or duplicated, and an intact database."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import modelshrink
from modelshrink.cli import main
from modelshrink.store import ResultStore

CONFIG = """
model: {embed_dim: 8, hidden: 8}
data: {vocab_size: 64, max_len: 16}
train: {epochs: 1}
variants:
  - {name: baseline, steps: []}
  - {name: pruned, steps: [{kind: prune.magnitude, schedule: constant, final_sparsity: 0.5, epochs: 2}]}
  - {name: pruned-int8, steps: [{kind: prune.magnitude, schedule: constant, final_sparsity: 0.5, epochs: 2},
                                {kind: quant.int8_dynamic}]}
  - {name: clustered, steps: [{kind: cluster.kmeans, clusters: 4, epochs: 2}]}
"""


def _count(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_sigkill_mid_variant_then_resume(sweep: SimpleNamespace, tmp_path: Path) -> None:
    from modelshrink.data.synthetic import write_synthetic_csv

    csv = write_synthetic_csv(tmp_path / "d.csv", 200)
    (tmp_path / "c.yaml").write_text(CONFIG)
    args = ["run", "--task", "csv", "--data", str(csv), "--config", str(tmp_path / "c.yaml"), "--seeds", "2"]
    killed, whole = tmp_path / "killed", tmp_path / "whole"

    src = str(Path(modelshrink.__file__).parents[1])  # this checkout's code, also in the child
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    code = f"import sys; from modelshrink.cli import main; sys.exit(main({[*args, '--out', str(killed)]!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = killed / "results.sqlite"
    try:
        deadline = time.monotonic() + 240
        while _count(db) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # Rows are committed as each finishes, so the next variant is now running: kill it.
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    before = _count(db)
    assert 3 <= before < 8

    assert main([*args, "--out", str(killed), "--resume"]) == 0
    assert main([*args, "--out", str(whole)]) == 0
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with ResultStore(db) as store:
        resumed = store.rows()
    with ResultStore(whole / "results.sqlite") as store:
        uninterrupted = store.rows()
    assert len(resumed) == len(uninterrupted) == 8  # nothing lost, nothing duplicated
    assert sweep.table(resumed) == sweep.table(uninterrupted)

    # The summary tables agree too, but for measured times: the main table's last column (latency),
    # the latency section, and the per-runtime ship table (its "fastest" pick is a measured time).
    def cells(path: Path) -> list[str]:
        text = path.read_text().split("## Latency and memory")[0]
        out, timed = [], False
        for line in text.splitlines():
            if line.startswith("## "):
                timed = line.startswith("## What should I ship? (per runtime)")
            elif line.startswith("| ") and not timed:
                out.append(line.rsplit("|", 2)[0])
        return out

    assert cells(killed / "summary.md") == cells(whole / "summary.md")
