"""GAN losses: name -> (discriminator loss, generator loss).

Hinge is the paper's default (PAPER.md §3.1); ``wgan_gp`` is the γ variants'
objective (App. O) with the official code's per-sample interpolates and
sqrt(sum g^2 + 1e-8) slope; ``ns`` is the non-saturating loss.

Every loss is a plain function of (D, real, fake), so trainers.packed runs the same
code under ``torch.func.vmap`` for K members at once. Two details serve that: the
penalty's interpolation weights can be passed in (``alpha``; a packed member draws
them from its own stream, in the solo order), and the penalty differentiates with
``torch.func.grad``, which gives the solo run the same numbers as
``torch.autograd.grad(create_graph=True)`` (bitwise, tests/test_packed.py) and also
works under vmap, where ``requires_grad_`` cannot be called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Loss:
    d_loss: Callable[..., torch.Tensor]
    """(D, real, fake, gp_weight, alpha=None) -> scalar; fake is detached by the caller."""
    g_loss: Callable[[torch.Tensor], torch.Tensor]
    """D(fake) logits -> scalar."""


def _hinge_d(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float, alpha=None) -> torch.Tensor:
    return F.relu(1.0 - d(real)).mean() + F.relu(1.0 + d(fake)).mean()


def _ns_d(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float, alpha=None) -> torch.Tensor:
    return F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean()


def penalty_alpha(real: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The per-sample interpolation weights U[0, 1) of the penalty (global RNG unless ``generator``)."""
    return torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, generator=generator)


def gradient_penalty(
    d: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor | None = None
) -> torch.Tensor:
    alpha = penalty_alpha(real) if alpha is None else alpha
    x_hat = real + alpha * (fake - real)
    grad = torch.func.grad(lambda x: d(x).sum())(x_hat)  # differentiable: the outer backward goes through it
    slope = torch.sqrt(grad.flatten(1).pow(2).sum(1) + 1e-8)
    return ((slope - 1.0) ** 2).mean()


def _wgan_gp_d(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float, alpha=None) -> torch.Tensor:
    return -d(real).mean() + d(fake).mean() + gp_weight * gradient_penalty(d, real, fake, alpha)


LOSSES: dict[str, Loss] = {
    "hinge": Loss(_hinge_d, lambda logits: -logits.mean()),
    "wgan_gp": Loss(_wgan_gp_d, lambda logits: -logits.mean()),
    "ns": Loss(_ns_d, lambda logits: F.softplus(-logits).mean()),
}
