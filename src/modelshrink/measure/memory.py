"""Peak resident memory of running one artifact, each in a fresh Python process.

In one long process, the high-water mark of resident memory only ever grows, so it cannot tell
one artifact from the next; a fresh subprocess per artifact can. The child records the
peak after importing its runtime (`runtime_rss_mb`) and after loading the artifact and
running one batch (`peak_rss_mb`); the model's own share is the difference. It also times its
cold start: import of the runtime + load of the file + the first prediction (batch 1), each part
apart (`import_s`, `load_s`, `first_run_s`), from the child's first line (interpreter start-up,
~20 ms, is not in it). The child
runs code from this module, never from the artifact (ONNX and compact files hold data).
It costs about a second per artifact (mostly importing the runtime).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelshrink.errors import ArtifactError

RUNTIMES = ("onnxruntime", "modelshrink.runtime", "torch", "executorch")

# Runs in the child; argv: kind path shape dtype. On Linux the peak is VmHWM from /proc: the
# rusage high-water mark survives exec, so it would report the (larger) parent's peak.
# Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
_CHILD = r"""
import time
t0 = time.perf_counter()
import json, resource, sys
kind, path, shape, dtype = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")], sys.argv[4]
def rss():
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 2 if sys.platform == "darwin" else 1024)
import numpy as np
one = np.zeros([1, *shape[1:]], dtype=dtype)
if kind == "onnxruntime":
    import onnxruntime as ort
    t1, base = time.perf_counter(), rss()
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    t2 = time.perf_counter()
    run = lambda x: sess.run(None, {name: x})
elif kind == "modelshrink.runtime":
    from modelshrink.runtime import session as _session  # numpy, zstandard, onnxruntime; never torch
    t1, base = time.perf_counter(), rss()
    sess = _session.load(path, threads=1)
    t2 = time.perf_counter()
    run = sess.run
elif kind == "executorch":  # a .pte program: its input shape is fixed, `shape` is it
    import torch
    from executorch.runtime import Runtime
    import executorch.kernels.quantized  # registers the quantized kernels an int8 program calls (embedding_byte)
    t1, base = time.perf_counter(), rss()
    method = Runtime.get().load_program(path).load_method("forward")
    t2 = time.perf_counter()
    run = lambda x: method.execute([torch.from_numpy(x)])
else:
    import torch
    torch.set_num_threads(1)
    from modelshrink.export.compact import load_model
    t1, base = time.perf_counter(), rss()
    model, _ = load_model(path)
    t2 = time.perf_counter()
    def run(x):
        with torch.no_grad():
            return model(torch.from_numpy(x))
run(one)
t3 = time.perf_counter()
run(np.zeros(shape, dtype=dtype))
print(json.dumps({"runtime_rss_mb": base, "peak_rss_mb": rss(), "import_s": t1 - t0, "load_s": t2 - t1,
                  "first_run_s": t3 - t2, "cold_start_s": t3 - t0, "torch_imported": "torch" in sys.modules}))
"""


def peak_rss_mb(runtime: str, path: Path, input_shape: tuple[int, ...], input_dtype: str) -> dict[str, Any]:
    """Peak RSS (MiB) of a fresh process that loads `path` in `runtime` and runs one input.

    `runtime` is "onnxruntime" (an .onnx file), "modelshrink.runtime" (a compact file in the torch-free
    runtime), "torch" (a compact file, via load_model) or "executorch" (a .pte program).
    The input is zeros of `input_shape` and `input_dtype` (padding ids for a text model).
    Returns runtime_rss_mb, peak_rss_mb, model_rss_mb (their difference), cold_start_s and its
    parts import_s, load_s, first_run_s, and torch_imported.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", _CHILD, runtime, str(path), ",".join(map(str, input_shape)), input_dtype]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=True)
        res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, json.JSONDecodeError, IndexError) as err:
        # The child's last stderr line says what went wrong; the command line itself is noise.
        lines = (getattr(err, "stderr", "") or "").strip().splitlines()
        why = lines[-1] if lines else f"{type(err).__name__}: {err}"
        raise ArtifactError(f"memory measurement of {path} in {runtime} failed: {why}") from err
    res["model_rss_mb"] = res["peak_rss_mb"] - res["runtime_rss_mb"]
    return res
