"""The parametrizations a normalizer registers, and the factories that register them.

``_Normalize`` turns a raw weight into ``gamma * scale * W / sigma``; ``_GammaBias``
scales a bias by gamma (the γ variants). The factories (``_none``, ``_lecun``,
``_spectral``) are what ``catalogue.METHODS`` entries build modules with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from trainers.normalizers.common import GAMMA_NAME, fan_in, layers, out_dim, raw_weight
from trainers.normalizers.power import _ConvPower, _MatrixPower, _PowerState


class _Normalize(nn.Module):
    """weight -> gamma * scale * weight / sigma, sigma = mean of the power states' estimates.

    One state: SN / SNConv. Two states (dim c_out and dim c_in): BSN, whose
    sigma = (sigma_1 + sigma_2) / 2 (PAPER.md §1.4).

    ``scale`` is a 0-dim *non-persistent buffer* in the weight's dtype, not a Python
    float: ``torch.func.stack_module_state`` then stacks the members' scales like any
    other buffer, so packed training (trainers.packed) runs one module definition for
    members with different c. It stays out of ``state_dict`` (the config holds c), and
    ``reciprocal() * scale`` is what ``float / tensor`` computed before, bit for bit.
    """

    scale: Tensor

    def __init__(self, powers: list[_PowerState], scale: float, gamma_owner: nn.Module | None, like: Tensor) -> None:
        super().__init__()
        self.powers = nn.ModuleList(powers)
        c = torch.tensor(float(scale), dtype=like.dtype, device=like.device)
        self.register_buffer("scale", c, persistent=False)
        # a plain (unregistered) reference: the gamma Parameter belongs to its owner
        # (root or layer), so it appears once in state_dict / parameters()
        object.__setattr__(self, "_gamma_owner", gamma_owner)

    def sigma(self, weight: Tensor) -> Tensor:
        if len(self.powers) == 1:
            return self.powers[0].sigma(weight)
        return (self.powers[0].sigma(weight) + self.powers[1].sigma(weight)) / 2

    def forward(self, weight: Tensor) -> Tensor:
        if torch.is_autocast_enabled(weight.device.type):
            # sigma and W / sigma in the weight's own precision, not autocast's fp16/bf16
            with torch.autocast(weight.device.type, enabled=False):
                return self._normalize(weight)
        return self._normalize(weight)

    def _normalize(self, weight: Tensor) -> Tensor:
        # W * (c / sigma) rather than W / sigma * c: one multiply over W (and a cheaper
        # backward than division's) with scale and gamma folded into the scalar
        coef = self.sigma(weight).reciprocal() * self.scale
        if self._gamma_owner is not None:
            coef = coef * getattr(self._gamma_owner, GAMMA_NAME)
        return weight * coef

    def step(self, weight: Tensor) -> None:
        for p in self.powers:
            p.step(weight)  # type: ignore[operator]

    def extra_repr(self) -> str:
        return f"scale={float(self.scale)}, gamma={'yes' if self._gamma_owner is not None else 'no'}"


class _GammaBias(nn.Module):
    """bias -> gamma * bias: the official γ variants scale the bias too (App. O, ``op.py``)."""

    def __init__(self, gamma_owner: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_gamma_owner", gamma_owner)

    def forward(self, bias: Tensor) -> Tensor:
        return bias * getattr(self._gamma_owner, GAMMA_NAME)


def _normalizers_of(layer: nn.Module) -> Iterator[_Normalize]:
    if parametrize.is_parametrized(layer, "weight"):
        for p in layer.parametrizations.weight:  # type: ignore[union-attr]
            if isinstance(p, _Normalize):
                yield p


# --------------------------------------------------------------------------------------
# factories
# --------------------------------------------------------------------------------------
def _target_layers(module: nn.Module, method: str) -> list[nn.Module]:
    found = [m for _, m in layers(module)]
    if not found:
        raise ValueError(f"normalizer {method!r}: no Conv2d/ConvTranspose2d/Linear layer in {type(module).__name__}")
    for m in found:
        w = m._parameters.get("weight")
        if isinstance(w, nn.parameter.UninitializedParameter):
            raise ValueError(f"normalizer {method!r}: {type(m).__name__} is lazy; run one forward before apply()")
        if parametrize.is_parametrized(m, "weight"):
            raise ValueError(
                f"normalizer {method!r}: {type(m).__name__} weight is already parametrized "
                "(a normalizer was applied already?); apply() expects a plain module"
            )
    return found


def _none(module: nn.Module, scale: float, opts: dict[str, Any]) -> nn.Module:
    # The paper's no-SN baseline has no scale knob: scale is ignored (documented).
    return module


@torch.no_grad()
def _lecun(module: nn.Module, scale: float, opts: dict[str, Any]) -> nn.Module:
    for m in _target_layers(module, "lecun"):
        m.weight.normal_(0.0, scale / math.sqrt(fan_in(m)))
        if m.bias is not None:
            m.bias.zero_()
    return module


def _is_1x1(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or all(k == 1 for k in layer.kernel_size)  # type: ignore[attr-defined]


def _spectral(base: str, gamma: str | None) -> Callable[[nn.Module, float, dict[str, Any]], nn.Module]:
    def factory(module: nn.Module, scale: float, opts: dict[str, Any]) -> nn.Module:
        name = base if gamma is None else f"{base}_gamma_{gamma}"
        targets = _target_layers(module, name)
        eps, through = float(opts["eps"]), bool(opts["grad_through_uv"])
        if gamma is not None:
            holders = [module] if gamma == "same" else targets
            for holder in holders:
                if hasattr(holder, GAMMA_NAME):
                    raise ValueError(f"normalizer {name!r}: {type(holder).__name__} already has `{GAMMA_NAME}`")
                w = raw_weight(targets[0])
                holder.register_parameter(GAMMA_NAME, nn.Parameter(torch.ones((), dtype=w.dtype, device=w.device)))
        for m in targets:
            owner = None if gamma is None else (module if gamma == "same" else m)
            w = raw_weight(m)
            od = out_dim(m)
            powers: list[_PowerState]
            if base == "snconv" and not isinstance(m, nn.Linear):
                powers = [_ConvPower(m, eps, through)]  # type: ignore[arg-type]
            elif base == "bsn" and not _is_1x1(m):
                # sigma_1: c_out x (c_in kh kw); sigma_2: c_in x (c_out kh kw)
                powers = [_MatrixPower(w, od, eps, through), _MatrixPower(w, 1 - od, eps, through)]
            else:  # sn; snconv on Linear; bsn on Linear / 1x1 conv (the two reshapes are transposes)
                powers = [_MatrixPower(w, od, eps, through)]
            parametrize.register_parametrization(m, "weight", _Normalize(powers, scale, owner, w))
            if owner is not None and m.bias is not None:
                parametrize.register_parametrization(m, "bias", _GammaBias(owner))
            if isinstance(powers[0], _ConvPower):
                m.register_forward_pre_hook(powers[0].observe)
        return module

    return factory
