"""The catalogue of discriminator weight normalizers studied by Lin, Sekar & Fanti (2021).

One line puts any of them into any discriminator::

    from trainers import normalizers
    normalizers.apply(D, "bsn", scale=1.2)      # BSSN, c = 1.2
    ...
    opt_d.step()
    normalizers.update(D)                       # one persisted power iteration per D update

Why parametrizations: every Conv2d / ConvTranspose2d / Linear weight gets a
``torch.nn.utils.parametrize`` parametrization, so ``layer.weight`` *is* the
normalized weight wherever it is read, the raw weight is a normal Parameter
(``parametrizations.weight.original``) the optimizer updates, the power-iteration
vectors are registered buffers (``state_dict``, ``.to(device)``, DDP buffer
broadcast and ``deepcopy`` all just work), and no model code branches on the
normalizer name.

Semantics follow the official TF code (PAPER.md §1.2, §8), not torch's own
``spectral_norm``:

* the persisted vector ``u`` advances exactly **one** power iteration per
  discriminator update, in :func:`update`, which the training loop calls after each
  D optimizer step (torch's ``spectral_norm`` instead advances on every train-mode
  forward, so D(real), D(fake) and the G step would each move it);
* every train-mode forward computes sigma from the stored ``u`` plus one extra,
  un-persisted iteration on the *current* weight; forwards are pure functions of
  (weight, u), so D(real), D(fake) and the G step of one update see the same sigma;
* eval-mode forwards run no iteration: sigma = u^T W v from the stored (u, v);
* ``l2n(x) = x / (||x|| + eps)`` (TF), not torch's ``x / max(||x||, eps)``;
* by default u and v are constants for autograd (PyTorch / compare_gan / mimicry);
  ``grad_through_uv=True`` lets gradients flow through the in-graph iteration as
  the official TF code does (it has no ``stop_gradient``).

Layout of the package: ``catalogue`` (``METHODS``, ``OPTIONS``: names and what they are,
importable without torch), ``common`` (layer helpers shared with the diagnostics), ``power``
(the persisted power-iteration states), ``parametrizations`` (the parametrization modules and
the factories that register them), ``api`` (apply, update, ...). This module re-exports
everything ``from trainers import normalizers`` users rely on; the torch-using names load on
first access, so listing the catalogue costs no torch import.

See docs/NORMALIZERS.md for formulas, paper sections and the DDP / torch.compile notes.
"""

from __future__ import annotations

import importlib
from typing import Any

from trainers.normalizers.catalogue import METHODS, OPTIONS, MethodInfo

_LAZY = {
    "apply": "api", "update": "api", "describe": "api", "sigma": "api", "input_size": "api", "materialize": "api",
    "GAMMA_NAME": "common", "LAYER_TYPES": "common", "effective_weight": "common", "fan_in": "common",
    "layers": "common", "out_dim": "common", "raw_weight": "common",
}  # fmt: skip

__all__ = ["METHODS", "OPTIONS", "MethodInfo", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    """The torch-using names, imported on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"trainers.normalizers.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trainers.normalizers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
