from pathlib import Path

import torch

from modelshrink.config import parse_config
from modelshrink.data.synthetic import write_synthetic_csv
from modelshrink.export.compact import load_compact
from modelshrink.runner.run import Runner


def _config(tmp_path: Path, variants: list[dict]) -> dict:
    csv = write_synthetic_csv(tmp_path / "d.csv", 150)
    return {"data": {"task": "csv", "path": str(csv), "vocab_size": 64, "max_len": 16},
            "model": {"embed_dim": 8, "hidden": 8}, "train": {"epochs": 1}, "seeds": [0], "variants": variants}  # fmt: skip


PRUNE = {"kind": "prune.magnitude", "schedule": "constant", "final_sparsity": 0.5, "epochs": 1}


def test_pipelines_share_their_common_prefix(tmp_path: Path) -> None:
    cfg = parse_config(_config(tmp_path, [
        {"name": "pruned", "steps": [PRUNE]},
        {"name": "pruned-int8", "steps": [PRUNE, {"kind": "quant.int8_dynamic"}]},
    ]))  # fmt: skip
    rows = {r["variant"]: r for r in Runner(cfg, tmp_path / "o", log=lambda m: None).run()}
    assert rows["pruned"]["status"] == rows["pruned-int8"]["status"] == "ok"
    # The prune step ran once: the int8 variant reuses the very same pruned model.
    assert rows["pruned-int8"]["steps"][0] == rows["pruned"]["steps"][0]
    assert rows["pruned-int8"]["nonzeros"] == rows["pruned"]["nonzeros"]
    assert rows["pruned-int8"]["export_format"] == "int8_dynamic" and rows["pruned"]["export_format"] == "fp32"


def test_start_scratch_trains_from_fresh_weights(tmp_path: Path) -> None:
    cfg = parse_config(_config(tmp_path, [
        {"name": "pruned", "steps": [PRUNE]},
        {"name": "pruned-scratch", "start": "scratch", "steps": [PRUNE]},
    ]))  # fmt: skip
    rows = {r["variant"]: r for r in Runner(cfg, tmp_path / "o", log=lambda m: None).run()}
    assert rows["pruned-scratch"]["status"] == "ok"
    assert rows["pruned-scratch"]["steps"][0]["details"]["overall_sparsity"] == 0.5
    # Fresh starting weights: a different model from the one fine-tuned from the baseline.
    a, _ = load_compact(tmp_path / "o" / rows["pruned"]["artifacts"]["compact"])
    b, _ = load_compact(tmp_path / "o" / rows["pruned-scratch"]["artifacts"]["compact"])
    assert not torch.equal(a["fc.weight"], b["fc.weight"])


def test_failed_variant_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    cfg = parse_config(_config(tmp_path, [
        {"name": "too-many-clusters", "steps": [{"kind": "cluster.kmeans", "clusters": 100000, "epochs": 0}]},
        {"name": "baseline", "steps": []},
    ]))  # fmt: skip
    rows = {r["variant"]: r for r in Runner(cfg, tmp_path / "o", log=lambda m: None).run()}
    assert rows["too-many-clusters"]["status"] == "failed"
    assert "clusters=100000" in rows["too-many-clusters"]["error"]
    assert rows["baseline"]["status"] == "ok"
