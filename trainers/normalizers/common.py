"""Layer helpers shared by the normalizers, the diagnostics and packed training.

Which layers a normalizer touches, which weight dimension holds the output
channels, the raw and the effective weight of a layer, LeCun's fan_in, and the
two tensor conventions every power iteration uses (``_matrix``, ``_l2n``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
"""The layer types whose ``weight`` a normalizer touches (biases never, except gamma)."""


GAMMA_NAME = "normalizer_gamma"
"""Attribute name of the trainable gamma (on the root for ``*_gamma_same``, on each layer for ``_diff``)."""


def layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, layer) of every Conv2d/ConvTranspose2d/Linear, in module traversal order.

    This order defines ``layerK`` in the diagnostics, so it must be stable:
    ``named_modules`` is (registration order, depth first, shared modules once).
    """
    return [(name, m) for name, m in module.named_modules() if isinstance(m, LAYER_TYPES)]


def out_dim(layer: nn.Module) -> int:
    """The weight dimension holding the operator's *output* channels.

    Conv2d weights are (c_out, c_in/groups, kh, kw) and Linear (out, in), so 0; a
    ConvTranspose2d weight is (c_in, c_out/groups, kh, kw), so 1 (torch's own
    ``spectral_norm`` makes the same choice). "c_out x rest" reshapes use this dim.
    """
    return 1 if isinstance(layer, nn.ConvTranspose2d) else 0


def _matrix(weight: Tensor, dim: int) -> Tensor:
    """``weight`` as a matrix with ``dim`` as rows (Miyato's reshape for dim = c_out)."""
    if dim != 0:
        weight = weight.movedim(dim, 0)
    return weight.flatten(1)


def _l2n(x: Tensor, eps: float) -> Tensor:
    """TF-style ``x / (||x|| + eps)`` over the whole tensor (official ``sn.py`` convention)."""
    return x / (torch.linalg.vector_norm(x) + eps)


def raw_weight(layer: nn.Module) -> Tensor:
    """The trainable (un-normalized) weight Parameter of a layer."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original  # type: ignore[union-attr,return-value]
    return layer.weight  # type: ignore[return-value]


def effective_weight(layer: nn.Module) -> Tensor:
    """The weight the layer actually applies (normalized, scaled, times gamma)."""
    return layer.weight  # type: ignore[return-value]


def fan_in(layer: nn.Module) -> float:
    """Inputs feeding one output unit of the layer's linear operator (LeCun's fan_in).

    Conv2d: c_in/groups * kh * kw; Linear: in_features. A ConvTranspose2d with
    stride s is the adjoint of a strided conv: an output pixel receives on average
    kh*kw/(sh*sw) kernel taps from each of its c_in/groups input channels, so its
    operator fan_in is (c_in/groups) * kh*kw / (sh*sw) (exact when s divides k).
    torch's ``_calculate_fan_in_and_fan_out`` instead returns c_out/groups*kh*kw for
    transposed convs, which is the adjoint's fan_in, not this operator's.
    """
    if isinstance(layer, nn.Linear):
        return float(layer.in_features)
    if isinstance(layer, nn.ConvTranspose2d):
        kh, kw = layer.kernel_size
        sh, sw = layer.stride
        return layer.in_channels / layer.groups * kh * kw / (sh * sw)
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return layer.in_channels / layer.groups * kh * kw
    raise TypeError(f"fan_in: unsupported layer type {type(layer).__name__}")
