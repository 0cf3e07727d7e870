"""SNGAN ResNet generator and discriminator, unconditional (paper Tables 8-13, PAPER.md §2.3).

Transcribed from the official ``no_gamma-ResNet/gan/network.py`` and ``op.py``
(fjxmlzn/BSN), including the details the paper's tables leave out:

* G: ``Linear(z -> 4x4x1024)`` (no BN/ReLU after it), five up-ResBlocks whose
  outputs are 1024, 512, 256, 128, 64 channels (the first block keeps 1024), then
  BN, ReLU, conv3x3 -> ``channels``, tanh. Every up-block's shortcut is
  *upsample -> conv1x1*, even when the channel count does not change.
* Up-ResBlock residual branch: BN -> ReLU -> nearest x2 -> conv3x3 -> BN -> ReLU ->
  conv3x3. The TF ``unpooling`` is a stride-2 transposed conv with an all-ones
  2x2 kernel, which is exactly nearest-neighbour upsampling.
* D: down-ResBlocks 64, 128, 256, 512, 1024, one 1024 ResBlock without
  downsampling, ReLU, global **sum** pooling, dense -> 1. The first block has no
  leading ReLU and its shortcut pools *before* its 1x1 conv (fewer FLOPs on the
  3-channel input); the others convolve the shortcut and then pool. Every block,
  the last non-downsampling one included, has a learned 1x1 shortcut conv, so the
  normalizer covers it (PAPER.md §1.0).
* Init: TF ``variance_scaling(fan_avg, uniform)`` == Glorot-uniform; scale 2.0 (gain
  sqrt(2)) for the 3x3 convs inside residual branches, 1.0 for shortcuts, the
  linear layers and G's output conv. Biases start at zero. BN is TF's
  ``batch_norm(decay=0.9, eps=1e-5, scale=True)`` == torch momentum 0.1, eps 1e-5.

Resolutions: 128 px is the paper's architecture. Other powers of two >= 8 use the
same blocks with log2(resolution / 4) up/down blocks, keeping the 64-channel end
and capping at 1024 (at 64 px this is SNGAN's 64 px ResNet generator); this is our
extension for cheap CPU runs and tests, not something the paper evaluated.

The discriminator is built plain; the loop applies ``trainers.normalizers.apply``
afterwards, so nothing here branches on the normalizer. Note for the loop: in the
official ResNet code BN moving averages update only during the G step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import TrainConfig
from trainers.models.shapes import check_resolution

MAX_CHANNELS = 1024
MIN_CHANNELS = 64
RESIDUAL_GAIN = math.sqrt(2.0)
"""Glorot gain of the residual 3x3 convs (TF variance_scaling scale=2.0)."""


def _c(n: int, width: float) -> int:
    """Channels after the width multiplier, never below 1 so tiny test models still work."""
    return max(1, round(n * width))


def _glorot(module: nn.Conv2d | nn.Linear, gain: float) -> None:
    nn.init.xavier_uniform_(module.weight, gain=gain)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.1, eps=1e-5)  # TF decay 0.9, eps 1e-5


def num_blocks(resolution: int) -> int:
    """Up (or down) blocks between 4x4 and ``resolution``; 5 at the paper's 128 px.

    Raises ConfigError unless ``resolution`` is 4 * 2**n with n >= 1, because every
    block doubles (or halves) the side.
    """
    check_resolution("sngan_resnet", resolution)
    return round(math.log2(resolution / 4))


def generator_channels(resolution: int) -> list[int]:
    """[linear output channels, block 1 output, ..., block n output] at width 1.

    128 px -> [1024, 1024, 512, 256, 128, 64], the official network.py.
    """
    n = num_blocks(resolution)
    return [min(MAX_CHANNELS, MIN_CHANNELS * 2**i) for i in range(n, -1, -1)]


def discriminator_channels(resolution: int) -> list[int]:
    """Output channels of the down blocks, then of the final non-downsampling block.

    128 px -> [64, 128, 256, 512, 1024, 1024].
    """
    n = num_blocks(resolution)
    down = [min(MAX_CHANNELS, MIN_CHANNELS * 2**i) for i in range(n)]
    return [*down, down[-1]]


class UpBlock(nn.Module):
    """BN-ReLU-up-conv3-BN-ReLU-conv3 plus an up-conv1x1 shortcut (official ``up_resnet``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1 = _bn(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn2 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1)
        _glorot(self.conv1, RESIDUAL_GAIN)
        _glorot(self.conv2, RESIDUAL_GAIN)
        _glorot(self.shortcut, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    """(ReLU)-conv3-ReLU-conv3-(avgpool) plus a 1x1 shortcut (official ``down_resnet``).

    ``first``: no ReLU on the raw image, and the shortcut pools before its conv.
    """

    def __init__(self, cin: int, cout: int, down: bool = True, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1)
        _glorot(self.conv1, RESIDUAL_GAIN)
        _glorot(self.conv2, RESIDUAL_GAIN)
        _glorot(self.shortcut, 1.0)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.down else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self._pool(self.conv2(F.relu(self.conv1(h))))
        s = self.shortcut(self._pool(x)) if self.first else self._pool(self.shortcut(x))
        return h + s


class Generator(nn.Module):
    """z (N, latent_dim) -> images (N, channels, resolution, resolution) in [-1, 1]."""

    def __init__(self, resolution: int = 128, channels: int = 3, latent_dim: int = 128, width: float = 1.0):
        super().__init__()
        self.latent_dim = latent_dim
        c = [_c(n, width) for n in generator_channels(resolution)]
        self.c0 = c[0]
        self.fc = nn.Linear(latent_dim, 4 * 4 * c[0])
        self.blocks = nn.Sequential(*(UpBlock(a, b) for a, b in zip(c[:-1], c[1:], strict=True)))
        self.bn = _bn(c[-1])
        self.out = nn.Conv2d(c[-1], channels, 3, padding=1)
        _glorot(self.fc, 1.0)
        _glorot(self.out, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.fc(z).view(-1, self.c0, 4, 4))
        return torch.tanh(self.out(F.relu(self.bn(h))))


class Discriminator(nn.Module):
    """images (N, channels, resolution, resolution) -> raw logits (N,)."""

    def __init__(self, resolution: int = 128, channels: int = 3, width: float = 1.0):
        super().__init__()
        c = [_c(n, width) for n in discriminator_channels(resolution)]
        blocks = [DownBlock(channels, c[0], first=True)]
        blocks += [DownBlock(a, b) for a, b in zip(c[:-2], c[1:-1], strict=True)]
        blocks.append(DownBlock(c[-2], c[-1], down=False))
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c[-1], 1)
        _glorot(self.fc, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sum (not mean) pooling, as the official code: D's scale grows with the
        # spatial size, which matters when comparing normalizer scales c.
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.fc(h).squeeze(1)


def build(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for ``cfg``; D is un-normalized (the loop applies the normalizer)."""
    G = Generator(cfg.resolution, cfg.channels, cfg.latent_dim, cfg.width)
    D = Discriminator(cfg.resolution, cfg.channels, cfg.width)
    return G, D
