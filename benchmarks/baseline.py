"""Baseline accuracy and training speed of the reference LSTM on the emotion data.

Prints one JSON line: test accuracy per seed and its mean (issue: ≥ 0.900 over 3 seeds),
and seconds per training epoch (issue: ≤ 3 s on 2 cores).

    MODELSHRINK_DATA=path/to/emotions.csv .venv/bin/python benchmarks/baseline.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from modelshrink.data import DataConfig, load_task
from modelshrink.models import ModelConfig, build_model
from modelshrink.train import TrainConfig, evaluate, fit, set_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="emotions.csv (default: $MODELSHRINK_DATA, cache, Hub)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()

    data = load_task(DataConfig(path=args.data))
    train_cfg = TrainConfig(epochs=args.epochs)
    runs = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        set_seed(seed)
        model = build_model(ModelConfig(), data.input_dim, data.num_labels)
        history = fit(model, data, train_cfg, seed)
        test = evaluate(model, data.x_test, data.y_test, data.num_labels)
        runs.append({"seed": seed, "test_accuracy": round(test["accuracy"], 4), "test_macro_f1": round(test["macro_f1"], 4),
                     "epochs": len(history), "seconds_per_epoch": round(statistics.fmean(h["seconds"] for h in history), 3)})  # fmt: skip
    accs = [r["test_accuracy"] for r in runs]
    print(json.dumps({
        "benchmark": "baseline",
        "test_accuracy_mean": round(statistics.fmean(accs), 4),
        "test_accuracy_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
        "seconds_per_epoch_mean": round(statistics.fmean(r["seconds_per_epoch"] for r in runs), 3),
        "threads": train_cfg.threads,
        "wall_s": round(time.perf_counter() - t0, 1),
        "runs": runs,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
