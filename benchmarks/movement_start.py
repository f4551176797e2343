"""Movement scores on a model already fine-tuned: which 50 % mask do they pick (prune.movement's `start`)?

prune.movement ranks weights by -sum_t dL/dW * W over fine-tuning steps (Sanh et al. 2020). The paper prunes
pretrained BERT while fine-tuning it; this script measures what the same scores choose when fine-tuning starts
from a model that is already fine-tuned (the default `start: incoming` on a fine-tuned teacher). It trains
`--steps` steps of the transformer recipe (AdamW, lr 5e-5, batch 32, length-bucketed, trimmed) with
prune.movement's own pruner accumulating scores and no pruning, then compares, per encoder matrix, the 50 %
it would keep with the 50 % largest weights, and the validation accuracy of the weights as they were with each
mask applied and no recovery: the movement mask, magnitude's, a random one.

    MODELSHRINK_DATA=path/to/emotions.csv python benchmarks/movement_start.py --model-folder runs/minilm/finetuned
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from modelshrink.config import parse_config, read_yaml
from modelshrink.data.tasks import load_task
from modelshrink.models.builders import build_model, text_encoder
from modelshrink.techniques._targets import prunable_weights
from modelshrink.techniques.prune_movement import MovementPruneConfig, _MovementPruner, _not_encoder
from modelshrink.train import evaluate, train_batches

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model-folder", type=Path, required=True, help="a fine-tuned hf folder (its head: the data's labels)"
    )
    p.add_argument("--steps", type=int, default=70, help="fine-tuning steps that accumulate scores")
    p.add_argument("--val-rows", type=int, default=1000, help="validation rows for the accuracies")
    args = p.parse_args()
    raw = read_yaml(HERE / "transformer.yaml")
    raw["model"] = {**raw["model"], "path": str(args.model_folder)}
    raw["variants"] = raw["variants"][:1]
    cfg = parse_config(raw, "transformer.yaml")
    data = load_task(cfg.data, text_encoder(cfg.model))
    model = build_model(cfg.model, data.input_dim, data.num_labels)
    targets, _ = prunable_weights(model, exclude=_not_encoder(model, data.num_labels))
    before = {t.qualified_name: t.weight.detach().clone() for t in targets}
    pruner = _MovementPruner(targets, MovementPruneConfig(final_sparsity=0.5))  # scores only: no mask is applied
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    model.train()
    t0, loss = time.perf_counter(), torch.tensor(0.0)
    for step, rows in enumerate(train_batches(data.x_train, cfg.train.batch_size, np.random.default_rng(0))):
        if step == args.steps:
            break
        x = data.x_train[rows]
        x = x[:, int((x != 0).any(0).argmax()) :]  # pre-padded rows trimmed to their longest
        loss = torch.nn.functional.cross_entropy(model(torch.as_tensor(x)), torch.as_tensor(data.y_train[rows]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    pruner.close()
    train_s = time.perf_counter() - t0
    rng = torch.Generator().manual_seed(0)
    scores = {
        "movement": {n: pruner.movement[n] for n in before},
        "magnitude": {n: w.abs() for n, w in before.items()},
        "random": {n: torch.rand(w.shape, generator=rng) for n, w in before.items()},
    }

    def kept(s: torch.Tensor) -> torch.Tensor:  # the top half of one matrix
        return s >= s.flatten().kthvalue(s.numel() - s.numel() // 2).values

    model.eval()
    accuracy = {}
    for name, per in scores.items():
        with torch.no_grad():
            for t in targets:
                t.weight.copy_(before[t.qualified_name] * kept(per[t.qualified_name]))
        n = args.val_rows
        accuracy[name] = round(evaluate(model, data.x_val[:n], data.y_val[:n], data.num_labels)["accuracy"], 4)
    overlap, largest_cut = [], []
    for n, w in before.items():
        mag, mov = kept(w.abs()), kept(pruner.movement[n])
        overlap.append(float((mag & mov).sum() / mag.sum()))
        top = w.abs() >= w.abs().flatten().kthvalue(w.numel() - w.numel() // 10).values  # the largest 10 %
        largest_cut.append(float((top & ~mov).sum() / top.sum()))
    print(json.dumps({
        "model": str(args.model_folder), "steps": args.steps, "train_s": round(train_s, 1),
        "last_loss": round(loss.item(), 4), "matrices": len(before),
        "movement_keeps_of_magnitudes_half": round(float(np.mean(overlap)), 4),  # 0.5: unrelated to size
        "largest_10pct_cut_by_movement": round(float(np.mean(largest_cut)), 4),
        "val_accuracy_with_50pct_mask_no_recovery": accuracy, "val_rows": min(args.val_rows, len(data.x_val)),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
