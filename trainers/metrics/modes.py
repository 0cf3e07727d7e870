"""Mode metrics for data with known modes (2D mixtures and the ``blobs`` images).

The PacGAN/VEEGAN protocol: assign each generated sample to its nearest mode;
it is *high quality* when within ``hq_radius`` of it. From that:

- ``modes_captured``: modes with at least one high-quality sample;
- ``hq_fraction``: fraction of samples that are high quality;
- ``mode_kl``: KL(histogram of high-quality samples over modes || uniform),
  log(K) when there is none (as bad as total collapse);
- ``mode_coverage``: sum_k min(n_hq_k / N, 1/K), the overlap of the
  high-quality sample histogram with the ideal uniform mixture. It is 1 exactly
  when every mode receives its 1/K share of high-quality samples, 1/K for a
  perfect single-mode collapse, and 0 for noise, so it rewards quality and
  diversity in one number in [0, 1]. The demo optimises it.

A Fréchet distance in data space is deliberately not used: it ranks too-wide
modes above perfect samples (STACK.md, Metrics).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where samples are scored: the catalogue is read without torch
    import torch

MODE_METRICS = {
    "mode_coverage": "max",
    "modes_captured": "max",
    "hq_fraction": "max",
    "mode_kl": "min",
}


def mode_metrics(samples: torch.Tensor, centers: torch.Tensor, hq_radius: float) -> dict[str, float]:
    import torch

    x = samples.detach().flatten(1).double()
    c = centers.flatten(1).double().to(x.device)
    k, n = len(c), len(x)
    if not torch.isfinite(x).all():
        return {"mode_coverage": 0.0, "modes_captured": 0.0, "hq_fraction": 0.0, "mode_kl": math.log(k)}
    dist, nearest = torch.cdist(x, c).min(dim=1)
    hq = dist <= hq_radius
    counts = torch.bincount(nearest[hq], minlength=k).double()
    n_hq = float(counts.sum())
    coverage = float(torch.minimum(counts / n, torch.full_like(counts, 1.0 / k)).sum())
    if n_hq > 0:
        p = counts / n_hq
        nz = p > 0
        kl = float((p[nz] * torch.log(p[nz] * k)).sum())
    else:
        kl = math.log(k)
    return {
        "mode_coverage": coverage,
        "modes_captured": float((counts > 0).sum()),
        "hq_fraction": n_hq / n,
        "mode_kl": kl,
    }
