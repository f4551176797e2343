"""--weights: a user's trained state dict as the baseline, measured as given; its refusals."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from modelshrink.cli import main
from modelshrink.errors import ConfigError
from modelshrink.models.checkpoint import load_weights, read_state_dict

DOC = Path(__file__).resolve().parents[2] / "docs" / "byo.md"


def _doc_commands() -> list[list[str]]:
    """The `modelshrink ...` lines of docs/byo.md's --weights example, as argv lists."""
    section = DOC.read_text(encoding="utf-8").split("## Your trained weights", 1)[1]
    block = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    return [shlex.split(line)[1:] for line in block.strip().splitlines()]


def _rows(out: Path) -> dict[str, dict]:
    return {r["variant"]: r for r in json.loads((out / "results.json").read_text())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The doc example's first command, run in a fresh folder: (that folder, the trained baseline's row)."""
    cwd, here = tmp_path_factory.mktemp("doc"), Path.cwd()
    os.chdir(cwd)  # the example writes runs/... relative to the working directory
    try:
        assert main(_doc_commands()[0]) == 0
    finally:
        os.chdir(here)
    return cwd, _rows(cwd / "runs" / "first")["baseline"]


def test_doc_example_measures_the_weights_without_training(trained: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, first = trained
    monkeypatch.chdir(cwd)
    argv = [next(iter(glob.glob(a))) if "*" in a else a for a in _doc_commands()[1]]  # the shell's glob
    assert main(argv) == 0
    out = cwd / "runs" / "again"
    row = _rows(out)["baseline"]
    assert first["baseline_source"] == "trained" and len(first["baseline_history"]) == 2
    assert row["baseline_source"] == "measured" and row["baseline_history"] == []  # no epoch trained
    for split in ("train", "val", "test"):
        assert row[f"{split}_accuracy"] == pytest.approx(first[f"{split}_accuracy"], abs=1e-9)
    assert row["file_bytes"] == first["file_bytes"] and row["train_device"] == "cpu"
    record = json.loads((out / "run.json").read_text())
    assert len(record["model_sha256"]) == 64 and "weights" not in record["model"]  # content, not path
    assert not list(out.glob("baselines/*"))  # nothing trained, nothing cached

    # A changed checkpoint under the same path is another experiment: resuming into the folder is refused.
    weights = Path(argv[argv.index("--weights") + 1])
    state = read_state_dict(weights)
    name = next(iter(state))
    state[name] = state[name] + 1.0
    save_file(state, str(weights))  # the continue test below only needs weights that fit
    before = (out / "results.sqlite").read_bytes()
    assert main(argv) == 2
    assert (out / "results.sqlite").read_bytes() == before


def test_continue_trains_on_from_the_weights(trained: tuple, tmp_path: Path) -> None:
    cwd, _ = trained
    (weights,) = (cwd / "runs" / "first").glob("baselines/*/model.safetensors")
    cfg, out = tmp_path / "cfg.yaml", tmp_path / "cont"
    cfg.write_text(yaml.safe_dump({"train": {"from_weights": "continue", "epochs": 1}}))
    argv = ["train", "--task", "digits", "--preset", "digits", "--seed", "0", "--config", str(cfg),
            "--weights", str(weights), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    row = _rows(out)["baseline"]
    assert row["baseline_source"] == "continued" and len(row["baseline_history"]) == 1


class _Net(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


_BUILD = """
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.body(x)

def build(inputs):
    return Net()
