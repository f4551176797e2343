"""The disk fills during an export (every write into one row's folder raises ENOSPC after writing half its bytes,
as a real full disk does): that row fails with the reason, the store and the other rows stay intact, no
half-written file stays in the model folder, and a rerun after space is freed completes only that row."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from modelshrink.config import parse_config
from modelshrink.runner.run import Runner

FULL = {"pruned-seed0": "metrics.json"}  # folder → the write that fills the disk (after the ONNX files)


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Writes into a FULL folder whose name contains its marker write half, then raise ENOSPC; returns them."""
    hits: list[str] = []
    real_bytes, real_text = Path.write_bytes, Path.write_text

    def full(path: Path) -> bool:
        return any(path.parent.name == d and m in path.name for d, m in FULL.items())

    def write_bytes(self: Path, data: bytes) -> int:
        if full(self):
            hits.append(self.name)
            real_bytes(self, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_bytes(self, data)

    def write_text(self: Path, text: str, *args: object, **kwargs: object) -> int:
        if full(self):
            return write_bytes(self, text.encode())
        return real_text(self, text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(Path, "write_text", write_text)
    return hits


def test_disk_full_during_export_then_resume(
    sweep: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variants = [v for v in sweep.VARIANTS if v["name"] in ("baseline", "pruned")]
    cfg = parse_config(sweep.config(tmp_path, rows=80, variants=variants, seeds=(0,)))
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        hits = _disk_full(m)
        rows = {r["variant"]: r for r in Runner(cfg, out, log=lambda _m: None).run()}
    assert hits, "the fake full disk was never written to"
    assert {v: r["status"] for v, r in rows.items()} == {"baseline": "ok", "pruned": "failed"}
    assert "No space left on device" in rows["pruned"]["error"], rows["pruned"]["error"]
    db = sqlite3.connect(out / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    folder = out / "models" / "pruned-seed0"
    names = sorted(p.name for p in folder.iterdir())
    assert "metrics.json" not in names and not [n for n in names if n.endswith(".tmp")], names  # no half file
    for p in folder.glob("*.json"):
        json.loads(p.read_text())  # what is there is whole

    again = {r["variant"]: r for r in Runner(cfg, out, log=lambda _m: None).run()}  # space freed: rerun
    assert {v: r["status"] for v, r in again.items()} == {"baseline": "ok", "pruned": "ok"}
    assert again["baseline"]["wall_s"] == rows["baseline"]["wall_s"]  # the finished row was not redone
    assert json.loads((folder / "metrics.json").read_text()) and (folder / "weights.msz").is_file()


def test_disk_full_while_writing_the_compact_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """save_model on a full disk: OSError(ENOSPC) out, and neither the file nor its temporary stays."""
    import torch

    from modelshrink.export.compact import save_model
    from modelshrink.models.builders import ModelConfig, build_model

    monkeypatch.setitem(FULL, "m", ".weights.msz.")
    hits = _disk_full(monkeypatch)
    cfg = ModelConfig(embed_dim=4, hidden=4)
    (tmp_path / "m").mkdir()
    with pytest.raises(OSError, match="No space left on device"):
        save_model(build_model(cfg, 16, 2), tmp_path / "m" / "weights.msz", cfg.model_dump(mode="json"), 16,
                   ["a", "b"], {"kind": "text"}, example_input=torch.zeros(1, 4, dtype=torch.long))  # fmt: skip
    assert hits and list((tmp_path / "m").iterdir()) == []
