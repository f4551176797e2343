"""prune.transformer on a small BERT trained on a text CSV: parameters, file bytes, accuracy, latency.

No pretrained model is downloaded: a small BERT (4 layers, hidden 128, 4 heads, FFN 512) is saved
as a Hugging Face folder with a WordPiece tokenizer trained on the CSV's text (all rows, labels
unused: the vocabulary sees test text, which flatters baseline and pruned variants alike), then
`modelshrink run --model hf:FOLDER` trains it as the baseline and prunes heads and FFN neurons at a
few operating points, each fine-tuned. Prints the summary table and one JSON line.

    MODELSHRINK_DATA=path/to/emotions.csv PYTHONPATH=src .venv/bin/python benchmarks/prune_transformer.py \
        [--subsample 4000] [--epochs 4] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

CONFIG = """seeds: [0]
train: {{epochs: {epochs}, batch_size: 32, lr: 0.0005}}
variants:
  - {{name: baseline, steps: []}}
  - name: heads-ffn
    steps: [{{kind: prune.transformer, head_sparsity: [0.25, 0.5, 0.75], ffn_sparsity: 0.5, epochs: {tune}}}]
"""


def small_bert_folder(dest: Path, texts: list[str]) -> Path:
    """A randomly initialised encoder-only BERT (no head: the run adds one and trains the baseline)
    with a WordPiece tokenizer trained on `texts`."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=4000, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=512, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(dest)
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(dest)  # fmt: skip
    return dest


def main() -> None:
    from modelshrink.cli import main as cli

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("MODELSHRINK_DATA"), help="a text,label CSV")
    parser.add_argument("--subsample", type=int, default=4000, help="rows used (0: all)")
    parser.add_argument("--epochs", type=int, default=4, help="baseline training epochs (at most)")
    parser.add_argument("--tune", type=int, default=2, help="fine-tuning epochs after each cut")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if args.data is None or not Path(args.data).is_file():
        parser.error("usage: --data path/to/emotions.csv (or set MODELSHRINK_DATA)")
    out = args.out or Path(tempfile.mkdtemp(prefix="modelshrink-bench-"))
    with open(args.data, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    folder = small_bert_folder(out / "bert", [r["text"] for r in rows])
    (out / "c.yaml").write_text(CONFIG.format(epochs=args.epochs, tune=args.tune))
    argv = ["run", "--task", "text-csv", "--data", str(args.data), "--model", f"hf:{folder}",
            "--config", str(out / "c.yaml"), "--out", str(out / "run")]  # fmt: skip
    if args.subsample:
        argv += ["--subsample", str(args.subsample)]
    t0 = time.perf_counter()
    code = cli(argv)
    wall = time.perf_counter() - t0
    results = json.loads((out / "run" / "results.json").read_text())
    for r in results if isinstance(results, list) else []:
        step = (r.get("steps") or [{}])[0].get("details", {})
        print(json.dumps({"variant": r["variant"], "status": r["status"], "parameters": r.get("parameters"),
                          "onnx_fp32_bytes": r.get("onnx_fp32_bytes"), "test_accuracy": r.get("test_accuracy"),
                          "latency_ms_p50": r.get("latency_ms_p50"), "heads": step.get("heads_per_layer"),
                          "ffn": step.get("ffn_per_layer")}))  # fmt: skip
    print(json.dumps({"benchmark": "prune_transformer", "exit": code, "wall_s": round(wall, 1), "out": str(out)}))


if __name__ == "__main__":
    main()
