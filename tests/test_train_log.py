"""Training into a log file (no terminal): one line per epoch, so a long baseline shows it is alive."""

import io

from rich.console import Console
from rich.progress import Progress

from modelshrink.data.synthetic import synthetic_text_task
from modelshrink.models import LSTMClassifier
from modelshrink.train import TrainConfig, fine_tune, fit


def test_one_line_per_epoch_without_a_terminal() -> None:
    data = synthetic_text_task(80)
    model = LSTMClassifier(data.input_dim, data.num_labels, embed_dim=4, hidden=4)
    log = io.StringIO()
    with Progress(console=Console(file=log, force_terminal=False, width=200)) as progress:
        history = fit(model, data, TrainConfig(epochs=3, patience=5), 0, progress, "baseline seed 0")
        written = log.getvalue()  # while training: before the progress display prints its last state
    lines = [ln for ln in written.splitlines() if ln.startswith("baseline seed 0: epoch")]
    assert [ln.split()[4] for ln in lines] == [f"{e}/3" for e in range(1, len(history) + 1)]


def test_fine_tuning_says_each_epoch_too() -> None:
    """A pruning or fine-tuning step of a big model is many minutes per epoch: a log file hears of each."""
    data = synthetic_text_task(80)
    model = LSTMClassifier(data.input_dim, data.num_labels, embed_dim=4, hidden=4)
    log = io.StringIO()
    with Progress(console=Console(file=log, force_terminal=False, width=200)) as progress:
        fine_tune(model, data, TrainConfig(), 0, epochs=2, progress=progress, label="pruned seed 0")
        written = log.getvalue()
    lines = [ln for ln in written.splitlines() if ln.startswith("pruned seed 0: epoch")]
    assert [ln.split()[4] for ln in lines] == ["1/2", "2/2"] and all(" loss " in ln for ln in lines)
