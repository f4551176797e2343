"""BatchNorm folding: same outputs, frozen BatchNorm, and a clustered Conv+BN keeps its 16 values in the ONNX file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml
from onnx import numpy_helper
from torch import nn

from modelshrink.cli import main
from modelshrink.techniques._fold import fold_batchnorm

_BUILD = """
from torch import nn

class ConvBN(nn.Module):
    def __init__(self, labels):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 64, labels)

    def forward(self, x):
        return self.fc(nn.functional.relu(self.bn(self.conv(x))).flatten(1))

def build(inputs):
    return ConvBN(inputs.num_labels)
"""


def _trained_stats(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, as after training."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            with torch.no_grad():
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    return model.eval()


def test_fold_keeps_outputs_and_freezes_the_batchnorm() -> None:
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5),
                        nn.BatchNorm1d(5))  # fmt: skip
    model = _trained_stats(seq)
    x = torch.randn(6, 1, 8, 8)
    before = model(x)
    folded = fold_batchnorm(model)
    assert [(f.layer, f.batchnorm) for f in folded] == [("0", "1"), ("4", "5")]
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
    model.train()  # fine-tuning: the folded BatchNorms stay in eval mode, their scale is not trained
    assert not model[1].training and not model[1].weight.requires_grad
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-5)
    rebuilt = nn.Sequential(*[copy.deepcopy(m) for m in seq])  # same state-dict keys: a variant rebuilds
    assert set(rebuilt.state_dict()) == set(model.state_dict())


def test_a_batchnorm_read_by_something_else_is_left_alone() -> None:
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y  # the conv's output is read twice: folding would change the sum

    model = _trained_stats(Branch())
    assert fold_batchnorm(model) == []


def test_clustered_conv_bn_keeps_16_values_in_its_onnx_file(tmp_path: Path) -> None:
    build = tmp_path / "convbn.py"
    build.write_text(_BUILD)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"epochs": 2}, "variants": [
        {"name": "clustered", "steps": [{"kind": "cluster.kmeans", "clusters": 16, "epochs": 1}]}]}))  # fmt: skip
    out = tmp_path / "run"
    argv = ["run", "--task", "digits", "--preset", "digits", "--seed", "0", "--model", f"{build}:build",
            "--config", str(cfg), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    row = json.loads((out / "results.json").read_text())[0]
    assert row["status"] == "ok" and row["checks_failed"] == 0, row["checks"]
    graph = onnx.load(str(out / row["artifacts"]["onnx"])).graph
    convs = [numpy_helper.to_array(i) for i in graph.initializer if numpy_helper.to_array(i).ndim == 4]
    assert len(convs) == 1 and np.unique(convs[0]).size <= 16  # the export's fold scaled nothing
