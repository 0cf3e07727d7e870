"""Persisted power-iteration states: one (u, v) pair per estimated top singular value.

``_MatrixPower`` iterates on a reshaped kernel (SN, both halves of BSN);
``_ConvPower`` on the convolution operator itself (SNConv). Both are
``nn.Module``s whose only state is the ``_u`` / ``_v`` buffers, so ``state_dict``,
``.to()``, DDP and ``torch.func.stack_module_state`` see them like any buffer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.normalizers.common import _l2n, _matrix, raw_weight

_functorch = torch._C._functorch


def _physical(t: Tensor) -> Tensor | None:
    """The tensor whose version counter and storage identify ``t`` for the forward cache.

    ``t`` itself, or, under exactly one ``vmap`` (trainers.packed), the stacked tensor the
    per-member wrapper stands for: vmap makes a fresh wrapper for every call, without a
    version counter of its own, but the stacked parameters and buffers it wraps persist
    and are written in place (by the optimizer, by ``step``) like a solo run's. Under
    any other transform (``grad``, nested ``vmap``) None: no cache, recompute.
    """
    if not _functorch.is_functorch_wrapped_tensor(t):
        return t
    if _functorch.is_batchedtensor(t):
        inner = _functorch.get_unwrapped(t)
        if not _functorch.is_functorch_wrapped_tensor(inner):
            return inner
    return None


def _mv(a: Tensor, x: Tensor) -> Tensor:
    """``torch.mv(a, x)``; under vmap ``x @ a^T``, the same numbers (bitwise on CPU) but fast.

    vmap turns ``mv`` into a matrix @ column-vector ``bmm``, which MKL runs 5x to 10x
    slower than the row-vector @ matrix form that ``x @ a^T`` becomes; unbatched, ``mv``
    is the faster of the two.
    """
    if _functorch.is_batchedtensor(a) or _functorch.is_batchedtensor(x):
        return x @ a.t()
    return torch.mv(a, x)


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

    The cached vectors live in two non-persistent buffers (``_cq``, ``_cp``; not in
    ``state_dict``) rather than in Python attributes, so ``torch.func.stack_module_state``
    stacks them with u and v and a ``vmap``'ed forward over stacked members reads and
    writes them like any buffer; see :func:`_physical` for the key under vmap. A forward
    gets clones, because ``step`` overwrites the buffers in place.
    """

    _u: Tensor
    _v: Tensor
    _cq: Tensor
    _cp: Tensor

    def __init__(self, eps: float, grad_through_uv: bool) -> None:
        super().__init__()
        self.eps = eps
        self.grad_through_uv = grad_through_uv
        self._cache_key: tuple | None = None

    def _register_vectors(self, u: Tensor, v: Tensor) -> None:
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)
        self.register_buffer("_cq", torch.zeros_like(v), persistent=False)  # cached q (v's side)
        self.register_buffer("_cp", torch.zeros_like(u), persistent=False)  # cached u' (u's side)

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
        w, u, cq = _physical(weight), _physical(self._u), _physical(self._cq)
        if w is None or u is None or cq is None:
            return None
        try:
            return (w._version, w.data_ptr(), w.device, w.dtype, u._version, u.data_ptr(), cq.data_ptr())
        except RuntimeError:  # inference tensors have no version counter
            return None

    @torch.no_grad()
    def _store(self, key: tuple | None, q: Tensor, p: Tensor) -> None:
        if key is not None:
            self._cq.copy_(q)
            self._cp.copy_(p)
            self._cache_key = key

    def _iterate(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(q, u') of one iteration from the stored u, without autograd, cached."""
        key = self._key(weight)
        if key is not None and key == self._cache_key:
            return self._cq.clone(), self._cp.clone()
        with torch.no_grad():
            op = self._prepare(weight.detach())
            q = _l2n(self._fwd(op, self._u), self.eps)
            p = _l2n(self._adj(op, q), self.eps)
        self._store(key, q, p)
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
            self._store(key, q, _l2n(self._adj(op, q), self.eps))

    def _apply(self, fn: Callable, recurse: bool = True) -> nn.Module:  # type: ignore[override]
        # .to()/.cuda()/.half() replace the buffers: drop the vectors cached for the old ones
        self._cache_key = None
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
        self._register_vectors(u, v)

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
        return _mv(op.t(), x)

    def _adj(self, op: Tensor, y: Tensor) -> Tensor:  # W_m y
        if op.dim() == 3:  # sum_{a,k} W[a, b, k] y[a, k] -> (b,)
            a, _, k = op.shape
            return torch.bmm(y.view(a, 1, k), op.transpose(1, 2)).sum(0).squeeze(0)
        return _mv(op, y)

    def _pair(self, op: Tensor, q: Tensor, p: Tensor) -> Tensor:  # u'^T W_m v
        if op.dim() == 3:
            return torch.dot(q, self._fwd(op, p))
        r = _mv(op, q)
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
        empty = torch.empty(0, dtype=w.dtype, device=w.device)
        self._register_vectors(empty, empty.clone())

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
        self._cp.resize_(u.shape)
        self._cq.resize_(v.shape)
        self._cache_key = None

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
                    getattr(self, "_cp" if name == "_u" else "_cq").resize_(incoming.shape)
        self._cache_key = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def extra_repr(self) -> str:
        return f"input_hw={self.input_hw}, stride={self.stride}, padding={self.padding}, eps={self.eps}"
