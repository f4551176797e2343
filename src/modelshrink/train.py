"""Training: the baseline's recipe (Adam, batch 32, early stopping) and the fine-tunes techniques ask for.

Read top to bottom: seeding, batching, one epoch, evaluation, `fit` (baseline), `fine_tune`.
"""

from __future__ import annotations

import copy
import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress, TaskID
from torch import nn

from modelshrink.data.tasks import TaskData
from modelshrink.device import DeviceName, autocast, resolve_device
from modelshrink.measure.accuracy import classification_metrics, predict_logits, sequence_lengths, trimmed

OnStep = Callable[[int], None]  # called after each optimizer step with the step count
OnEpoch = Callable[[nn.Module, dict[str, float]], None]  # after each epoch of `fit`: the model, its history entry
# A training loss in place of the default (cross-entropy + the model's regularization):
# (model, inputs, labels) -> scalar, or a `RowsLoss` that also reads which training rows the batch holds.
PlainLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RowsLoss:
    """A training loss that is also told the batch's row indices into the training split:
    `fn(model, inputs, labels, rows)`. Distillation looks the teacher's cached logits up by row."""

    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]


LossFn = PlainLoss | RowsLoss


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(50, ge=1, description="most epochs; early stopping usually ends sooner")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate")
    patience: int = Field(5, ge=1, description="epochs without a better `monitor` value before stopping")
    threads: int = Field(2, ge=1, description="torch CPU threads; fixed so timings compare")
    # Added after run folders existed: left out of dumps at their defaults, so older configs keep their hashes.
    device: DeviceName = Field(
        "cpu", exclude_if=lambda v: v == "cpu", description="where training runs: auto | cpu | cuda | mps"
    )
    from_weights: Literal["measure", "continue"] = Field(
        "measure", exclude_if=lambda v: v == "measure",
        description="with the user's weights (--weights): measure them as they are, or continue training them",
    )  # fmt: skip
    # The baseline's recipe beyond the thesis's (issue 19): each off at its default, so old hashes stay.
    monitor: Literal["val_loss", "val_accuracy"] = Field(
        "val_loss", exclude_if=lambda v: v == "val_loss",
        description="what early stopping watches and the best weights are restored by",
    )  # fmt: skip
    lr_decay: float | None = Field(
        None, gt=0.0, lt=1.0, exclude_if=lambda v: v is None,
        description="multiply the learning rate by this when `monitor` stalls for lr_decay_patience epochs",
    )  # fmt: skip
    lr_decay_patience: int = Field(
        2, ge=1, exclude_if=lambda v: v == 2, description="decay after this many epochs without a better `monitor`"
    )
    embed_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, exclude_if=lambda v: v == 0.0,
        description="spatial dropout on the model's `embedding` output in training: whole channels per sentence",
    )  # fmt: skip
    weight_decay: float = Field(
        0.0, ge=0.0, exclude_if=lambda v: v == 0.0, description="decoupled weight decay (AdamW) when above 0"
    )
    flush_denormal: bool = Field(
        False, exclude_if=lambda v: v is False,
        description="treat denormal floats as zero while training on the CPU (as TensorFlow does by default): "
        "the reference LSTM's epochs took 1.6 s instead of 2.1 s; numbers may differ in the last digits",
    )  # fmt: skip


def set_seed(seed: int) -> None:
    """One seed controls weight init, dropout and batch order (same seed → same numbers here)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_batches(x: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled row indices in batches. Token rows are bucketed by length first.

    Bucketing: shuffle, cut into chunks of 50 batches, sort each chunk by sequence length, cut
    into batches, shuffle the batch order. Batches then hold sentences of similar length, so
    `trimmed` drops most padding: an epoch of the reference LSTM takes ~2 s instead of ~5 s.
    """
    order = rng.permutation(len(x))
    if x.ndim == 2 and np.issubdtype(x.dtype, np.integer):
        lengths = sequence_lengths(x)
        chunk = batch_size * 50
        order = np.concatenate(
            [c[np.argsort(lengths[c], kind="stable")] for c in np.array_split(order, max(1, len(x) // chunk))]
        )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for b in rng.permutation(len(batches)):
        yield batches[b]


def _loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return with_regularization(model, nn.functional.cross_entropy(model(xb), yb))


def with_regularization(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """`loss` plus the model's own regularization term, if it has one (the LSTM's L2)."""
    reg = getattr(model, "regularization_loss", None)
    return loss + reg() if callable(reg) else loss


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def torch_predictor(model: nn.Module) -> Any:
    device = model_device(model)

    def predict(xb: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(xb).to(device)).float().cpu().numpy()

    return predict


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, num_labels: int) -> dict[str, Any]:
    """Accuracy, macro-F1, confusion matrix and mean loss of a torch model on one split."""
    model.eval()
    logits = predict_logits(torch_predictor(model), x)
    metrics = classification_metrics(y, logits, num_labels)
    metrics["loss"] = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)))
    return metrics