"""


def _digits_state(tmp_path: Path) -> tuple[Path, _Net]:
    """A custom model trained on digits with a plain torch loop, its state_dict saved as .pt."""
    from modelshrink.data.tasks import DataConfig, load_task

    data = load_task(DataConfig(task="digits"))
    torch.manual_seed(0)
    net = _Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    return path, net


def test_pt_state_dict_of_a_custom_model_is_measured(tmp_path: Path) -> None:
    pt, net = _digits_state(tmp_path)
    build = tmp_path / "net.py"
    build.write_text(_BUILD)
    out = tmp_path / "run"
    argv = ["train", "--task", "digits", "--preset", "digits", "--seed", "0", "--model", f"{build}:build", "--weights", str(pt),
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    row = _rows(out)["baseline"]
    from modelshrink.data.tasks import DataConfig, load_task

    data = load_task(DataConfig(task="digits"))
    with torch.no_grad():
        expected = float((net.eval()(torch.from_numpy(data.x_test)).argmax(1).numpy() == data.y_test).mean())
    assert row["baseline_source"] == "measured" and expected > 0.4  # trained weights (chance: 0.1)
    assert row["test_accuracy"] == pytest.approx(expected, abs=0.01)  # the given weights, from the ONNX file


@pytest.mark.parametrize("case", ["missing", "extension", "pickled", "shapes", "keys", "not-a-dict"])
def test_bad_weights_one_line_exit_2_nothing_written(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build = tmp_path / "net.py"
    build.write_text(_BUILD)
    bad = tmp_path / "w.pt"
    expect = {"missing": "does not exist", "extension": "unknown extension '.bin'",
              "pickled": "save model.state_dict() instead", "shapes": "body.1.weight: file [32, 64] vs model [16, 64]",
              "keys": "missing body.3.weight", "not-a-dict": "not a state dict"}[case]  # fmt: skip
    if case == "missing":
        bad = tmp_path / "nope.pt"
    elif case == "extension":
        bad = tmp_path / "w.bin"
        bad.write_bytes(b"x")
    elif case == "pickled":
        torch.save(_Net(), bad)  # the whole model: weights_only refuses it
    elif case == "shapes":
        torch.save(_Net(width=32).state_dict(), bad)
    elif case == "keys":
        torch.save({k: v for k, v in _Net().state_dict().items() if not k.startswith("body.3")}, bad)
    else:
        torch.save([torch.zeros(2)], bad)
    out = tmp_path / "run"
    code = main(["train", "--task", "digits", "--preset", "digits", "--seed", "0", "--model", f"{build}:build", "--weights", str(bad),
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert expect in " ".join(err.split()) and len(err.strip().splitlines()) == 1


def test_load_weights_accepts_wrapped_and_ddp_state_dicts(tmp_path: Path) -> None:
    src = _Net()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = load_weights(_Net(), path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True))
    with pytest.raises(
        ConfigError, match="does not fit the model: missing 0.weight; .*and 6 more"
    ):  # a model with other keys: the first four named
        load_weights(nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 1), nn.Linear(1, 1)), path)


def test_config_hash_of_a_run_without_weights_is_unchanged() -> None:
    from modelshrink.config import RunConfig

    dumped = RunConfig().model_dump(mode="json")
    assert "weights" not in dumped["model"] and "device" not in dumped["train"]
    assert "from_weights" not in dumped["train"]


def test_later_seeds_reuse_the_given_models_row(tmp_path: Path) -> None:
    """Weights measured as given are the same files whatever the seed: seed 1's baseline row is seed 0's,
    saying so, and nothing is measured twice; a seed-dependent (trained) baseline is measured per seed."""
    pt, _ = _digits_state(tmp_path)
    build = tmp_path / "net.py"
    build.write_text(_BUILD)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump({"seeds": [0, 1], "train": {"epochs": 1}, "variants": [{"name": "baseline", "steps": []}]})
    )
    runs = {}
    for name, extra in (("given", ["--weights", str(pt)]), ("trained", [])):
        out = tmp_path / name
        assert main(["run", "--task", "digits", "--config", str(cfg), "--model", f"{build}:build", *extra,
                     "--out", str(out)]) == 0  # fmt: skip
        runs[name] = {r["seed"]: r for r in json.loads((out / "results.json").read_text())}
    given, trained = runs["given"], runs["trained"]
    assert given[0]["baseline_source"] == "measured" and "measured_in_seed" not in given[0]
    assert given[1]["measured_in_seed"] == 0
    per_row = {"seed", "key", "config", "wall_s", "measured_in_seed", "created", "created_at", "finished_at"}
    same = {k: v for k, v in given[1].items() if k not in per_row}
    assert same == {k: v for k, v in given[0].items() if k not in per_row} and "artifacts" in same
    assert not list((tmp_path / "given" / "models").glob("*seed1*"))  # seed 1 wrote no files of its own
    assert all("measured_in_seed" not in r for r in trained.values()) and trained[0]["baseline_source"] == "trained"
    assert trained[0]["test_accuracy"] != trained[1]["test_accuracy"] or trained[0]["baseline_history"] != (
        trained[1]["baseline_history"])  # two trainings, two seeds  # fmt: skip


def test_a_later_run_reuses_the_given_models_row_from_the_store(tmp_path: Path) -> None:
    """A benchmark run in parts: seed 1, asked for in a later process, takes seed 0's stored row of the given
    model instead of measuring the same files again; a changed variant definition would not match."""
    pt, _ = _digits_state(tmp_path)
    build = tmp_path / "net.py"
    build.write_text(_BUILD)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"epochs": 1}, "variants": [{"name": "baseline", "steps": []}]}))
    out = tmp_path / "given"
    common = ["run", "--task", "digits", "--config", str(cfg), "--model", f"{build}:build", "--weights", str(pt),
              "--out", str(out)]  # fmt: skip
    assert main([*common, "--seeds", "1"]) == 0  # seed 0 alone, then a new process for seeds 0-1
    assert main([*common, "--seeds", "2"]) == 0
    rows = {r["seed"]: r for r in json.loads((out / "results.json").read_text())}
    assert rows[1]["measured_in_seed"] == 0 and "measured_in_seed" not in rows[0]
    assert rows[1]["test_accuracy"] == rows[0]["test_accuracy"] and rows[1]["artifacts"] == rows[0]["artifacts"]
    assert not list((out / "models").glob("*seed1*"))  # nothing measured for seed 1


def test_given_weights_under_jobs_are_measured_once_in_the_driver(tmp_path: Path) -> None:
    # With --jobs the workers train and evaluate; a given model's row has nothing to train, so no model travels
    # back: the driver measures it for seed 0 and seed 1 reuses that row, as in one process.
    pt, _ = _digits_state(tmp_path)
    build = tmp_path / "net.py"
    build.write_text(_BUILD)
    cfg = tmp_path / "cfg.yaml"
    variants = [{"name": "baseline", "steps": []}, {"name": "int8", "steps": [{"kind": "quant.int8_dynamic"}]}]
    cfg.write_text(yaml.safe_dump({"seeds": [0, 1], "train": {"epochs": 1}, "variants": variants}))
    out = tmp_path / "o"
    assert main(["run", "--task", "digits", "--config", str(cfg), "--model", f"{build}:build", "--weights", str(pt),
                 "--jobs", "2", "--out", str(out)]) == 0  # fmt: skip
    rows = {(r["variant"], r["seed"]): r for r in json.loads((out / "results.json").read_text())}
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    assert rows[("baseline", 0)]["baseline_source"] == "measured" and rows[("baseline", 1)]["measured_in_seed"] == 0
    assert rows[("int8", 1)]["latency"] and "measured_in_seed" not in rows[("int8", 1)]
