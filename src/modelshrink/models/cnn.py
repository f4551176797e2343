"""A tiny CNN for image tasks (scikit-learn's 8x8 digits) and for the technique contract tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv(1→c) → ReLU → Conv(c→c2, default 2c) → ReLU → global average pool → Linear(num_labels).

    Input: (B, 1, H, W) float. Output: (B, num_labels) logits.
    """

    def __init__(
        self, num_labels: int = 10, channels: int = 8, in_channels: int = 1, channels2: int | None = None
    ) -> None:
        super().__init__()
        channels2 = channels2 or 2 * channels  # structured pruning may shrink the two convolutions apart
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels2, 3, padding=1)
        self.fc = nn.Linear(channels2, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))  # (B, c, H, W)
        h = torch.relu(self.conv2(h))  # (B, c2, H, W)
        return self.fc(h.mean(dim=(2, 3)))  # (B, labels)
