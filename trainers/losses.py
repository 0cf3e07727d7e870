"""GAN losses: name -> (discriminator loss, generator loss).

Hinge is the paper's default (PAPER.md §3.1); ``wgan_gp`` is the γ variants'
objective (App. O) with the official code's per-sample interpolates and
sqrt(sum g^2 + 1e-8) slope; ``ns`` is the non-saturating loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Loss:
    d_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]
    """(D, real, fake, gp_weight) -> scalar; fake is detached by the caller."""
    g_loss: Callable[[torch.Tensor], torch.Tensor]
    """D(fake) logits -> scalar."""


def _hinge_d(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float) -> torch.Tensor:
    return F.relu(1.0 - d(real)).mean() + F.relu(1.0 + d(fake)).mean()


def _ns_d(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float) -> torch.Tensor:
    return F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean()


def gradient_penalty(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device)
    x_hat = (real + alpha * (fake - real)).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x_hat).sum(), x_hat, create_graph=True)
    slope = torch.sqrt(grad.flatten(1).pow(2).sum(1) + 1e-8)
    return ((slope - 1.0) ** 2).mean()


def _wgan_gp_d(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float) -> torch.Tensor:
    return -d(real).mean() + d(fake).mean() + gp_weight * gradient_penalty(d, real, fake)


LOSSES: dict[str, Loss] = {
    "hinge": Loss(_hinge_d, lambda logits: -logits.mean()),
    "wgan_gp": Loss(_wgan_gp_d, lambda logits: -logits.mean()),
    "ns": Loss(_ns_d, lambda logits: F.softplus(-logits).mean()),
}
