"""ResNet-10 (He et al. 2016 with one basic block per stage), TOW's MAML backbone on mini-ImageNet.

The torchvision layout ``ResNet(BasicBlock, [1, 1, 1, 1])``: conv 7×7 stride 2 (64) → BatchNorm →
ReLU → max-pool 3×3 stride 2, then four stages of one basic block each (two conv 3×3 → BatchNorm,
a 1×1 conv → BatchNorm shortcut where the shape changes), widths 64-128-256-512, strides 1-2-2-2,
global average pooling and a linear head. Module names follow torchvision (``conv1``, ``bn1``,
``layer1.0.conv1`` …) inside ``embedding``.

Config (``model:``): ``{name: resnet10, channels: [64, 128, 256, 512], bn_affine: true,
dropout: 0.0, in_channels, image_size}``.

- BatchNorm uses batch statistics (``track_running_stats=False``), so the network batches over tasks
  with ``torch.func.vmap``; TOW's code does the same (and drops the affine part: ``bn_affine: false``).
- ``dropout``: channel dropout (``Dropout2d``) after the stem and after every stage, as TOW's code
  injects against over-fitting (its value: 0.75). 0 = none. Follows ``model.train()`` / ``eval()``.
- Initialisation as torchvision: conv weights Kaiming-normal (fan-out, ReLU), BatchNorm γ = 1, β = 0.
- No CAVIA context.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import as_images, check_bool, check_probability, check_widths, image_shape


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, bn_affine: bool):
        super().__init__()
        norm = lambda: nn.BatchNorm2d(out_channels, affine=bn_affine, track_running_stats=False)  # noqa: E731
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = norm()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(h + shortcut)


class ResNet10Embedding(nn.Module):
    def __init__(self, in_channels: int, channels: list[int], bn_affine: bool, dropout: float):
        super().__init__()
        self.in_channels, self.dropout = in_channels, dropout
        self.conv1 = nn.Conv2d(in_channels, channels[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0], affine=bn_affine, track_running_stats=False)
        widths = [channels[0]] + channels
        for i in range(4):
            block = BasicBlock(widths[i], widths[i + 1], 1 if i == 0 else 2, bn_affine)
            self.add_module(f"layer{i + 1}", nn.Sequential(block))

    def _drop(self, h: torch.Tensor) -> torch.Tensor:
        return F.dropout2d(h, self.dropout, training=self.training) if self.dropout else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(as_images(x, self.in_channels))))
        h = self._drop(F.max_pool2d(h, kernel_size=3, stride=2, padding=1))
        for i in range(4):
            h = self._drop(getattr(self, f"layer{i + 1}")(h))
        return h.mean(dim=(2, 3))


class ResNet10(nn.Module):
    def __init__(self, in_channels: int, n_way: int, channels: list[int] = (64, 128, 256, 512),
                 bn_affine: bool = True, dropout: float = 0.0):
        super().__init__()
        self.num_context = 0
        self.embedding = ResNet10Embedding(in_channels, list(channels), bn_affine, dropout)
        self.head = nn.Linear(channels[-1], n_way)
        for module in self.embedding.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(x))


def build(io_dims, channels: list[int] | None = None, bn_affine: bool = True, dropout: float = 0.0,
          in_channels: int | None = None, image_size: int | None = None) -> ResNet10:
    in_ch, _ = image_shape(io_dims, in_channels, image_size)
    widths = check_widths("channels", [64, 128, 256, 512] if channels is None else channels, 4)
    check_bool("bn_affine", bn_affine)
    check_probability("dropout", dropout)
    return ResNet10(in_ch, io_dims[1], widths, bn_affine, float(dropout))
