"""The hostile-input corpus (cases.py): exit 2, one line naming the value and the remedy, no traceback,
nothing written. test_reliability_doc.py checks that docs/reliability.md lists these cases and their messages."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from modelshrink.cli import main

from .cases import _LOCKS, CASES, KNOWN_HOLES, RUN, SLOW_HOLES, Case  # noqa: TID252 - a package of tests
from .reliability_doc import MESSAGES  # noqa: TID252


@pytest.fixture(scope="module")
def store_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An earlier run's results.sqlite, with one row: every case must leave it as it was."""
    from modelshrink.store import ResultStore

    path = tmp_path_factory.mktemp("store") / "results.sqlite"
    with ResultStore(path) as store:
        store.put("k" * 16, "baseline", 0, "ok", {"variant": {"name": "baseline"}}, {"test_accuracy": 0.5})
    return path.read_bytes()


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (links not followed) → its content hash, link target or 'dir'."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _param(c: Case) -> object:
    marks = [pytest.mark.xfail(reason=KNOWN_HOLES[c.id], strict=True)] if c.id in KNOWN_HOLES else []
    return pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, store_bytes: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    if case.id in SLOW_HOLES:
        MESSAGES[case.id] = f"(not run: {SLOW_HOLES[case.id]})"
        pytest.skip(SLOW_HOLES[case.id])
    (tmp_path / RUN).mkdir()
    (tmp_path / RUN / "results.sqlite").write_bytes(store_bytes)
    argv = case.make(tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main(argv)
    except BaseException as err:  # an uncaught error is a hole too: recorded for the doc, then failed
        MESSAGES[case.id] = f"(uncaught {type(err).__name__}: {str(err)[:120]})".replace(str(tmp_path), "…")
        raise
    finally:
        while _LOCKS:
            os.close(_LOCKS.pop())
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    MESSAGES[case.id] = re.sub(re.escape(str(tmp_path)), "…", " / ".join(lines)).removeprefix("error: ")
    assert code == 2, f"exit {code}: {out + err}"
    assert "Traceback" not in out + err
    assert len(lines) == 1, lines
    assert case.value in lines[0] and case.remedy in lines[0], lines[0]
    assert snapshot(tmp_path) == before, "the case wrote or changed files"


def test_corpus_size() -> None:
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
