"""How modelshrink is installed and started: `python -m`, the ray extra, the recorded environment."""

import subprocess
import sys
from pathlib import Path

import pytest

import modelshrink
from modelshrink.cli import main
from modelshrink.errors import ConfigError
from modelshrink.runner import folder
from modelshrink.runner.executors import make_executor


def test_python_dash_m_runs_the_cli() -> None:
    src = Path(modelshrink.__file__).parent.parent
    out = subprocess.run([sys.executable, "-m", "modelshrink", "list"], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "prune.magnitude" in out.stdout


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'modelshrink\[ray\]'"):
        make_executor("ray", 1, "local")


def test_environment_holds_own_version_and_sha_only_from_own_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    env = folder.environment()
    assert env["modelshrink"] == modelshrink.__version__ and env["torch"]
    package = Path(folder.__file__).resolve().parent.parent
    if (package.parent.parent / ".git").exists():  # this checkout: its commit is recorded
        assert len(env["git_sha"]) >= 7
    monkeypatch.setattr(folder, "__file__", "/nonexistent/site-packages/modelshrink/runner/folder.py")
    assert "git_sha" not in folder.environment()  # an installed copy: no SHA, not some other repository's


def test_csv_without_the_default_columns_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.csv").write_text("a,b\nx,y\n")
    assert main(["run", "--task", "csv", "--data", str(tmp_path / "c.csv"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.endswith("--label-column\n") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
