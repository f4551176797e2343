"""Baseline accuracy and training speed of the reference LSTM on the emotion data.

Prints one JSON line: test and validation accuracy per seed and their means (issue 19: >= 0.914
test over seeds 0-2), epochs and seconds per training epoch. The recipe is the `seed` preset's
`train` section (--preset), with --train KEY=VALUE on top, e.g. `--train monitor=val_accuracy
--train lr_decay=0.5`; `--preset none` starts from TrainConfig's defaults (the thesis's recipe).

    MODELSHRINK_DATA=path/to/emotions.csv .venv/bin/python benchmarks/baseline.py [--seeds 0 1 2] [--train K=V ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import yaml

from modelshrink.config import read_preset
from modelshrink.data import DataConfig, TaskData, load_task
from modelshrink.models import ModelConfig, build_model
from modelshrink.train import OnEpoch, TrainConfig, evaluate, fit, set_seed


def _train_config(preset: str, pairs: list[str], epochs: int | None) -> TrainConfig:
    raw = {} if preset == "none" else dict(read_preset(preset).get("train") or {})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"--train {pair!r}: expected KEY=VALUE, e.g. --train monitor=val_accuracy")
        raw[key] = yaml.safe_load(value)
    if epochs is not None:
        raw["epochs"] = epochs
    return TrainConfig.model_validate(raw)


TRACE = ("val_loss", "val_accuracy", "test_accuracy", "lr")


def _test_accuracy(data: TaskData) -> OnEpoch:
    """Adds each epoch's test accuracy to the history (read afterwards only: nothing is chosen on it), so
    one long run shows what every stopping rule on the same trajectory would have reported."""

    def record(model: torch.nn.Module, entry: dict[str, float]) -> None:
        entry["test_accuracy"] = evaluate(model, data.x_test, data.y_test, data.num_labels)["accuracy"]

    return record


def _mean_sd(values: list[float]) -> list[float]:
    return [round(statistics.fmean(values), 4), round(statistics.stdev(values), 4) if len(values) > 1 else 0.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="emotions.csv (default: $MODELSHRINK_DATA, cache, Hub)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="most epochs (default: the recipe's)")
    parser.add_argument("--preset", default="seed", help="whose `train` section is the recipe; none: the defaults")
    parser.add_argument("--trace", action="store_true", help="per epoch: val loss and accuracy, test accuracy")
    parser.add_argument("--train", action="append", default=[], metavar="KEY=VALUE", help="a TrainConfig setting")
    args = parser.parse_args()

    train_cfg = _train_config(args.preset, args.train, args.epochs)
    data = load_task(DataConfig(path=args.data))
    runs = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        set_seed(seed)
        model = build_model(ModelConfig(), data.input_dim, data.num_labels)
        t_seed = time.perf_counter()
        history = fit(model, data, train_cfg, seed, on_epoch=_test_accuracy(data) if args.trace else None)
        seconds = time.perf_counter() - t_seed
        test = evaluate(model, data.x_test, data.y_test, data.num_labels)
        val = evaluate(model, data.x_val, data.y_val, data.num_labels)
        runs.append({"seed": seed, "test_accuracy": round(test["accuracy"], 4), "val_accuracy": round(val["accuracy"], 4),
                     "test_macro_f1": round(test["macro_f1"], 4), "epochs": len(history), "train_s": round(seconds, 1),
                     "seconds_per_epoch": round(statistics.fmean(h["seconds"] for h in history), 3),
                     **({"trace": [{k: round(h[k], 4) for k in TRACE} for h in history]} if args.trace else {})})  # fmt: skip
    print(json.dumps({
        "benchmark": "baseline",
        "train": train_cfg.model_dump(mode="json"),
        "test_accuracy_mean_sd": _mean_sd([r["test_accuracy"] for r in runs]),
        "val_accuracy_mean_sd": _mean_sd([r["val_accuracy"] for r in runs]),
        "epochs_mean": round(statistics.fmean(r["epochs"] for r in runs), 1),
        "seconds_per_epoch_mean": round(statistics.fmean(r["seconds_per_epoch"] for r in runs), 3),
        "wall_s": round(time.perf_counter() - t0, 1),
        "runs": runs,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
