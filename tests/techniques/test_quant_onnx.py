"""The ONNX Runtime quantization techniques: they set the export format and leave the model alone."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from modelshrink.errors import ConfigError
from modelshrink.models.lstm import LSTMClassifier
from modelshrink.techniques import RunContext, get_technique

FORMATS = {"quant.fp16": "fp16", "quant.int8_dynamic": "int8_dynamic", "quant.int8_static": "int8_static"}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_sets_export_format_and_leaves_model_unchanged(kind: str) -> None:
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=200, num_labels=4, embed_dim=16, hidden=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(1, 200, (2, 5))
    ctx = RunContext(example_input=x, calibration=[x])
    tech = get_technique(kind)
    assert tech.summary  # shown by `modelshrink list`
    cfg = tech.config_cls()
    assert type(cfg).model_validate_json(cfg.model_dump_json()) == cfg
    result = tech.apply(model, cfg, ctx)
    assert result.export_format == FORMATS[kind]
    assert result.model is model
    assert all(torch.equal(before[k], v) for k, v in result.model.state_dict().items())
    assert "ONNX Runtime" in result.details["note"]


def test_static_needs_calibration() -> None:
    tech = get_technique("quant.int8_static")
    ctx = RunContext(example_input=torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="calibration"):
        tech.apply(LSTMClassifier(20, 2, 4, 4), tech.config_cls(), ctx)


def test_static_config_validates() -> None:
    cfg_cls = get_technique("quant.int8_static").config_cls
    with pytest.raises(ValidationError):
        cfg_cls(calibration_batches=0)
    with pytest.raises(ValidationError):
        cfg_cls(calibraton_batches=4)  # misspelt key


def test_static_int8_lists_the_lstm_it_cannot_quantize() -> None:
    import torch

    from modelshrink.models import LSTMClassifier
    from modelshrink.techniques import RunContext, get_technique

    tech = get_technique("quant.int8_static")
    x = torch.ones(2, 5, dtype=torch.long)
    result = tech.apply(LSTMClassifier(20, 3, 4, 4), tech.config_cls(), RunContext(example_input=x, calibration=[x]))
    assert [(s.name, s.type) for s in result.skipped] == [("lstm", "LSTM")]
