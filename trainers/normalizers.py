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

See docs/NORMALIZERS.md for formulas, paper sections and the DDP / torch.compile notes.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = [
    "GAMMA_NAME",
    "LAYER_TYPES",
    "METHODS",
    "OPTIONS",
    "MethodInfo",
    "apply",
    "describe",
    "effective_weight",
    "fan_in",
    "input_size",
    "layers",
    "materialize",
    "out_dim",
    "raw_weight",
    "sigma",
    "update",
]

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
"""The layer types whose ``weight`` a normalizer touches (biases never, except gamma)."""

OPTIONS: dict[str, Any] = {"eps": 1e-12, "grad_through_uv": False}
"""Valid keyword options of :func:`apply` and their defaults (accepted by every method)."""

GAMMA_NAME = "normalizer_gamma"
"""Attribute name of the trainable gamma (on the root for ``*_gamma_same``, on each layer for ``_diff``)."""


# --------------------------------------------------------------------------------------
# small helpers shared with trainers.diagnostics
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# power-iteration states
# --------------------------------------------------------------------------------------
class _PowerState(nn.Module):
    """One persisted power-iteration state for the top singular value of a linear map M(W).

    Buffers: ``_u`` (the persisted vector, M's domain) and ``_v = l2n(M u)`` (its image,
    kept only so eval mode can use sigma = <v, M u> without iterating).

    Train mode, one un-persisted iteration on the current W (PAPER.md §1.2):
    ``q = l2n(M u); u' = l2n(M^T q); sigma = <q, M u'>``. With ``grad_through_uv``
    False, q and u' are computed without autograd and cached while (W, u) are
    unchanged (keyed on their version counters and storage), so the forwards of one D
    update share the same vectors *and* the iteration is paid once. ``step`` never
    trusts the cache (fused optimizers write W without bumping its version) and
    re-seeds it for the next update's forwards. Only detached
    vectors are cached, never the normalized weight: a cached graph node would break
    a second ``backward`` (D(real).backward(); D(fake).backward()) or leak a no-grad
    result into a grad-mode forward.
    """

    _u: Tensor
    _v: Tensor

    def __init__(self, eps: float, grad_through_uv: bool) -> None:
        super().__init__()
        self.eps = eps
        self.grad_through_uv = grad_through_uv
        self._cache_key: tuple | None = None
        self._cache_val: tuple[Tensor, Tensor] | None = None

    # subclasses: the operator and its adjoint, given the prepared weight
    def _prepare(self, weight: Tensor) -> Tensor:
        return weight

    def _fwd(self, op: Tensor, x: Tensor) -> Tensor:  # M x
        raise NotImplementedError

    def _adj(self, op: Tensor, y: Tensor) -> Tensor:  # M^T y
        raise NotImplementedError

    def _pair(self, op: Tensor, q: Tensor, p: Tensor) -> Tensor:  # <q, M p>
        return torch.sum(q * self._fwd(op, p))

    def ready(self) -> bool:
        return True

    def _fallback_sigma(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _key(self, weight: Tensor) -> tuple | None:
        if torch.compiler.is_compiling() or torch.is_inference_mode_enabled():
            # version counters are not traceable, and inference tensors cannot be saved
            # for a later backward: recompute (a few matvecs) instead of caching
            return None
        try:
            return (
                weight._version,
                weight.data_ptr(),
                weight.device,
                weight.dtype,
                self._u._version,
                self._u.data_ptr(),
            )
        except RuntimeError:  # functorch wrappers / inference tensors have no version counter
            return None

    def _iterate(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(q, u') of one iteration from the stored u, without autograd, cached."""
        key = self._key(weight)
        if key is not None and key == self._cache_key and self._cache_val is not None:
            return self._cache_val
        with torch.no_grad():
            op = self._prepare(weight.detach())
            q = _l2n(self._fwd(op, self._u), self.eps)
            p = _l2n(self._adj(op, q), self.eps)
        if key is not None:
            self._cache_key, self._cache_val = key, (q, p)
        return q, p

    def sigma(self, weight: Tensor) -> Tensor:
        """Estimated top singular value, differentiable w.r.t. ``weight``."""
        if not self.ready():
            return self._fallback_sigma(weight)
        op = self._prepare(weight)
        if not self.training:
            # clone: a later in-place update() must not invalidate this graph
            return self._pair(op, self._v.clone(), self._u.clone())
        if self.grad_through_uv:
            q = _l2n(self._fwd(op, self._u.clone()), self.eps)  # clone: update() writes u in place
            p = _l2n(self._adj(op, q), self.eps)
            return self._pair(op, q, p)
        q, p = self._iterate(weight)
        return self._pair(op, q, p)

    @torch.no_grad()
    def step(self, weight: Tensor) -> None:
        """Persist u <- u' computed on the current weight (one iteration)."""
        if not self.ready():
            return
        # Always a fresh iteration, never the forward cache: fused optimizers
        # (``Adam(fused=True)``) change W in place without bumping its version counter,
        # and update() must use the post-step weights.
        op = self._prepare(weight.detach())
        p = _l2n(self._adj(op, _l2n(self._fwd(op, self._u), self.eps)), self.eps)
        # in place: DataParallel replicas and DDP's buffer list keep pointing at these tensors
        self._u.copy_(p)
        q = _l2n(self._fwd(op, p), self.eps)
        self._v.copy_(q)
        # q is also the next forward's first half-step (same W, new u): finish that
        # iteration now and cache it, so the forwards of the next update only pair.
        key = self._key(weight)
        if key is not None:
            self._cache_key, self._cache_val = key, (q, _l2n(self._adj(op, q), self.eps))

    def _apply(self, fn: Callable, recurse: bool = True) -> nn.Module:  # type: ignore[override]
        # .to()/.cuda()/.half() replace the buffers: drop the vectors cached for the old ones
        self._cache_key, self._cache_val = None, None
        return super()._apply(fn, recurse)


class _MatrixPower(_PowerState):
    """Power iteration on the reshaped kernel ``W_m = reshape(W, dim x rest)``.

    ``_u`` lives on the ``dim`` side (c_out for Miyato's SN, as in the TF code's
    ``u`` of shape [1, c_out]) and ``_v`` on the "rest" side; M = W_m^T, so the train
    iteration is exactly TF's ``v = l2n(u W_m); u' = l2n(v W_m^T); sigma = u' W_m v^T``
    and the layout matches torch's ``spectral_norm`` (``_u``: h, ``_v``: w).
    """

    def __init__(self, weight: Tensor, dim: int, eps: float, grad_through_uv: bool) -> None:
        super().__init__(eps, grad_through_uv)
        self.dim = dim
        with torch.no_grad():
            wm = _matrix(weight.detach(), dim)
            # global torch RNG at apply() time, no warm-up iterations (TF initialises u
            # from a normal and iterates only during training)
            u = _l2n(torch.randn(wm.shape[0], dtype=wm.dtype, device=wm.device), eps)
            v = _l2n(torch.mv(wm.t(), u), eps)  # only so eval mode before update() is sane
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)

    def _prepare(self, weight: Tensor) -> Tensor:
        # Views only: a permuted copy of W per call would cost more than the matvecs.
        # dim 0: the (c_out, rest) matrix itself. dim 1 of a kernel (c_out, c_in, kh, kw):
        # the (c_out, c_in, kh*kw) view, on which W_m^T x and W_m y are batched matvecs.
        if self.dim == 0:
            return weight.flatten(1)
        if self.dim == 1 and weight.dim() == 2:
            return weight.t()
        if self.dim == 1:
            return weight.flatten(2)
        return _matrix(weight, self.dim)

    def _fwd(self, op: Tensor, x: Tensor) -> Tensor:  # W_m^T x
        if op.dim() == 3:  # sum_b x[b] W[a, b, k] -> (a, k)
            return torch.matmul(x, op).flatten()
        return torch.mv(op.t(), x)

    def _adj(self, op: Tensor, y: Tensor) -> Tensor:  # W_m y
        if op.dim() == 3:  # sum_{a,k} W[a, b, k] y[a, k] -> (b,)
            a, _, k = op.shape
            return torch.bmm(y.view(a, 1, k), op.transpose(1, 2)).sum(0).squeeze(0)
        return torch.mv(op, y)

    def _pair(self, op: Tensor, q: Tensor, p: Tensor) -> Tensor:  # u'^T W_m v
        if op.dim() == 3:
            return torch.dot(q, self._fwd(op, p))
        r = torch.mv(op, q)
        return torch.dot(p.to(r.dtype), r)  # torch's spectral_norm order of operations

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}, grad_through_uv={self.grad_through_uv}"


class _ConvPower(_PowerState):
    """Power iteration on the layer's true linear operator (SNConv, PAPER.md §1.3).

    ``_u`` has the layer's input shape (1, c_in, H, W) and is created lazily: the
    spatial size is learnt from the first forward (a forward pre-hook calls
    :meth:`observe`), because the operator norm depends on it. Until then the buffers
    are empty tensors; ``_load_from_state_dict`` resizes them to the incoming shape so a
    checkpoint loads into a freshly built (not yet run) module. Resizing is done in
    place so references held by DDP stay valid; still, run :func:`materialize` before
    wrapping in DDP or torch.compile so the state exists on every rank from the start.
    The random start vector comes from a private generator seeded (from the global
    RNG) at ``apply`` time, so the first forward consumes no global randomness.
    Only zero padding is supported: other padding modes are different operators.
    """

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d, eps: float, grad_through_uv: bool) -> None:
        super().__init__(eps, grad_through_uv)
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        if layer.padding_mode != "zeros":
            raise ValueError(f"snconv supports padding_mode='zeros' only, got {layer.padding_mode!r}")
        self.kernel_size = tuple(layer.kernel_size)
        self.stride = tuple(layer.stride)
        self.dilation = tuple(layer.dilation)
        self.groups = layer.groups
        self.in_channels = layer.in_channels
        self.padding = self._numeric_padding(layer)
        self.output_padding = tuple(layer.output_padding) if self.transposed else (0, 0)
        self._seed = int(torch.randint(0, 2**62, (1,)).item())
        self._warned = False
        w = raw_weight(layer)
        self.register_buffer("_u", torch.empty(0, dtype=w.dtype, device=w.device))
        self.register_buffer("_v", torch.empty(0, dtype=w.dtype, device=w.device))

    @staticmethod
    def _numeric_padding(layer: nn.Conv2d | nn.ConvTranspose2d) -> tuple[int, int]:
        pad = layer.padding
        if pad == "valid":
            return (0, 0)
        if pad == "same":
            total = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size, strict=True)]
            if any(t % 2 for t in total):
                raise ValueError(
                    "snconv needs symmetric padding; padding='same' with an even "
                    f"dilation*(kernel-1) = {total} is asymmetric"
                )
            return (total[0] // 2, total[1] // 2)
        return (int(pad[0]), int(pad[1]))  # type: ignore[index]

    def ready(self) -> bool:
        return self._u.numel() > 0

    @property
    def input_hw(self) -> tuple[int, int] | None:
        return (int(self._u.shape[-2]), int(self._u.shape[-1])) if self.ready() else None

    def _adj_output_padding(self) -> tuple[int, int]:
        """output_padding that makes conv_transpose2d return exactly the learnt input size."""
        hw = self.input_hw
        assert hw is not None
        out = []
        for n, k, s, p, d in zip(hw, self.kernel_size, self.stride, self.padding, self.dilation, strict=True):
            n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
            out.append(n - ((n_out - 1) * s - 2 * p + d * (k - 1) + 1))
        return (out[0], out[1])

    def _fwd(self, op: Tensor, x: Tensor) -> Tensor:
        if self.transposed:
            return F.conv_transpose2d(
                x, op, None, self.stride, self.padding, self.output_padding, self.groups, self.dilation
            )
        return F.conv2d(x, op, None, self.stride, self.padding, self.dilation, self.groups)

    def _adj(self, op: Tensor, y: Tensor) -> Tensor:
        if self.transposed:
            return F.conv2d(y, op, None, self.stride, self.padding, self.dilation, self.groups)
        return F.conv_transpose2d(
            y, op, None, self.stride, self.padding, self._adj_output_padding(), self.groups, self.dilation
        )

    def _fallback_sigma(self, weight: Tensor) -> Tensor:
        # Only reached when the weight is read before the first forward (e.g. by the
        # registration check): the exact reshaped-kernel norm, a lower bound of the
        # operator norm (||w_hat|| <= ||w_tilde||, paper §4). No state, no RNG.
        mat = _matrix(weight, 1 if self.transposed else 0)
        return torch.linalg.matrix_norm(mat, ord=2)

    @torch.no_grad()
    def _materialize(self, hw: tuple[int, int], weight: Tensor) -> None:
        gen = torch.Generator().manual_seed(self._seed)
        u = torch.randn((1, self.in_channels, *hw), generator=gen, dtype=torch.float32)
        u = _l2n(u.to(device=weight.device, dtype=weight.dtype), self.eps)
        v = _l2n(self._fwd(weight.detach(), u), self.eps)
        self._u.resize_(u.shape).copy_(u)
        self._v.resize_(v.shape).copy_(v)
        self._cache_key, self._cache_val = None, None

    def observe(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook: learn the input spatial size at the first forward."""
        if not args or not isinstance(args[0], Tensor) or args[0].dim() < 3:
            return
        hw = (int(args[0].shape[-2]), int(args[0].shape[-1]))
        if not self.ready():
            self._materialize(hw, raw_weight(module))
        elif hw != self.input_hw and not self._warned and not torch.compiler.is_compiling():
            self._warned = True
            warnings.warn(
                f"snconv: layer learnt input size {self.input_hw} but got {hw}; sigma stays the operator "
                "norm for the learnt size",
                stacklevel=2,
            )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        # the buffers are created lazily: adopt the checkpoint's shapes before copying
        with torch.no_grad():
            for name in ("_u", "_v"):
                incoming = state_dict.get(prefix + name)
                buf = getattr(self, name)
                if isinstance(incoming, Tensor) and incoming.shape != buf.shape:
                    buf.resize_(incoming.shape)
        self._cache_key, self._cache_val = None, None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def extra_repr(self) -> str:
        return f"input_hw={self.input_hw}, stride={self.stride}, padding={self.padding}, eps={self.eps}"


# --------------------------------------------------------------------------------------
# the parametrizations
# --------------------------------------------------------------------------------------
class _Normalize(nn.Module):
    """weight -> gamma * scale * weight / sigma, sigma = mean of the power states' estimates.

    One state: SN / SNConv. Two states (dim c_out and dim c_in): BSN, whose
    sigma = (sigma_1 + sigma_2) / 2 (PAPER.md §1.4).
    """

    def __init__(self, powers: list[_PowerState], scale: float, gamma_owner: nn.Module | None) -> None:
        super().__init__()
        self.powers = nn.ModuleList(powers)
        self.scale = float(scale)
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
        coef = self.scale / self.sigma(weight)
        if self._gamma_owner is not None:
            coef = coef * getattr(self._gamma_owner, GAMMA_NAME)
        return weight * coef

    def step(self, weight: Tensor) -> None:
        for p in self.powers:
            p.step(weight)  # type: ignore[operator]

    def extra_repr(self) -> str:
        return f"scale={self.scale}, gamma={'yes' if self._gamma_owner is not None else 'no'}"


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
            parametrize.register_parametrization(m, "weight", _Normalize(powers, scale, owner))
            if owner is not None and m.bias is not None:
                parametrize.register_parametrization(m, "bias", _GammaBias(owner))
            if isinstance(powers[0], _ConvPower):
                m.register_forward_pre_hook(powers[0].observe)
        return module

    return factory


@dataclass(frozen=True)
class MethodInfo:
    """One catalogue entry: what it is, where it comes from, how it is built."""

    name: str
    description: str
    """One line, for ``sweeper normalizers`` and reports."""
    paper: str
    """Where the method is defined, e.g. "§2, Miyato et al."."""
    formula: str
    factory: Callable[[nn.Module, float, dict[str, Any]], nn.Module]
    normalized: bool = True
    """False for ``none`` and ``lecun`` (no parametrization, ``update`` is a no-op)."""
    gamma: str | None = None
    """``same`` / ``diff`` for the learnable-γ variants (trained with WGAN-GP, App. O)."""


_S1 = "σ(W_{c_out×c_in·kh·kw})"
_S2 = "σ(W_{c_in×c_out·kh·kw})"


def _info(name: str, description: str, paper: str, formula: str, factory: Callable, **kw: Any) -> MethodInfo:
    return MethodInfo(name, description, paper, formula, factory, **kw)


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in [
        _info(
            "none",
            "no normalization (the 'Without SN' baseline); scale is ignored",
            "§1.1 / App. J-K, Lin et al.",
            "W̄ = W",
            _none,
            normalized=False,
        ),
        _info(
            "sn",
            "spectral norm of the reshaped kernel (SNw); SSN when scale != 1",
            "§2, Miyato et al.; §5.2 (SSN), Lin et al.",
            f"W̄ = c·W / {_S1}",
            _spectral("sn", None),
        ),
        _info(
            "snconv",
            "spectral norm of the convolution operator for the layer's input size",
            "§2 and §4, Lin et al. (power iteration of Gouk et al.)",
            "W̄ = c·W / ‖w̃‖_sp (conv operator)",
            _spectral("snconv", None),
        ),
        _info(
            "bsn",
            "bidirectional SN: mean of both kernel reshapes' norms; BSSN when scale != 1",
            "§5.1 (BSN), §5.2 (BSSN), Lin et al.",
            f"W̄ = c·W / (({_S1} + {_S2}) / 2)",
            _spectral("bsn", None),
        ),
        _info(
            "sn_gamma_same",
            "SN times one trainable γ shared by all layers (weights and biases)",
            "App. O, Lin et al. (after Miyato et al.)",
            f"W̄ = γ·c·W / {_S1}; b̄ = γ·b",
            _spectral("sn", "same"),
            gamma="same",
        ),
        _info(
            "sn_gamma_diff",
            "SN times a trainable γ per layer (weights and biases)",
            "App. O, Lin et al. (after Miyato et al.)",
            f"W̄_l = γ_l·c·W_l / {_S1}; b̄_l = γ_l·b_l",
            _spectral("sn", "diff"),
            gamma="diff",
        ),
        _info(
            "bsn_gamma_same",
            "BSN times one trainable γ shared by all layers (weights and biases)",
            "App. O / Table 6, Lin et al.",
            f"W̄ = γ·c·W / (({_S1} + {_S2}) / 2); b̄ = γ·b",
            _spectral("bsn", "same"),
            gamma="same",
        ),
        _info(
            "bsn_gamma_diff",
            "BSN times a trainable γ per layer (weights and biases)",
            "App. O / Table 6, Lin et al.",
            f"W̄_l = γ_l·c·W_l / (({_S1} + {_S2}) / 2); b̄_l = γ_l·b_l",
            _spectral("bsn", "diff"),
            gamma="diff",
        ),
        _info(
            "lecun",
            "no normalization; weights re-initialised N(0, (scale/sqrt(fan_in))^2), zero biases",
            "§5.2, Fig. 8, App. M, Lin et al.",
            "W ~ N(0, c²/fan_in), b = 0",
            _lecun,
            normalized=False,
        ),
    ]
}


# --------------------------------------------------------------------------------------
# the public API
# --------------------------------------------------------------------------------------
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
