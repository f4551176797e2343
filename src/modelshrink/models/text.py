"""Text classifiers beyond the reference LSTM: GRU, bidirectional LSTM, 1-D CNN, a tiny transformer.

All take (B, T) int64 token ids, pre-padded with 0, and return (B, num_labels) logits.
"""

from __future__ import annotations

import torch
from torch import nn


class RNNClassifier(nn.Module):
    """Embedding → GRU or (bi)LSTM → Dropout → Linear. The last state (both directions) feeds the head."""

    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        cell: str = "gru",
        embed_dim: int = 32,
        hidden: int = 64,
        dropout: float = 0.5,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        rnn_cls = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.rnn = rnn_cls(embed_dim, hidden, batch_first=True, bidirectional=bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rnn(self.embedding(x))  # (B, T, E) in
        h_n = out[1][0] if isinstance(self.rnn, nn.LSTM) else out[1]  # (layers*dirs, B, H)
        # Final states of both directions, as Keras's Bidirectional(LSTM) returns them (on pre-padded
        # input the backward direction reads the text first and the padding last).
        h = torch.cat([h_n[-2], h_n[-1]], dim=1) if self.rnn.bidirectional else h_n[-1]  # (B, dirs*H)
        return self.fc(self.dropout(h))


def _masked_mean(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean of h (B, T, D) over the positions whose token id is not padding (0)."""
    mask = (x != 0).unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    return (h * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B, D)


class CNN1dText(nn.Module):
    """Embedding → Conv1d → ReLU → Conv1d → ReLU → max over time → Dropout → Linear (Kim 2014, smaller)."""

    def __init__(
        self, vocab_size: int, num_labels: int, embed_dim: int = 32, channels: int = 64, kernel_size: int = 3,
        dropout: float = 0.5,
    ) -> None:  # fmt: skip
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.conv1 = nn.Conv1d(embed_dim, channels, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embedding(x).transpose(1, 2)  # (B, E, T)
        h = torch.relu(self.conv2(torch.relu(self.conv1(h))))  # (B, C, T)
        return self.fc(self.dropout(h.amax(dim=2)))  # (B, labels)


class SelfAttention(nn.Module):
    """Multi-head self-attention from two Linear layers and `scaled_dot_product_attention`.

    Written out rather than nn.MultiheadAttention: traced for ONNX, that module bakes the batch
    and sequence lengths of the example input into its reshapes (the exported file then fails
    on any other shape), and in eval mode it switches to a fused kernel TorchScript cannot export.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # (B, T, D)
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D/H)
        p = self.dropout if self.training else 0.0
        h = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=p)  # (B, H, T, D/H)
        return self.out(h.transpose(1, 2).reshape(b, t, d))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + Attention(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x)))  # (B, T, D)
        return x + self.dropout(self.ffn(self.norm2(x)))


class TinyTransformer(nn.Module):
    """Token + learned position embeddings → encoder blocks → LayerNorm → mean over real tokens → Linear.

    No attention mask: padding is token 0 with its own embedding and is left out of the mean;
    a key-padding mask would turn an all-padding row (an empty text) into NaN.
    """

    def __init__(
        self, vocab_size: int, num_labels: int, dim: int = 32, heads: int = 2, layers: int = 1, ffn_dim: int = 64,
        max_positions: int = 256, dropout: float = 0.1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Embedding(max_positions, dim)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, ffn_dim, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Longer inputs keep their last max_positions tokens (pre-padded: the text is at the end).
        x = x[:, -self.position.num_embeddings :]
        pos = torch.arange(x.shape[1], device=x.device)  # (T,)
        h = self.embedding(x) + self.position(pos)  # (B, T, D)
        h = self.norm(self.blocks(h))
        return self.fc(_masked_mean(h, x))  # (B, labels)
