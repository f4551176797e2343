"""What hard movement scores pick on MiniLM, from the fine-tuned or the pretrained model (prune.movement's `start`).

prune.movement ranks weights by -sum_t dL/dW * W over fine-tuning steps (Sanh et al. 2020) and prunes the lowest.
This script trains `--steps` steps of the transformer recipe (AdamW, lr 5e-5, batch 32, length-bucketed, trimmed)
from `--model-folder` (a fine-tuned folder as it is; a pretrained one with a new head, seeded) with prune.movement's
own pruner accumulating scores and pruning nothing, then applies masks to the encoder matrices as they are then and
measures validation accuracy with no recovery, at 7 % (the cubic schedule's first update here) and 50 %: the weights
movement prunes (lowest scores), the highest scores instead, magnitude's, a random choice. Also: how the weights
movement prunes compare in size with their matrix, and how much of magnitude's half movement keeps.

    MODELSHRINK_DATA=path/to/emotions.csv python benchmarks/movement_start.py --model-folder runs/minilm/finetuned
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelshrink.config import parse_config, read_yaml
from modelshrink.data.tasks import load_task
from modelshrink.measure.accuracy import trimmed
from modelshrink.models.builders import build_model, fresh_head, pretrained, text_encoder
from modelshrink.techniques._targets import prunable_weights
from modelshrink.techniques.prune_movement import MovementPruneConfig, _MovementPruner, _not_encoder
from modelshrink.train import evaluate, train_batches

HERE = Path(__file__).resolve().parent


def kept(s: torch.Tensor, frac: float) -> torch.Tensor:
    """All but the lowest `frac` of one matrix's scores."""
    return s > s.flatten().kthvalue(max(1, int(s.numel() * frac))).values


def accumulate(
    model: torch.nn.Module, targets: list[Any], data: Any, train: Any, steps: int
) -> tuple[Any, float, float]:
    """`steps` steps of the transformer recipe with prune.movement's pruner scoring (pruning nothing):
    (the pruner, the last loss, seconds)."""
    pruner = _MovementPruner(targets, MovementPruneConfig(final_sparsity=0.5))  # scores only: no mask is applied
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    model.train()
    t0, loss = time.perf_counter(), torch.tensor(0.0)
    for step, rows in enumerate(train_batches(data.x_train, train.batch_size, np.random.default_rng(0))):
        if step == steps:
            break
        x = torch.from_numpy(trimmed(data.x_train, rows))  # the batch trimmed to its longest row, as training does
        loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(data.y_train[rows]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    pruner.close()
    return pruner, loss.item(), time.perf_counter() - t0


def masked_accuracy(model: torch.nn.Module, targets: list[Any], data: Any, scores: dict[str, Any], rows: int) -> Any:
    """Validation accuracy with each score's masks applied to the weights as they are now (no recovery)."""
    before = {t.qualified_name: t.weight.detach().clone() for t in targets}
    model.eval()
    accuracy: dict[str, dict[str, float]] = {}
    for frac in (0.0, 0.07, 0.5):
        for name, per in scores.items():
            with torch.no_grad():
                for t in targets:
                    mask = kept(per[t.qualified_name], frac) if frac else 1.0
                    t.weight.copy_(before[t.qualified_name] * mask)
            acc = evaluate(model, data.x_val[:rows], data.y_val[:rows], data.num_labels)["accuracy"]
            accuracy.setdefault(f"{frac:.0%} pruned", {})[name] = round(acc, 4)
            if not frac:
                break  # nothing pruned: one figure
    with torch.no_grad():
        for t in targets:
            t.weight.copy_(before[t.qualified_name])
    return accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-folder", type=Path, required=True, help="a fine-tuned or a pretrained hf folder")
    p.add_argument("--steps", type=int, default=70, help="fine-tuning steps that accumulate scores")
    p.add_argument("--val-rows", type=int, default=1000, help="validation rows for the accuracies")
    args = p.parse_args()
    raw = read_yaml(HERE / "transformer.yaml")
    raw["model"] = {**raw["model"], "path": str(args.model_folder)}
    raw["variants"] = raw["variants"][:1]
    cfg = parse_config(raw, "transformer.yaml")
    data = load_task(cfg.data, text_encoder(cfg.model))
    model = build_model(cfg.model, data.input_dim, data.num_labels)
    fine_tuned = pretrained(cfg.model, data.labels)
    if not fine_tuned:  # the pretrained folder: a new head, as prune.movement's start: pretrained makes it
        torch.manual_seed(0)
        fresh_head(model, data.labels)
    targets, _ = prunable_weights(model, exclude=_not_encoder(model, data.num_labels))
    pruner, last_loss, train_s = accumulate(model, targets, data, cfg.train, args.steps)
    weights = {t.qualified_name: t.weight.detach() for t in targets}  # where the first mask would fall
    rng = torch.Generator().manual_seed(0)
    scores = {
        "movement (lowest go)": {n: pruner.movement[n] for n in weights},
        "movement, highest go instead": {n: -pruner.movement[n] for n in weights},
        "magnitude": {n: w.abs() for n, w in weights.items()},
        "random": {n: torch.rand(w.shape, generator=rng) for n, w in weights.items()},
    }
    overlap = [float((kept(w.abs(), 0.5) & kept(pruner.movement[n], 0.5)).sum() / kept(w.abs(), 0.5).sum())
               for n, w in weights.items()]  # fmt: skip
    size = [float(w.abs()[~kept(pruner.movement[n], 0.07)].mean() / w.abs().mean()) for n, w in weights.items()]
    accuracy = masked_accuracy(model, targets, data, scores, args.val_rows)
    print(json.dumps({
        "model": str(args.model_folder), "start": "fine-tuned" if fine_tuned else "pretrained, new head",
        "steps": args.steps, "train_s": round(train_s, 1), "last_loss": round(last_loss, 4), "matrices": len(weights),
        "movement_keeps_of_magnitudes_half": round(float(np.mean(overlap)), 4),  # 0.5: unrelated to size
        "mean_abs_w_of_movements_lowest_7pct_over_matrix_mean": round(float(np.median(size)), 3),
        "val_accuracy_no_recovery": accuracy, "val_rows": min(args.val_rows, len(data.x_val)),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
