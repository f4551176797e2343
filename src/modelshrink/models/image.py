"""Image classifiers: a small CNN with batch norm, and an MLP. Input (B, C, H, W) float."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """[Conv3x3 → BatchNorm → ReLU] x2 with a 2x2 max-pool between → global average pool → Dropout → Linear."""

    def __init__(self, in_channels: int, num_labels: int, channels: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * channels, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))  # (B, c, H, W)
        h = nn.functional.max_pool2d(h, 2, ceil_mode=True)  # (B, c, H/2, W/2)
        h = torch.relu(self.bn2(self.conv2(h)))  # (B, 2c, H/2, W/2)
        return self.fc(self.dropout(h.mean(dim=(2, 3))))  # (B, labels)


class MLP(nn.Module):
    """Flatten → [Linear → ReLU → Dropout] x layers → Linear. Needs images of exactly `image_size`."""

    def __init__(
        self, in_channels: int, num_labels: int, image_size: int = 8, hidden: int = 128, layers: int = 2,
        dropout: float = 0.2,
    ) -> None:  # fmt: skip
        super().__init__()
        self.image_size = image_size
        dims = [in_channels * image_size * image_size] + [hidden] * layers
        blocks: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        self.body = nn.Sequential(*blocks)
        self.fc = nn.Linear(dims[-1], num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))  # (B, C*H*W) → (B, labels)
