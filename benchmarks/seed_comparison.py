"""The whole `seed` preset (the thesis's comparison, done right): prints its table and wall time.

Issue target: ≤ 10 minutes on 2 cores.

    MODELSHRINK_DATA=path/to/emotions.csv .venv/bin/python benchmarks/seed_comparison.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from modelshrink.config import parse_config, read_preset
from modelshrink.report.tables import summary_markdown, write_exports
from modelshrink.runner.run import Runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--preset", default="seed")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="modelshrink-bench-"))

    t0 = time.perf_counter()
    rows = Runner(parse_config(read_preset(args.preset)), out, log=lambda msg: None).run()
    wall = time.perf_counter() - t0
    write_exports(rows, out)
    print(summary_markdown(rows, title=f"preset {args.preset!r}").split("\n## Columns")[0])
    print(json.dumps({"benchmark": "seed_comparison", "preset": args.preset, "wall_s": round(wall, 1),
                      "rows": len(rows), "failed": sum(r["status"] != "ok" for r in rows), "out": str(out)}))  # fmt: skip


if __name__ == "__main__":
    main()
