"""MLP generator and discriminator for the 2D toy mixtures (ring of 8, grid of 25).

The paper has no 2D experiment; this is the usual mode-collapse testbed (PacGAN,
VEEGAN) on which normalizers can be compared in seconds on a CPU. Choices, so
that results are reproducible and explainable:

* Both nets have ``HIDDEN_LAYERS = 4`` hidden layers of ``round(128 * width)``
  units. Four layers give D enough depth that per-layer normalization (the thing
  under study) compounds as it does in the image discriminators; 128 units fit
  the 25-mode grid comfortably.
* G: ReLU hidden activations and a *linear* output, because the modes sit at
  radius 1-2 (ring) or up to +-4 (grid), outside tanh's range. No BatchNorm: it
  couples samples within a batch, which muddies mode-coverage counts.
* D: LeakyReLU(0.1), the slope of the paper's CNN discriminator; it also avoids
  dead units, which on a 2D input can silence whole regions of the plane.
  Output is a raw logit of shape (N,).
* Init: PyTorch's default Linear init, left untouched so the ``lecun``
  normalizer (scaled LeCun init) is the one place that changes initialization.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainers.config import TrainConfig

HIDDEN_LAYERS = 4
HIDDEN_UNITS = 128
DATA_DIM = 2


def _mlp(d_in: int, hidden: int, d_out: int, act: Callable[[], nn.Module]) -> nn.Sequential:
    """``HIDDEN_LAYERS`` x (Linear, act) then a Linear head."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(HIDDEN_LAYERS):
        layers += [nn.Linear(d, hidden), act()]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """z (N, latent_dim) -> points (N, 2)."""

    def __init__(self, latent_dim: int = 128, width: float = 1.0, data_dim: int = DATA_DIM):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp(latent_dim, max(1, round(HIDDEN_UNITS * width)), data_dim, nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """points (N, 2) -> raw logits (N,)."""

    def __init__(self, width: float = 1.0, data_dim: int = DATA_DIM):
        super().__init__()
        self.net = _mlp(data_dim, max(1, round(HIDDEN_UNITS * width)), 1, lambda: nn.LeakyReLU(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def build(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for the 2D toys; ``resolution`` and ``channels`` do not apply and are ignored."""
    return Generator(cfg.latent_dim, cfg.width), Discriminator(cfg.width)
