"""The reference model: the thesis's LSTM emotion classifier, in PyTorch."""

from __future__ import annotations

import torch
from torch import nn


class LSTMClassifier(nn.Module):
    """Embedding(vocab, embed_dim) → LSTM(hidden) → Dropout → Linear(num_labels).

    Input: (B, T) int64 token ids, pre-padded with 0. Output: (B, num_labels) logits
    (the softmax lives in the loss, as usual in PyTorch).
    """

    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        embed_dim: int = 32,
        hidden: int = 64,
        dropout: float = 0.5,
        l2_input: float = 1e-3,
        embed_rank: int | None = None,
        fc_rank: int | None = None,
        vocab_keep: int | None = None,
    ) -> None:
        super().__init__()
        # Vocabulary pruning (prune.structured): keep the `vocab_keep` most frequent ids (the
        # tokenizer numbers words by frequency; 0 pad, 1 OOV) and read the rest as OOV, here in
        # forward, so the exported ONNX file maps them itself.
        self.vocab_keep = vocab_keep
        rows = min(vocab_size, vocab_keep) if vocab_keep else vocab_size
        # embed_rank/fc_rank: the layer factored in two (what `lowrank` makes), so a low-rank
        # model rebuilds from its config: Embedding(vocab, r) → Linear(r, embed_dim, no bias).
        self.embedding: nn.Module = (
            nn.Embedding(rows, embed_dim, padding_idx=0) if embed_rank is None
            else nn.Sequential(nn.Embedding(rows, embed_rank, padding_idx=0),
                               nn.Linear(embed_rank, embed_dim, bias=False))
        )  # fmt: skip
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc: nn.Module = (
            nn.Linear(hidden, num_labels) if fc_rank is None
            else nn.Sequential(nn.Linear(hidden, fc_rank, bias=False), nn.Linear(fc_rank, num_labels))
        )  # fmt: skip
        self.l2_input = l2_input  # Keras `kernel_regularizer=l2(0.001)` on the LSTM's input kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.vocab_keep is not None:
            x = x.masked_fill(x >= self.vocab_keep, 1)  # rare words (pruned rows) → OOV id 1
        h = self.embedding(x)  # (B, T, E)
        _, (h_n, _) = self.lstm(h)  # h_n: (1, B, H), the state after the last token
        return self.fc(self.dropout(h_n[-1]))  # (B, labels)

    def regularization_loss(self) -> torch.Tensor:
        # Keras adds l2 * sum(w**2) to the mean batch loss; same here.
        weight = self.lstm.weight_ih_l0  # (4*hidden, embed_dim), the input kernel
        if not isinstance(weight, torch.Tensor):  # internal invariant: nn.LSTM registers it as a Parameter
            raise TypeError("LSTM weight_ih_l0 is not a tensor")
        return self.l2_input * weight.pow(2).sum()
