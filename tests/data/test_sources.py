"""Where the emotion data comes from: --data, $MODELSHRINK_DATA, the cache, the Hub (faked here)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from modelshrink.data.tasks import cache_dir, resolve_emotion_csv


def test_order_flag_env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSHRINK_DATA", str(tmp_path / "env.csv"))
    assert resolve_emotion_csv(str(tmp_path / "flag.csv")) == (tmp_path / "flag.csv", "--data")
    assert resolve_emotion_csv(None) == (tmp_path / "env.csv", "$MODELSHRINK_DATA")
    monkeypatch.delenv("MODELSHRINK_DATA")
    cached = cache_dir() / "emotion.csv"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text("text,label\nhi,joy\n")
    assert resolve_emotion_csv(None) == (cached, "cache")


class _FakeSplit:
    def __init__(self, rows: list[tuple[str, int]]) -> None:
        self.rows = rows
        self.features = {"label": types.SimpleNamespace(names=["sadness", "joy"])}

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["text", "label"])


def test_hub_download_is_written_to_the_cache_as_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELSHRINK_DATA", raising=False)
    calls: list[str] = []

    def load_dataset(name: str) -> dict[str, _FakeSplit]:
        calls.append(name)
        return {"train": _FakeSplit([("a sad day", 0)]), "validation": _FakeSplit([("so happy", 1)]),
                "test": _FakeSplit([("glad", 1)])}  # fmt: skip

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    path, how = resolve_emotion_csv(None)
    assert calls == ["dair-ai/emotion"] and "Hub" in how
    assert path == cache_dir() / "emotion.csv"
    df = pd.read_csv(path)
    assert df.to_dict("list") == {"text": ["a sad day", "so happy", "glad"], "label": ["sadness", "joy", "joy"]}
    # Next time the cache answers, without the Hub.
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert resolve_emotion_csv(None) == (path, "cache")
