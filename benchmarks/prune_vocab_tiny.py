"""prune.transformer vocab_keep on the tests' tiny BERT: parameters and ONNX bytes before and after.

The tiny BERT of the test suite (data.synthetic.tiny_hf_folder: 2 layers, hidden 32, a 116-id WordPiece
vocabulary) on a 90-row synthetic CSV; each variant cut with L2 importance and no fine-tuning (the
figures are sizes, not accuracy). Prints one line per variant.

    PYTHONPATH=src .venv/bin/python benchmarks/prune_vocab_tiny.py
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch

from modelshrink.data.synthetic import tiny_hf_folder, write_synthetic_csv
from modelshrink.data.tasks import DataConfig, load_task
from modelshrink.export.onnx import export_onnx
from modelshrink.models.builders import ModelConfig, build_model, text_encoder
from modelshrink.techniques import RunContext, get_technique
from modelshrink.techniques.prune_transformer import TransformerPruneConfig

VARIANTS: list[dict[str, Any]] = [
    {"vocab_keep": "used", "head_sparsity": 0.0, "ffn_sparsity": 0.0},
    {"vocab_keep": "used", "head_sparsity": 0.5, "ffn_sparsity": 0.5},
    {"head_sparsity": 0.5, "ffn_sparsity": 0.5},
]


def main() -> None:
    root = Path(tempfile.mkdtemp())
    cfg = ModelConfig(name="hf", path=str(tiny_hf_folder(root / "clf", ["joy", "anger", "fear"])))
    data = load_task(DataConfig(task="csv", path=str(write_synthetic_csv(root / "d.csv", n=90))), text_encoder(cfg))
    base = build_model(cfg, data.input_dim, data.num_labels).eval()
    x = torch.from_numpy(data.x_test[:2])
    ctx = RunContext(example_input=x, model_config=cfg, input_dim=data.input_dim, num_labels=data.num_labels,
                     train_inputs=lambda: data.x_train, preprocessing=data.preprocessing)  # fmt: skip

    def line(name: str, model: torch.nn.Module, extra: object = "") -> None:
        params = sum(p.numel() for p in model.parameters())
        size = export_onnx(model, x, root / f"{name}.onnx").stat().st_size
        print(f"{name:28s} parameters {params:7,d}  ONNX {size:9,d} B  {extra or ''}")

    line("baseline", base)
    for fields in VARIANTS:
        tcfg = TransformerPruneConfig(importance="l2", epochs=0, **fields)
        res = get_technique("prune.transformer").apply(copy.deepcopy(base), tcfg, ctx)
        line(tcfg.search_label(), res.model, res.details.get("vocabulary_rows"))


if __name__ == "__main__":
    main()