def _spatial_dropout(p: float) -> Callable[[nn.Module, Any, torch.Tensor], torch.Tensor]:
    """A forward hook: in training, zero whole embedding channels of each sentence (Keras' SpatialDropout1D).

    The mask has shape (batch, 1, channels): one channel is dropped at every position of a sentence
    at once, so the LSTM cannot recover it from its neighbours as it could with per-element dropout.
    """

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not module.training or output.dim() != 3:
            return output
        keep = torch.empty(output.shape[0], 1, output.shape[2], device=output.device, dtype=output.dtype)
        return output * keep.bernoulli_(1.0 - p).div_(1.0 - p)

    return hook


class _Best:
    """Early stopping's bookkeeping: the best value of `cfg.monitor` so far, its weights, epochs since."""

    def __init__(self, model: nn.Module, cfg: TrainConfig) -> None:
        self.model, self.cfg = model, cfg
        self.sign = 1.0 if cfg.monitor == "val_loss" else -1.0  # compare as "lower is better"
        self.value, self.state, self.waited = float("inf"), copy.deepcopy(model.state_dict()), 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; True when training should stop (patience used up)."""
        if self.sign * value < self.value - 1e-4:
            self.value, self.state, self.waited = self.sign * value, copy.deepcopy(self.model.state_dict()), 0
        else:
            self.waited += 1
        return self.waited >= self.cfg.patience


# The most torch threads training may use in this process (None: `TrainConfig.threads`). A `--jobs N`
# worker caps it at its share of the cores: 2 workers training with 2 threads each on 2 cores ran 3.5x
# slower than with 1 each (OpenMP threads spinning against each other; measured 2026-12-01).
_THREAD_CAP: int | None = None


def cap_threads(n: int | None) -> None:
    """Train with at most `n` torch threads in this process, whatever `TrainConfig.threads` says."""
    global _THREAD_CAP
    _THREAD_CAP = n


def training_threads(cfg: TrainConfig) -> int:
    """The torch threads training uses here: the config's, capped in a worker process (cap_threads)."""
    return min(cfg.threads, _THREAD_CAP) if _THREAD_CAP else cfg.threads


