"""`import modelshrink` and `modelshrink --help` stay light and never start CUDA."""

import subprocess
import sys


def test_import_and_help_do_not_start_cuda() -> None:
    code = (
        "import sys, modelshrink, modelshrink.techniques, modelshrink.cli as c\n"
        "import torch\n"
        "assert not torch.cuda.is_initialized()\n"
        "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert not torch.cuda.is_initialized()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_help_does_not_import_torch() -> None:
    code = "import sys, modelshrink.cli as c\nc.main(['--help'])\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
