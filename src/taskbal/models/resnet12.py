"""ResNet-12, the few-shot backbone of Lee et al. 2019 (MetaOptNet; also Oreshkin et al. 2018, TADAM).

Four residual blocks; each is three conv 3×3 (no bias) → BatchNorm, with a leaky ReLU (slope 0.1)
after the first two, a 1×1 conv → BatchNorm shortcut, the sum, a leaky ReLU and a 2×2 max-pool.
Widths 64-160-320-640 (MetaOptNet; 64-128-256-512 is TADAM's). 84×84 inputs end at 5×5.

Config (``model:``): ``{name: resnet12, channels: [64, 160, 320, 640], pool: avg, bn_affine: true,
dropout: 0.0, in_channels, image_size}``.

- ``pool``: ``avg`` = global average pooling before the linear head (learn2learn's default
  ``avg_pool=True``; a 640-d embedding), ``flatten`` = the flattened 5×5 map (MetaOptNet's
  16,000-d embedding on mini-ImageNet).
- BatchNorm uses batch statistics (``track_running_stats=False``) so the network batches over
  tasks with ``torch.func.vmap`` and behaves as the conv4 network does under MAML.
- ``dropout``: plain dropout after every block (0 = none). DropBlock (MetaOptNet's regulariser in
  blocks 3–4) is not implemented. Dropout follows ``model.train()`` / ``model.eval()``.
- Initialisation as learn2learn / MetaOptNet: conv weights Kaiming-normal (fan-out, leaky ReLU),
  BatchNorm γ = 1, β = 0; the head keeps PyTorch's default.
- No CAVIA context (``model.context`` is not an option of this network).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import as_images, check_bool, check_probability, check_widths, image_shape


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bn_affine: bool):
        super().__init__()
        norm = lambda: nn.BatchNorm2d(out_channels, affine=bn_affine, track_running_stats=False)  # noqa: E731
        self.conv1, self.bn1 = conv3x3(in_channels, out_channels), norm()
        self.conv2, self.bn2 = conv3x3(out_channels, out_channels), norm()
        self.conv3, self.bn3 = conv3x3(out_channels, out_channels), norm()
        self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False), norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
        h = F.leaky_relu(self.bn2(self.conv2(h)), 0.1)
        h = self.bn3(self.conv3(h))
        return F.max_pool2d(F.leaky_relu(h + self.downsample(x), 0.1), 2)


class ResNet12Embedding(nn.Module):
    def __init__(self, in_channels: int, channels: list[int], pool: str, bn_affine: bool, dropout: float):
        super().__init__()
        self.in_channels, self.pool, self.dropout = in_channels, pool, dropout
        widths = [in_channels] + channels
        for i in range(4):  # named layer1..layer4 / block index 0 like the usual implementations
            self.add_module(f"layer{i + 1}", nn.Sequential(ResidualBlock(widths[i], widths[i + 1], bn_affine)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = as_images(x, self.in_channels)
        for i in range(4):
            h = getattr(self, f"layer{i + 1}")(h)
            if self.dropout:
                h = F.dropout(h, self.dropout, training=self.training)
        return h.mean(dim=(2, 3)) if self.pool == "avg" else h.flatten(1)


class ResNet12(nn.Module):
    def __init__(self, in_channels: int, image_size: int, n_way: int, channels: list[int] = (64, 160, 320, 640),
                 pool: str = "avg", bn_affine: bool = True, dropout: float = 0.0):
        super().__init__()
        self.num_context = 0
        self.embedding = ResNet12Embedding(in_channels, list(channels), pool, bn_affine, dropout)
        side = image_size
        for _ in range(4):
            side //= 2
        features = channels[-1] * (1 if pool == "avg" else side * side)
        self.head = nn.Linear(features, n_way)
        for module in self.embedding.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(x))


def build(io_dims, channels: list[int] | None = None, pool: str = "avg", bn_affine: bool = True,
          dropout: float = 0.0, in_channels: int | None = None, image_size: int | None = None) -> ResNet12:
    in_ch, size = image_shape(io_dims, in_channels, image_size)
    widths = check_widths("channels", [64, 160, 320, 640] if channels is None else channels, 4)
    if pool not in ("avg", "flatten"):
        raise ValueError(f"model.pool: expected 'avg' or 'flatten', got {pool!r}")
    if size < 16:
        raise ValueError(f"model.image_size: resnet12 halves the image 4 times, needs >= 16, got {size}")
    check_bool("bn_affine", bn_affine)
    check_probability("dropout", dropout)
    return ResNet12(in_ch, size, io_dims[1], widths, pool, bn_affine, float(dropout))