@dataclass
class _Loop:
    """One optimizer over a model; runs epochs and counts steps (for pruning schedules)."""

    model: nn.Module
    data: TaskData
    cfg: TrainConfig
    rng: np.random.Generator
    params: Sequence[nn.Parameter] | None = None
    loss_fn: LossFn | None = None  # None: cross-entropy + the model's regularization
    step: int = 0

    def __post_init__(self) -> None:
        torch.set_num_threads(training_threads(self.cfg))
        self.device = resolve_device(self.cfg.device)
        self.model.to(self.device)  # parameters keep their identity: `params` below stay valid
        params = list(self.params) if self.params is not None else list(self.model.parameters())
        # fused: one kernel for all parameters; same update as the loop version, ~30% faster
        # epochs on 2 CPU cores for the reference LSTM (measured 2.1 s vs 3.0 s).
        if self.cfg.weight_decay > 0:  # AdamW: decay decoupled from the gradient (Loshchilov & Hutter)
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=True
            )
        else:
            self.optimizer = torch.optim.Adam(params, lr=self.cfg.lr, fused=True)
        self._hooks = [m.register_forward_hook(_spatial_dropout(self.cfg.embed_dropout))
                       for m in self.model.modules() if isinstance(m, nn.Embedding) and self.cfg.embed_dropout > 0]  # fmt: skip
        # Denormals (tiny floats the CPU computes slowly, in microcode) appear as the LSTM trains; flushed
        # to zero during training only, so the files are measured as a user's runtime runs them.
        self._flush = self.cfg.flush_denormal and self.device.type == "cpu" and torch.set_flush_denormal(True)

    def close(self) -> None:
        """Remove the training-only hooks (embedding dropout) and settings: the trained model is a plain model again."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self._flush:
            torch.set_flush_denormal(False)  # torch's default; measuring (torch latency) runs as a user's process does
            self._flush = False

    def epoch(self, on_step: OnStep | None, progress: Progress | None, task: TaskID | None) -> float:
        self.model.train()
        total, count = 0.0, 0
        x, y = self.data.x_train, self.data.y_train
        for rows in train_batches(x, self.cfg.batch_size, self.rng):
            xb = torch.from_numpy(trimmed(x, rows)).to(self.device)
            yb = torch.from_numpy(y[rows]).to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device):  # bf16 on a CUDA GPU, nothing on the CPU
                if isinstance(self.loss_fn, RowsLoss):
                    loss = self.loss_fn.fn(self.model, xb, yb, rows)
                else:
                    loss = (self.loss_fn or _loss)(self.model, xb, yb)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            if on_step is not None:
                on_step(self.step)
            total += float(loss.detach()) * len(rows)
            count += len(rows)
            if progress is not None and task is not None:
                progress.advance(task)
        return total / max(count, 1)


def fit(
    model: nn.Module,
    data: TaskData,
    cfg: TrainConfig,
    seed: int,
    progress: Progress | None = None,
    label: str = "baseline",
    loss_fn: LossFn | None = None,
    on_epoch: OnEpoch | None = None,
) -> list[dict[str, float]]:
    """Train with early stopping on `cfg.monitor` (validation loss or accuracy), restore the best
    weights by it, return the history. With `cfg.lr_decay`, the learning rate decays when it stalls.

    `loss_fn` replaces the training loss (e.g. distillation); early stopping still watches
    the plain cross-entropy (or accuracy) on the validation split. `on_epoch(model, entry)` runs
    after each epoch's validation and may add figures to its history entry (benchmarks/baseline.py).
    """
    set_seed(seed)
    home = model_device(model)  # the model goes back there (the CPU, for export) when training ends
    loop = _Loop(model, data, cfg, np.random.default_rng(seed), loss_fn=loss_fn)
    steps = -(-len(data.x_train) // cfg.batch_size)
    task = progress.add_task(f"{label}: epoch 1/{cfg.epochs}", total=steps * cfg.epochs) if progress else None
    best = _Best(model, cfg)
    decay = (
        None if cfg.lr_decay is None else torch.optim.lr_scheduler.ReduceLROnPlateau(
            loop.optimizer, mode="min" if cfg.monitor == "val_loss" else "max", factor=cfg.lr_decay,
            patience=cfg.lr_decay_patience - 1)  # torch's patience: stalled epochs tolerated, not counted
    )  # fmt: skip
    history: list[dict[str, float]] = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss = loop.epoch(None, progress, task)
        seconds = time.perf_counter() - t0
        val = evaluate(model, data.x_val, data.y_val, data.num_labels)
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"],
             "val_accuracy": val["accuracy"], "seconds": seconds, "lr": loop.optimizer.param_groups[0]["lr"]}
        )  # fmt: skip
        if on_epoch is not None:
            on_epoch(model, history[-1])
        if progress is not None and task is not None:
            line = (f"{label}: epoch {epoch}/{cfg.epochs} loss {train_loss:.3f} val_loss {val['loss']:.3f} "
                    f"val_acc {val['accuracy']:.3f}")  # fmt: skip
            progress.update(task, description=line)
            if not progress.console.is_terminal:  # a log file gets no live bar: one line per epoch instead
                progress.console.print(line, markup=False, highlight=False)
        watched = val["loss"] if cfg.monitor == "val_loss" else val["accuracy"]
        if decay is not None:
            decay.step(watched)
        if best.update(watched):
            break
    loop.close()
    if progress is not None and task is not None:
        progress.update(task, completed=steps * cfg.epochs)  # early stop: the bar ends full
    model.load_state_dict(best.state)
    model.to(home).eval()
    return history


def fine_tune(
    model: nn.Module,
    data: TaskData,
    cfg: TrainConfig,
    seed: int,
    epochs: int,
    on_step: OnStep | None = None,
    params: Sequence[nn.Parameter] | None = None,
    progress: Progress | None = None,
    label: str = "fine-tune",
    loss_fn: LossFn | None = None,
) -> list[dict[str, float]]:
    """Train `epochs` epochs with a fresh Adam (the baseline's recipe), no early stopping; return the history.
    `loss_fn` replaces the cross-entropy (a distilled student fine-tuned on its teacher's loss).

    No early stopping or best-weight restore: a pruning schedule or centroid training must end
    in the state its last step made.
    """
    set_seed(seed)
    home = model_device(model)  # the model goes back there when training ends
    loop = _Loop(model, data, cfg, np.random.default_rng(seed), params, loss_fn)
    steps = -(-len(data.x_train) // cfg.batch_size)
    task = progress.add_task(f"{label}: {epochs} epochs", total=steps * epochs) if progress else None
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        history.append({"epoch": epoch, "train_loss": loop.epoch(on_step, progress, task),
                        "seconds": time.perf_counter() - t0})  # fmt: skip
        if progress is not None and not progress.console.is_terminal:  # a log file: one line per epoch
            progress.console.print(f"{label}: epoch {epoch}/{epochs} loss {history[-1]['train_loss']:.3f} "
                                   f"({history[-1]['seconds']:.0f} s)", markup=False, highlight=False)  # fmt: skip
    loop.close()
    model.to(home).eval()
    return history
