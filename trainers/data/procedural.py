"""Procedural datasets whose modes are known exactly, so quality is measurable without Inception.

``blobs`` is the demo's image data: K coloured Gaussian bumps on a ring, one per
mode, plus pixel noise. Because every real image is a noisy copy of one of K
known templates, a generated image can be scored by its nearest template, the
image analogue of the 2D ring/grid protocol of PacGAN/VEEGAN (``ring``, ``grid``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Distinct, saturated colours in [-1, 1] so modes differ in colour as well as position.
_PALETTE = (
    (1.0, -1.0, -1.0), (-1.0, 1.0, -1.0), (-1.0, -1.0, 1.0), (1.0, 1.0, -1.0),
    (1.0, -1.0, 1.0), (-1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, -1.0),
)  # fmt: skip


HQ_RMS = 0.25


@dataclass
class ProceduralSource:
    """Infinite data: each sample = one of ``centers`` (chosen uniformly) + Gaussian noise."""

    name: str
    centers: torch.Tensor
    """(K, *sample_shape) exact mode templates."""
    noise_std: float
    hq_radius: float
    """Euclidean distance to the nearest center under which a sample counts as high quality."""

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.centers.shape[1:])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(self.centers), (n,), generator=generator)
        noise = torch.randn((n, *self.sample_shape), generator=generator) * self.noise_std
        return self.centers[idx] + noise


def blob_templates(k: int, resolution: int, channels: int) -> torch.Tensor:
    """K images in [-1, 1]: a coloured Gaussian bump at angle 2*pi*i/K on a ring, dark background."""
    if k > len(_PALETTE) and channels == 3:
        raise ValueError(f"blobs supports at most {len(_PALETTE)} modes, got {k}")
    ys, xs = torch.meshgrid(torch.arange(resolution), torch.arange(resolution), indexing="ij")
    c, radius, width = (resolution - 1) / 2, resolution * 0.28, resolution * 0.25
    out = torch.empty(k, channels, resolution, resolution)
    for i in range(k):
        cy, cx = c + radius * math.sin(2 * math.pi * i / k), c + radius * math.cos(2 * math.pi * i / k)
        bump = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * width**2))  # in [0, 1]
        for ch in range(channels):
            colour = _PALETTE[i % len(_PALETTE)][ch] if channels == 3 else 1.0
            # background -1; the bump moves each channel towards its colour value
            out[i, ch] = -1.0 + bump * (colour + 1.0)
    return out


def blobs(resolution: int = 16, channels: int = 3, k: int = 8, noise_std: float = 0.05) -> ProceduralSource:
    centers = blob_templates(k, resolution, channels)
    d = centers[0].numel()
    # High quality = RMS pixel error to the nearest template <= 0.25 (5 noise sigmas, so real
    # samples score 100%; neighbouring templates are >= 0.36 apart, so a HQ sample is unambiguous).
    return ProceduralSource("blobs", centers, noise_std, hq_radius=HQ_RMS * math.sqrt(d))


def ring(k: int = 8, radius: float = 1.0, std: float = 0.01) -> ProceduralSource:
    """PacGAN's ring: 8 Gaussians of std 0.01 on the unit circle; HQ within 3 sigma."""
    angles = torch.arange(k) * 2 * math.pi / k
    centers = torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], 1)
    return ProceduralSource("ring", centers, std, hq_radius=3 * std)


def grid(side: int = 5, spacing: float = 2.0, std: float = 0.05) -> ProceduralSource:
    """The 25-Gaussian grid on {-4,-2,0,2,4}^2 with std 0.05; HQ within 3 sigma."""
    ticks = (torch.arange(side) - (side - 1) / 2) * spacing
    centers = torch.cartesian_prod(ticks, ticks)
    return ProceduralSource("grid", centers, std, hq_radius=3 * std)
