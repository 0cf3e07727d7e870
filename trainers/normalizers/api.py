"""The public functions of ``trainers.normalizers``: apply, update, and the read-outs of a normalized module.

Kept apart from the package ``__init__`` so that the catalogue (names, descriptions, options) can be
read without importing torch (``sweeper normalizers``, sweep-file validation); this module is
imported on first use of any of its names.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor, nn

from trainers.normalizers.catalogue import METHODS, OPTIONS, MethodInfo
from trainers.normalizers.common import raw_weight
from trainers.normalizers.parametrizations import _normalizers_of
from trainers.normalizers.power import _ConvPower


def _lookup(method: str) -> MethodInfo:
    info = METHODS.get(method) if isinstance(method, str) else None
    if info is None:
        raise ValueError(f"unknown normalizer {method!r}; valid: {', '.join(METHODS)}")
    return info


def _check_scale(scale: Any) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(f"`scale` must be a number > 0, got {scale!r}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"`scale` must be > 0, got {scale!r}")
    return float(scale)


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown normalizer option(s) {', '.join(unknown)}; valid options: {', '.join(OPTIONS)}")
    opts = {**OPTIONS, **options}
    eps = opts["eps"]
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"`eps` must be a finite number > 0, got {eps!r}")
    if not isinstance(opts["grad_through_uv"], bool):
        raise ValueError(f"`grad_through_uv` must be True or False, got {opts['grad_through_uv']!r}")
    return opts


def apply(module: nn.Module, method: str, scale: float = 1.0, **options: Any) -> nn.Module:
    """Normalize every Conv2d / ConvTranspose2d / Linear weight of ``module`` in place; return it.

    ``scale`` is the paper's fixed c (SSN/BSSN when != 1); it multiplies every normalized
    weight, the final linear included, never a bias. ``none`` ignores it; ``lecun`` uses
    it as the std multiplier. Options (all methods accept them, only the spectral ones
    use them): ``eps`` (1e-12, TF ``x/(||x||+eps)``), ``grad_through_uv`` (False).
    The power-iteration vectors are drawn from torch's global RNG here, so seed first.
    """
    info = _lookup(method)
    c = _check_scale(scale)
    opts = _check_options(options)
    return info.factory(module, c, opts)


@torch.no_grad()
def update(module: nn.Module) -> None:
    """Advance every persisted power iteration in ``module`` by exactly one step.

    Call once after each discriminator optimizer step: u <- u' is computed on the
    post-step weights, as the official code's ``spectral_norm_update_ops``. A no-op for
    ``none`` / ``lecun``, and for an SNConv layer that has not seen an input yet.
    """
    for layer in module.modules():
        for norm in _normalizers_of(layer):
            norm.step(layer.parametrizations.weight.original)  # type: ignore[union-attr]


def describe(method: str) -> str:
    """One paragraph: name, description, formula and paper section."""
    info = _lookup(method)
    return f"{info.name}: {info.description}. {info.formula}  [{info.paper}]"


def sigma(layer: nn.Module) -> float | None:
    """The sigma the layer's normalizer currently divides by (mode-dependent), or None."""
    for norm in _normalizers_of(layer):
        with torch.no_grad():
            return float(norm.sigma(raw_weight(layer)))
    return None


def input_size(layer: nn.Module) -> tuple[int, int] | None:
    """The input spatial size an SNConv layer has learnt, else None."""
    for norm in _normalizers_of(layer):
        for p in norm.powers:
            if isinstance(p, _ConvPower):
                return p.input_hw
    return None


@torch.no_grad()
def materialize(module: nn.Module, example_input: Tensor) -> nn.Module:
    """Run one side-effect-free forward so SNConv layers learn their input sizes.

    Use before wrapping in DDP or torch.compile (lazily created buffers should exist
    before either takes its snapshot of the module). Runs in eval mode so neither BN
    statistics nor anything else changes, then restores every submodule's mode.
    """
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        module(example_input)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return module
