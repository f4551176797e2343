"""The unrolled LSTM (for int8 ExecuTorch export) computes what nn.LSTM computes, on our text models too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelshrink.errors import IncompatibleModelError
from modelshrink.models import LSTMClassifier, RNNClassifier
from modelshrink.models.lstm_unrolled import UnrolledLSTM, unroll_lstms


@pytest.mark.parametrize(
    ("layers", "bidirectional", "batch_first"), [(1, False, True), (1, True, True), (2, True, False), (2, False, True)]
)
def test_unrolled_equals_nn_lstm(layers: int, bidirectional: bool, batch_first: bool) -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, layers, batch_first=batch_first, bidirectional=bidirectional).eval()
    unrolled = UnrolledLSTM.of(lstm).eval()
    assert unrolled.state_dict().keys() == lstm.state_dict().keys()  # same weights, no extra state
    x = torch.randn(3, 9, 5) if batch_first else torch.randn(9, 3, 5)
    with torch.no_grad():
        want_out, (want_h, want_c) = lstm(x)
        got_out, (got_h, got_c) = unrolled(x)
    for got, want in ((got_out, want_out), (got_h, want_h), (got_c, want_c)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "model", [LSTMClassifier(50, 4, 8, 8), RNNClassifier(50, 4, "lstm", 8, 8, bidirectional=True)],
    ids=["lstm", "bilstm"],
)  # fmt: skip
def test_unrolled_text_models_give_the_same_logits(model: nn.Module) -> None:
    torch.manual_seed(1)
    model.eval()
    x = torch.randint(1, 50, (6, 12))
    x[:3, :5] = 0  # pre-padded rows, as the tokenizer writes them
    copy, names = unroll_lstms(model)
    assert names == [next(n for n, m in model.named_modules() if isinstance(m, nn.LSTM))]
    assert type(getattr(model, names[0])) is nn.LSTM  # the original model is left as it was
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x), rtol=1e-5, atol=1e-6)


def test_unrolled_refuses_what_it_does_not_compute() -> None:
    with pytest.raises(IncompatibleModelError, match="proj_size=2"):
        UnrolledLSTM.of(nn.LSTM(4, 6, proj_size=2))
    with pytest.raises(IncompatibleModelError, match="hx"):
        UnrolledLSTM.of(nn.LSTM(4, 6))(torch.randn(2, 3, 4), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6)))
