"""SNGAN "standard CNN" generator and discriminator (paper Tables 2/3, PAPER.md §2.1).

The same classes serve the paper's 32/48/64 px runs at ``width=1`` and the CPU
demo/tests at tiny widths and 16 px, so a bug found in a test is a bug in the
real architecture. The discriminator is built plain: normalization is applied
afterwards by ``trainers.normalizers.apply`` so no model branches on it.
"""

from __future__ import annotations

import torch
from torch import nn

from trainers.config import TrainConfig
from trainers.models.shapes import check_resolution

D_CHANNELS = (64, 64, 128, 128, 256, 256, 512)
# (kernel, stride) of the 7 conv layers; padding 1 everywhere matches TF "SAME".
D_KERNELS = ((3, 1), (4, 2), (3, 1), (4, 2), (3, 1), (4, 2), (3, 1))
G_CHANNELS = (512, 256, 128, 64)


def _c(n: int, width: float) -> int:
    return max(1, round(n * width))


class Generator(nn.Module):
    """Linear -> M_g x M_g x 512, three 4x4/s2 deconvs with BN+ReLU, 3x3 deconv, tanh."""

    def __init__(self, resolution: int, channels: int = 3, latent_dim: int = 128, width: float = 1.0):
        super().__init__()
        check_resolution("sngan_cnn", resolution)
        self.latent_dim = latent_dim
        self.mg = resolution // 8
        c = [_c(n, width) for n in G_CHANNELS]
        self.fc = nn.Linear(latent_dim, self.mg * self.mg * c[0])
        # TF batch_norm decay 0.9 == torch momentum 0.1; eps 1e-5.
        self.bn0 = nn.BatchNorm1d(self.mg * self.mg * c[0], momentum=0.1, eps=1e-5)
        layers: list[nn.Module] = []
        for cin, cout in zip(c[:-1], c[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1),
                nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5),
                nn.ReLU(),
            ]
        layers += [nn.ConvTranspose2d(c[-1], channels, 3, stride=1, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.c0 = c[0]
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn0(self.fc(z)))
        return self.body(h.view(-1, self.c0, self.mg, self.mg))


class Discriminator(nn.Module):
    """Seven convs (64-64-128-128-256-256-512), LeakyReLU(0.1), dense -> 1 raw logit."""

    def __init__(self, resolution: int, channels: int = 3, width: float = 1.0):
        super().__init__()
        check_resolution("sngan_cnn", resolution)
        c = [channels] + [_c(n, width) for n in D_CHANNELS]
        layers: list[nn.Module] = []
        for (cin, cout), (k, s) in zip(zip(c[:-1], c[1:], strict=True), D_KERNELS, strict=True):
            layers += [nn.Conv2d(cin, cout, k, stride=s, padding=1), nn.LeakyReLU(0.1)]
        self.features = nn.Sequential(*layers)
        side = resolution // 8
        self.fc = nn.Linear(side * side * c[-1], 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, 0.0, 0.02, a=-0.04, b=0.04)  # TF truncated_normal
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1)).squeeze(1)


def build(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    g = Generator(cfg.resolution, cfg.channels, cfg.latent_dim, cfg.width)
    d = Discriminator(cfg.resolution, cfg.channels, cfg.width)
    return g, d
