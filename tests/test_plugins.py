"""Techniques and tasks from another installed package, through entry points (a tiny plugin package here)."""

import subprocess
import sys
from pathlib import Path

import modelshrink

PLUGIN = '''
from typing import Literal

from modelshrink.data.tasks import TASK_INPUT, TASKS
from modelshrink.data.synthetic import synthetic_text_task
from modelshrink.techniques import TechniqueConfig, TechniqueResult, register_technique


class IdentityConfig(TechniqueConfig):
    kind: Literal["plugin.identity"] = "plugin.identity"


@register_technique(IdentityConfig)
def identity(model, cfg, ctx):
    """A plugin technique that changes nothing."""
    return TechniqueResult(model)


@TASKS.register("plugin-texts")
def plugin_texts(cfg):
    """A plugin task: synthetic texts."""
    return synthetic_text_task(60)


TASK_INPUT["plugin-texts"] = "text"
'''
ENTRY_POINTS = """[modelshrink.techniques]
identity = msplugin

[modelshrink.tasks]
texts = msplugin
"""
CHECK = (
    "from modelshrink.techniques import get_technique; from modelshrink.data.tasks import TASKS, load_task;"
    "from modelshrink.data.tasks import DataConfig;"
    "print(get_technique('plugin.identity').kind, TASKS.get('plugin-texts').__name__,"
    " load_task(DataConfig(task='plugin-texts')).num_labels > 1)"
)


def _run(path: Path) -> subprocess.CompletedProcess[str]:
    src = Path(modelshrink.__file__).parent.parent
    return subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=180,
                          env={"PYTHONPATH": f"{src}:{path}", "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_plugin_package_registers_a_technique_and_a_task(tmp_path: Path) -> None:
    (tmp_path / "msplugin.py").write_text(PLUGIN)
    info = tmp_path / "msplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: msplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    out = _run(tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["plugin.identity", "plugin_texts", "True"]


def test_a_broken_plugin_is_named(tmp_path: Path) -> None:
    (tmp_path / "msplugin.py").write_text("raise RuntimeError('boom')\n")
    info = tmp_path / "msplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: msplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    out = _run(tmp_path)
    assert out.returncode != 0
    assert "plugin 'identity' (msplugin) in entry-point group 'modelshrink.techniques' failed to load" in out.stderr
