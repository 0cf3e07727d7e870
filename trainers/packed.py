"""Train K trials that share an architecture together, as one vectorized model (issue 8).

A sweep runs many trials of the *same* network that differ only in scalars (the
normalizer's scale, Adam's lr/betas, the seed, the normalizer itself). On a CPU a
small GAN step is mostly fixed per-op cost, so K trials stepped together cost little
more than one. :class:`PackedTrainer` stacks the K members' parameters on a leading
member dimension and runs every layer once for all of them:

* Linear layers are batched matmuls (``baddbmm``) over the member dimension;
  convolutions and transposed convolutions are *grouped* convolutions with
  ``groups=K`` on a ``(N, K*C, H, W)`` layout (group k = member k), in channels-last
  memory format, and BatchNorm on that layout keeps per-member statistics for free
  (its channels are (member, c)). Measured faster on CPU than ``torch.func.vmap`` over
  ``functional_call``, a Python loop over the K modules, and unfold + bmm
  (docs/PACKED.md, ``python -m benchmarks.bench_packed --layouts``).
* Adam is vectorized over the flat ``(K, P)`` parameter tensor with per-member lr and
  betas; the update is *bitwise* equal to ``torch.optim.Adam`` (its single-tensor CPU
  path: lerp, mul+addcmul, sqrt / bias correction + eps, addcdiv, same scalar rounding).
* sn/bsn keep per-member power-iteration state with the semantics of
  ``trainers.normalizers``: every forward of one D update uses the stored u plus one
  un-persisted iteration on the current weight (u, v constants for autograd unless
  ``grad_through_uv``), and u advances exactly once per D update. Members may mix
  ``none``/``sn``/``bsn``: sigma is bilinear in W for fixed vectors, so each layer keeps
  a pairing tensor P with sigma_k = <W_k, P_k> (zero, plus an offset of one, for
  ``none`` members, whose coefficient is then exactly 1).

Equivalence with :class:`trainers.loop.Trainer`: each member is built by literally
running the reference construction under its seed (``torch.manual_seed``,
``trainers.models.build``, ``normalizers.apply``) and its global-RNG stream is then
continued in a private ``torch.Generator`` (z and WGAN-GP alphas), next to its own
data generator (``seed + 1``). Step order (n_dis D updates on fresh batches, each
followed by one persisted power iteration, then a G update reusing the last z),
losses, evaluation latents and bookkeeping (best/best_step/history, divergence) are
the reference loop's. In float64 a pack matches K solo runs to ~1e-9 after 50 steps;
in float32 the difference is float32 round-off (grouped convs and batched matmuls sum
in another order) amplified by the GAN dynamics exactly as much as the reference's
own round-off is: see ``tests/test_packed.py`` and docs/PACKED.md for the tolerances.

A member that diverges (NaN/Inf or |loss| > its threshold) is frozen at the diverging
step (where the reference run ends): it draws no more random numbers and its rows of
every per-member tensor are restored from a snapshot after each later step, so it
neither changes nor influences the others (every packed op is independent per member).

Not supported (``can_pack`` says so): models other than ``sngan_cnn``/``mlp``,
normalizers other than ``none``/``sn``/``bsn``. Diagnostics (gradient norms, sigmas,
parameter variance, Prop. 1 bound) are not computed for packed members.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers import normalizers
from trainers.config import ConfigError, TrainConfig
from trainers.data import DatasetSource, make_source
from trainers.loop import CHECKPOINT_FILE, EVAL_LATENT_SEED, RESUMABLE_CHANGES, Progress, TrainResult
from trainers.metrics import direction, make_evaluator
from trainers.models import build as build_models

__all__ = [
    "PACKABLE_MODELS",
    "PACKABLE_NORMALIZERS",
    "PER_MEMBER_KEYS",
    "PackedTrainer",
    "can_pack",
]

PER_MEMBER_KEYS = frozenset(
    {
        "scale",
        "lr_g",
        "lr_d",
        "beta1",
        "beta2",
        "seed",
        "normalizer",
        "divergence_threshold",
        "checkpoint_every",
        "diagnostics",
    }
)
"""Config keys that may differ between the members of one pack; every other key must be equal.
(``diagnostics`` is accepted but ignored: packed members report no diagnostics.)"""
PACKABLE_MODELS = ("sngan_cnn", "mlp")
PACKABLE_NORMALIZERS = ("none", "sn", "bsn")
PACKED_CHECKPOINT_FILE = "packed_checkpoint.pt"
PACK_FORMAT = "snsweep-packed/1"
ADAM_EPS = 1e-8
"""torch.optim.Adam's default, which the reference loop uses (TF's default too)."""


# --------------------------------------------------------------------------------------
# can we pack?
# --------------------------------------------------------------------------------------
def can_pack(cfgs: Sequence[TrainConfig]) -> tuple[bool, str]:
    """(True, "") when ``cfgs`` can train as one pack, else (False, a one-line reason).

    The reason names every differing key with each member's value; only
    :data:`PER_MEMBER_KEYS` may differ.
    """
    cfgs = list(cfgs)
    if not cfgs:
        return False, "nothing to pack: no configurations"
    problems = []
    for i, c in enumerate(cfgs):
        if not isinstance(c, TrainConfig):
            return False, f"member {i} is a {type(c).__name__}, not a TrainConfig"
        if c.model not in PACKABLE_MODELS:
            problems.append(f"member {i}: model {c.model!r} cannot be packed (packable: {', '.join(PACKABLE_MODELS)})")
        if c.normalizer not in PACKABLE_NORMALIZERS:
            problems.append(
                f"member {i}: normalizer {c.normalizer!r} cannot be packed "
                f"(packable: {', '.join(PACKABLE_NORMALIZERS)})"
            )
    if problems:
        return False, "; ".join(problems)
    first = cfgs[0].to_dict()
    differing: dict[str, list[tuple[int, Any]]] = {}
    for i, c in enumerate(cfgs[1:], 1):
        d = c.to_dict()
        for key, value in first.items():
            if key not in PER_MEMBER_KEYS and d[key] != value:
                differing.setdefault(key, []).append((i, d[key]))
    if differing:
        detail = "; ".join(
            f"{key}: member 0 {first[key]!r} vs " + ", ".join(f"member {i} {v!r}" for i, v in values)
            for key, values in sorted(differing.items())
        )
        return False, (
            f"the configurations do not share an architecture: differing key(s) {', '.join(sorted(differing))} "
            f"({detail}); only {', '.join(sorted(PER_MEMBER_KEYS))} may differ within a pack"
        )
    return True, ""


def _normalizer_options(cfg: TrainConfig) -> dict:
    """Exactly ``Trainer._normalizer_options``."""
    opts = dict(cfg.options)
    if cfg.normalizer not in ("none", "lecun"):
        opts.setdefault("grad_through_uv", cfg.grad_through_uv)
    return opts


def _col(values: Sequence[float], like: Tensor, ndim: int = 2) -> Tensor:
    """Per-member scalars in ``like``'s dtype (float32: rounded as torch rounds a Python scalar),
    shaped (K, 1, ...) for broadcasting over stacked tensors."""
    return torch.tensor(list(values), dtype=like.dtype, device=like.device).view(-1, *([1] * (ndim - 1)))


# --------------------------------------------------------------------------------------
# stacked parameters and a vectorized Adam
# --------------------------------------------------------------------------------------
class _Params:
    """One network's parameters for all K members: a flat (K, P) tensor and (K, *shape) leaves.

    The leaves are views into ``flat`` that require grad, so autograd hands back one
    gradient per slot (concatenated into a (K, P) gradient for Adam) and the in-place
    optimizer update of ``flat`` is immediately what the next forward reads.
    """

    def __init__(self, per_member: list[list[Tensor]], device: torch.device):
        self.K = len(per_member)
        self.shapes = [tuple(t.shape) for t in per_member[0]]
        self.sizes = [math.prod(s) for s in self.shapes]
        with torch.no_grad():
            self.flat = torch.stack([torch.cat([t.detach().reshape(-1) for t in ts]) for ts in per_member]).to(device)
        self.leaves: list[Tensor] = []
        self._grad: Tensor | None = None
        offset = 0
        for shape, n in zip(self.shapes, self.sizes, strict=True):
            leaf = self.flat[:, offset : offset + n].view(self.K, *shape)
            leaf.requires_grad_(True)
            self.leaves.append(leaf)
            offset += n

    def grad(self, loss: Tensor) -> Tensor:
        """d loss / d flat as a (K, P) tensor (written into one reused buffer)."""
        grads = torch.autograd.grad(loss, self.leaves)
        if self._grad is None:
            self._grad = torch.empty_like(self.flat)
        return torch.cat([g.reshape(self.K, -1) for g in grads], 1, out=self._grad)

    def member(self, k: int) -> list[Tensor]:
        return [t.detach() for t in self.split(self.flat[k])]

    def split(self, row: Tensor) -> list[Tensor]:
        return [part.view(shape) for part, shape in zip(row.split(self.sizes), self.shapes, strict=True)]

    @torch.no_grad()
    def set_member(self, k: int, tensors: list[Tensor]) -> None:
        self.flat[k].copy_(torch.cat([t.detach().reshape(-1).to(self.flat) for t in tensors]))


class _Adam:
    """torch.optim.Adam (eps 1e-8, no weight decay) over a (K, P) tensor with per-member lr/betas.

    Bitwise equal to ``torch.optim.Adam``'s single-tensor CPU update: bias corrections
    are Python doubles per member, rounded to float32 where torch rounds its scalars,
    and every elementwise op is the one torch uses, in the same order.
    """

    def __init__(self, params: _Params, lrs: Sequence[float], beta1s: Sequence[float], beta2s: Sequence[float]):
        self.params = params
        self.lrs, self.beta1s, self.beta2s = list(lrs), list(beta1s), list(beta2s)
        flat = params.flat
        self.m = torch.zeros_like(params.flat)
        self.v = torch.zeros_like(params.flat)
        self._tmp = torch.empty_like(params.flat)
        self._denom = torch.empty_like(params.flat)
        self.steps = 0
        self._w1 = _col([1 - b for b in self.beta1s], flat)
        self._b2 = _col(self.beta2s, flat)
        self._c2 = _col([1 - b for b in self.beta2s], flat)

    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        self.steps += 1
        s = float(self.steps)
        neg_step = _col([-(lr / (1 - b1**s)) for lr, b1 in zip(self.lrs, self.beta1s, strict=True)], grad)
        bc2_sqrt = _col([(1 - b2**s) ** 0.5 for b2 in self.beta2s], grad)
        # Two reused buffers instead of four fresh (K, P) temporaries per step: large short-lived
        # allocations cost page faults with glibc's default malloc settings (docs/PACKED.md).
        tmp, denom = self._tmp, self._denom
        self.m.lerp_(grad, self._w1)  # exp_avg.lerp_(grad, 1 - beta1)
        torch.mul(self._c2, grad, out=tmp)
        self.v.mul_(self._b2).addcmul_(tmp, grad)  # exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
        torch.sqrt(self.v, out=denom)
        denom.div_(bc2_sqrt).add_(ADAM_EPS)  # (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
        torch.mul(neg_step, self.m, out=tmp)
        self.params.flat.addcdiv_(tmp, denom)  # param.addcdiv_(exp_avg, denom, value=-step_size)


# --------------------------------------------------------------------------------------
# per-member power iteration (trainers.normalizers semantics)
# --------------------------------------------------------------------------------------
def _l2n(x: Tensor, eps: float) -> Tensor:
    """Row-wise TF ``x / (||x|| + eps)`` (normalizers._l2n per member)."""
    return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)


class _Power:
    """One persisted power-iteration state (normalizers._MatrixPower) for all K members.

    ``dim`` 0: the (c_out, rest) reshape, u on c_out (SN, BSN's sigma_1, every Linear);
    ``dim`` 1: the (c_in, c_out*kh*kw) reshape of a conv kernel (BSN's sigma_2).
    Members without this state hold u = 0, whose iteration is exactly 0 (l2n(0) = 0), so
    every member runs the same batched ops and no gather/scatter is needed.
    """

    def __init__(self, K: int, dim: int, u: Tensor, v: Tensor, eps: float):
        self.K, self.dim, self.eps = K, dim, eps
        self.u, self.v = u, v

    def matrix(self, w: Tensor) -> Tensor:
        """(K, rows, cols) matrices of the members' weights (rows = u's side)."""
        if self.dim == 0:
            return w.reshape(w.shape[0], w.shape[1], -1)
        return w.transpose(1, 2).reshape(w.shape[0], w.shape[2], -1)

    def iterate(self, m: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """One power iteration from u: (q, p) = (l2n(M^T u), l2n(M q)); sigma = p^T M q."""
        q = _l2n(torch.bmm(u.unsqueeze(1), m).squeeze(1), self.eps)
        p = _l2n(torch.bmm(m, q.unsqueeze(2)).squeeze(2), self.eps)
        return q, p

    @torch.no_grad()
    def add_pairing(self, P: Tensor, q: Tensor, p: Tensor, h: Tensor, first: bool) -> None:
        """P (+)= h * P_this in place, where p^T M q = <W, P_this> (P_this = p q^T reshaped back)."""
        K = P.shape[0]
        ph = p * h.view(K, 1)  # h in {0, 1/2, 1}: exact
        if self.dim == 0:
            a, b = ph.view(K, -1, 1), q.view(K, 1, -1)
            view = P.view(K, P.shape[1], -1)
        else:  # W[a, b, k] pairs with q[a, k] * p[b]
            a, b = q.view(K, P.shape[1], 1, -1), ph.view(K, 1, P.shape[2], 1)
            view = P.view(K, P.shape[1], P.shape[2], -1)
        if first:
            torch.mul(a, b, out=view)
        else:
            view.addcmul_(a, b)

    @torch.no_grad()
    def current(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """The un-persisted iteration on the current weight from the stored u."""
        return self.iterate(self.matrix(w.detach()), self.u)

    @torch.no_grad()
    def step(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Persist u <- u' on the post-step weight (normalizers._PowerState.step); return the next
        forward's iteration (the reference caches exactly this pair)."""
        m = self.matrix(w.detach())
        _, p = self.iterate(m, self.u)
        self.u.copy_(p)
        q2, p2 = self.iterate(m, self.u)
        self.v.copy_(q2)
        return q2, p2

    def sigma_through(self, w: Tensor) -> Tensor:
        """grad_through_uv: the iteration is part of the graph."""
        m = self.matrix(w)
        q, p = self.iterate(m, self.u)
        return (p * torch.bmm(m, q.unsqueeze(2)).squeeze(2)).sum(1)


class _LayerNorm:
    """Per-member weight coefficient ``scale / sigma`` of one D layer (exactly 1 for ``none``).

    sigma is bilinear in W for fixed power-iteration vectors, so with u/v constants for
    autograd (the default) ``sigma_k = <W_k, P_k>`` where the pairing tensor P (``p q^T``,
    times 1/2 for each of BSN's two reshapes) is refreshed after every D update. A ``none``
    member has P = 0 and an offset of 1, so its coefficient is 1/1*1 = 1 exactly.
    """

    def __init__(
        self, kinds: list[str], scales: list[float], p1: _Power, p2: _Power | None, like: Tensor, through: bool
    ):
        self.p1, self.p2 = p1, p2
        self.through = through
        normed = [k != "none" for k in kinds]
        bsn = [k == "bsn" and p2 is not None for k in kinds]
        self.h1 = _col([(0.5 if b else 1.0) if n else 0.0 for n, b in zip(normed, bsn, strict=True)], like, ndim=1)
        self.h2 = _col([0.5 if b else 0.0 for b in bsn], like, ndim=1)
        self.offset = _col([0.0 if n else 1.0 for n in normed], like, ndim=1)
        self.scale = _col([s if n else 1.0 for s, n in zip(scales, normed, strict=True)], like, ndim=1)
        self.P: Tensor | None = None

    def coef(self, w: Tensor) -> Tensor:
        if self.through:
            sigma = self.p1.sigma_through(w) * self.h1
            if self.p2 is not None:
                sigma = sigma + self.p2.sigma_through(w) * self.h2
        else:
            assert self.P is not None
            sigma = (w * self.P).flatten(1).sum(1)
        # the reference computes `scale / sigma` as sigma.reciprocal() * scale (Tensor.__rtruediv__)
        return (sigma + self.offset).reciprocal() * self.scale

    def _pairing(self, w: Tensor, it1: tuple[Tensor, Tensor], it2: tuple[Tensor, Tensor] | None) -> None:
        if self.P is None:
            self.P = torch.empty(w.shape, dtype=w.dtype, device=w.device)
        self.p1.add_pairing(self.P, *it1, self.h1, first=True)
        if it2 is not None:
            self.p2.add_pairing(self.P, *it2, self.h2, first=False)  # type: ignore[union-attr]

    def step(self, w: Tensor) -> None:
        it1 = self.p1.step(w)
        it2 = self.p2.step(w) if self.p2 is not None else None
        if not self.through:
            self._pairing(w, it1, it2)

    def refresh(self, w: Tensor) -> None:
        if not self.through:
            self._pairing(w, self.p1.current(w), self.p2.current(w) if self.p2 is not None else None)

    def powers(self) -> list[_Power]:
        return [p for p in (self.p1, self.p2) if p is not None]

    def rows(self) -> list[Tensor]:
        out = [t for p in self.powers() for t in (p.u, p.v)]
        return out + ([self.P] if self.P is not None else [])


# --------------------------------------------------------------------------------------
# the packed networks
# --------------------------------------------------------------------------------------
def _program(model: str, net: nn.Module, role: str) -> list[tuple]:
    """The reference forward of ``net`` as a list of packed ops (module names refer to ``net``).

    Layouts: "feat" (K, N, F) for Linear/MLP layers, "chan" (N, K*C, H, W) for convs.
    """
    ops: list[tuple] = []

    def seq(prefix: str, module: nn.Sequential) -> None:
        for name, m in module.named_children():
            full = f"{prefix}.{name}"
            if isinstance(m, nn.Linear):
                ops.append(("linear", full))
            elif isinstance(m, nn.Conv2d):
                ops.append(("conv", full))
            elif isinstance(m, nn.ConvTranspose2d):
                ops.append(("convT", full))
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                ops.append(("bn", full))
            elif isinstance(m, nn.ReLU):
                ops.append(("relu",))
            elif isinstance(m, nn.LeakyReLU):
                ops.append(("leaky", m.negative_slope))
            elif isinstance(m, nn.Tanh):
                ops.append(("tanh",))
            else:  # pragma: no cover - guarded by PACKABLE_MODELS
                raise ConfigError(f"packed {model}: unsupported layer {type(m).__name__} at {full}")

    if model == "mlp":
        seq("net", net.net)
        if role == "D":
            ops.append(("squeeze",))
    elif model == "sngan_cnn" and role == "G":
        ops += [("linear", "fc"), ("to_chan",), ("bn", "bn0"), ("relu",), ("view", net.c0, net.mg, net.mg)]
        seq("body", net.body)
    elif model == "sngan_cnn" and role == "D":
        seq("features", net.features)
        ops += [("to_feat",), ("linear", "fc"), ("squeeze",)]
    else:  # pragma: no cover
        raise ConfigError(f"model {model!r} cannot be packed")
    return ops


class _PackedNet:
    """G or D of all K members: stacked parameters/buffers and one forward for the pack."""

    def __init__(
        self,
        model: str,
        role: str,
        nets: list[nn.Module],
        device: torch.device,
        cfgs: list[TrainConfig] | None = None,
    ):
        self.K = len(nets)
        self.role = role
        self.program = _program(model, nets[0], role)
        self.nets = nets
        mods = [dict(n.named_modules()) for n in nets]
        self.modules = mods
        # parameter slots: (module name, "weight" | "bias"), raw (un-normalized) weights
        self.slots: list[tuple[str, str]] = []
        for op in self.program:
            if op[0] in ("linear", "conv", "convT", "bn"):
                self.slots += [(op[1], "weight"), (op[1], "bias")]
        self.slot_index = {s: i for i, s in enumerate(self.slots)}
        self.params = _Params([self._member_params(k) for k in range(self.K)], device)
        # BatchNorm running statistics, (K, C) each, and per-member batch counters
        self.bn: dict[str, dict[str, Tensor]] = {}
        for op in self.program:
            if op[0] == "bn":
                ms = [m[op[1]] for m in mods]
                self.bn[op[1]] = {
                    "mean": torch.stack([b.running_mean for b in ms]).to(device),
                    "var": torch.stack([b.running_var for b in ms]).to(device),
                    "count": torch.stack([b.num_batches_tracked for b in ms]).to(device),
                }
        self._bn_inputs: list[tuple[str, Tensor]] = []
        self.channels_last: set[str] = {op[1] for op in self.program if op[0] in ("conv", "convT")}
        """Conv layers run in channels-last memory format: oneDNN's grouped (transposed) convolutions
        with few channels per group are up to 2x faster in NHWC on CPU (measured, docs/PACKED.md)."""
        # normalization (D only)
        self.norms: dict[str, _LayerNorm] = {}
        if role == "D":
            assert cfgs is not None
            kinds = [c.normalizer for c in cfgs]
            for op in self.program:
                if op[0] in ("linear", "conv"):
                    norm = self._layer_norm(op[1], kinds, [c.scale for c in cfgs], self.params.flat)
                    if norm is not None:
                        self.norms[op[1]] = norm

    # --- construction helpers ------------------------------------------------------
    def _tensor(self, k: int, name: str, kind: str) -> Tensor:
        m = self.modules[k][name]
        if kind == "weight" and isinstance(m, normalizers.LAYER_TYPES):
            return normalizers.raw_weight(m)
        return getattr(m, kind)

    def _member_params(self, k: int) -> list[Tensor]:
        return [self._tensor(k, name, kind) for name, kind in self.slots]

    def _layer_norm(self, name: str, kinds: list[str], scales: list[float], like: Tensor) -> _LayerNorm | None:
        states = [_powers_of(self.modules[k][name]) for k in range(self.K)]
        normed = [k for k in range(self.K) if states[k]]
        if not normed:
            return None
        first = states[normed[0]][0]
        eps, through = first.eps, first.grad_through_uv
        for k in normed:
            for i, st in enumerate(states[k]):
                if st.dim != i or st.eps != eps or st.grad_through_uv != through:
                    raise ConfigError(f"packed D: unexpected power-iteration state at {name} of member {k}")

        def stacked(i: int) -> _Power | None:
            have = [k for k in range(self.K) if len(states[k]) > i]
            if not have:
                return None
            ref = states[have[0]][i]
            u = torch.stack(
                [states[k][i]._u if len(states[k]) > i else torch.zeros_like(ref._u) for k in range(self.K)]
            )
            v = torch.stack(
                [states[k][i]._v if len(states[k]) > i else torch.zeros_like(ref._v) for k in range(self.K)]
            )
            return _Power(self.K, i, u.detach().to(like.device), v.detach().to(like.device), eps)

        p1 = stacked(0)
        assert p1 is not None
        return _LayerNorm(kinds, scales, p1, stacked(1), like, through)

    # --- forward -------------------------------------------------------------------
    def weight(self, name: str) -> Tensor:
        return self.params.leaves[self.slot_index[(name, "weight")]]

    def bias(self, name: str) -> Tensor:
        return self.params.leaves[self.slot_index[(name, "bias")]]

    def effective(self, frozen: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
        """(weight, bias) each layer applies, ready for its op: normalized (``W * scale / sigma``)
        for D, reshaped to the grouped-conv / bmm layout and memory format.

        Computed once and shared by the forwards that see the same weights (D(real) and
        D(fake) of one update, as the reference's forwards share sigma). ``frozen``: constants
        for autograd (D inside the G step; gradients still flow to the input).
        """
        K = self.K
        out = {}
        for op in self.program:
            kind = op[0]
            if kind not in ("linear", "conv", "convT"):
                continue
            name = op[1]
            w, b = self.weight(name), self.bias(name)
            if frozen:
                w, b = w.detach(), b.detach()
            norm = self.norms.get(name)
            if norm is not None:
                with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
                    coef = norm.coef(w)
                w = w * coef.view(K, *([1] * (w.dim() - 1)))
            if kind == "linear":
                out[name] = (w.transpose(1, 2), b.unsqueeze(1))
            else:
                fmt = torch.channels_last if name in self.channels_last else torch.contiguous_format
                out[name] = (w.reshape(-1, *w.shape[2:]).contiguous(memory_format=fmt), b.reshape(-1))
        return out

    def forward(
        self,
        x: Tensor,
        train: bool,
        record_bn: bool = False,
        weights: dict[str, tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """All members' forward on the packed input ``x`` (``weights`` from :meth:`effective`)."""
        K = self.K
        if weights is None:
            weights = self.effective()
        if record_bn:
            self._bn_inputs = []
        for op in self.program:
            kind = op[0]
            if kind in ("linear", "conv", "convT"):
                name = op[1]
                w, b = weights[name]
                m = self.modules[0][name]
                if kind == "linear":
                    x = torch.baddbmm(b, x, w)
                    continue
                fmt = torch.channels_last if name in self.channels_last else torch.contiguous_format
                x = x.contiguous(memory_format=fmt)
                if kind == "conv":
                    x = F.conv2d(x, w, b, m.stride, m.padding, m.dilation, K * m.groups)
                else:
                    x = F.conv_transpose2d(x, w, b, m.stride, m.padding, m.output_padding, K * m.groups, m.dilation)
            elif kind == "bn":
                name = op[1]
                m, st = self.modules[0][name], self.bn[op[1]]
                if record_bn:
                    self._bn_inputs.append((name, x.detach()))
                x = F.batch_norm(
                    x,
                    st["mean"].view(-1),
                    st["var"].view(-1),
                    self.weight(name).reshape(-1),
                    self.bias(name).reshape(-1),
                    train,
                    m.momentum,
                    m.eps,
                )
                if train:
                    st["count"].add_(1)
            # activations in place: every tensor they overwrite is a fresh layer output that no
            # backward needs (linear/conv/BN save their inputs), and it saves an allocation each
            elif kind == "relu":
                x = torch.relu_(x)
            elif kind == "leaky":
                x = F.leaky_relu(x, op[1], inplace=True)
            elif kind == "tanh":
                x = torch.tanh_(x)
            elif kind == "to_chan":  # (K, N, F) -> (N, K*F)
                x = x.transpose(0, 1).reshape(x.shape[1], -1)
            elif kind == "to_feat":  # (N, K*C, H, W) -> (K, N, C*H*W)
                x = x.reshape(x.shape[0], K, -1).transpose(0, 1)
            elif kind == "view":  # (N, K*F) -> (N, K*c, h, w)
                x = x.view(x.shape[0], K * op[1], op[2], op[3])
            elif kind == "squeeze":
                x = x.squeeze(-1)
        return x

    @torch.no_grad()
    def replay_bn(self) -> None:
        """The running-statistics update of a second train-mode forward on the recorded inputs.

        The reference runs G(z) twice with the same z and weights (last D step, G step):
        identical batch statistics, two moving-average updates. Replaying the update on the
        recorded BN inputs is bitwise the same without the second forward's convolutions.
        """
        for name, x in self._bn_inputs:
            m, st = self.modules[0][name], self.bn[name]
            F.batch_norm(x, st["mean"].view(-1), st["var"].view(-1), None, None, True, m.momentum, m.eps)
            st["count"].add_(1)
        self._bn_inputs = []

    # --- normalizer state ------------------------------------------------------------
    def update_powers(self) -> None:
        for name, norm in self.norms.items():
            norm.step(self.weight(name))

    def refresh_powers(self) -> None:
        for name, norm in self.norms.items():
            norm.refresh(self.weight(name))

    # --- per-member rows, templates ---------------------------------------------------
    def rows(self) -> list[Tensor]:
        """Every per-member state tensor of this net (leading dimension = member)."""
        out = [self.params.flat]
        for st in self.bn.values():
            out += [st["mean"], st["var"], st["count"]]
        for norm in self.norms.values():
            out += norm.rows()
        return out

    @torch.no_grad()
    def push(self, k: int) -> nn.Module:
        """Write member k's packed state into its template module and return it."""
        for t, value in zip(self._member_params(k), self.params.member(k), strict=True):
            t.copy_(value)
        for name, st in self.bn.items():
            bn = self.modules[k][name]
            bn.running_mean.copy_(st["mean"][k])
            bn.running_var.copy_(st["var"][k])
            bn.num_batches_tracked.copy_(st["count"][k])
        for name, norm in self.norms.items():
            for st, p in zip(_powers_of(self.modules[k][name]), norm.powers(), strict=False):
                st._u.copy_(p.u[k])
                st._v.copy_(p.v[k])
                st._cache_key, st._cache_val = None, None
        return self.nets[k]

    @torch.no_grad()
    def pull(self, k: int) -> None:
        """Read member k's state from its template module into the pack."""
        self.params.set_member(k, self._member_params(k))
        for name, st in self.bn.items():
            bn = self.modules[k][name]
            st["mean"][k].copy_(bn.running_mean)
            st["var"][k].copy_(bn.running_var)
            st["count"][k].copy_(bn.num_batches_tracked)
        for name, norm in self.norms.items():
            for st, p in zip(_powers_of(self.modules[k][name]), norm.powers(), strict=False):
                p.u[k].copy_(st._u)
                p.v[k].copy_(st._v)

    def slot_of(self, k: int) -> dict[int, int]:
        """id(template parameter of member k) -> slot index."""
        return {id(t): i for i, t in enumerate(self._member_params(k))}


def _powers_of(layer: nn.Module) -> list[nn.Module]:
    """The power-iteration states of a normalized layer ([] for an un-normalized one)."""
    if not hasattr(layer, "parametrizations"):
        return []
    for p in layer.parametrizations.weight:  # type: ignore[union-attr]
        if hasattr(p, "powers"):
            return list(p.powers)
    return []


# --------------------------------------------------------------------------------------
# losses over the member dimension: (K, N) logits -> (K,) losses
# --------------------------------------------------------------------------------------
def _g_loss(name: str, logits: Tensor) -> Tensor:
    if name == "ns":
        return F.softplus(-logits).mean(1)
    return -logits.mean(1)


# --------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------
class PackedTrainer:
    """K trials of one architecture trained together; ``run()`` trains all to ``iterations``."""

    def __init__(self, cfgs: Sequence[TrainConfig]):
        cfgs = list(cfgs)
        ok, why = can_pack(cfgs)
        if not ok:
            raise ConfigError(f"cannot pack these {len(cfgs)} configurations: {why}")
        self.cfgs = cfgs
        self.cfg = cfg = cfgs[0]
        self.K = K = len(cfgs)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = torch.device(cfg.device)
        self.loss_name = cfg.resolved_loss
        self.image = cfg.model != "mlp"

        # --- members, built exactly as Trainer.__init__ builds them ---------------------
        self.source = make_source(cfg)
        outer_rng = torch.get_rng_state()
        G_nets, D_nets = [], []
        self.gens: list[torch.Generator] = []
        self._cpu_rng_after_init: list[Tensor] = []
        try:
            for c in cfgs:
                torch.manual_seed(c.seed)
                G, D = build_models(c)
                normalizers.apply(D, c.normalizer, c.scale, **_normalizer_options(c))
                gen = torch.Generator(device=self.device)
                if self.device.type == "cpu":
                    gen.set_state(torch.get_rng_state())  # the reference's z/alpha stream continues here
                else:
                    gen.manual_seed(c.seed)  # the reference draws z from the device's default generator
                self.gens.append(gen)
                self._cpu_rng_after_init.append(torch.get_rng_state())
                G_nets.append(G.train())
                D_nets.append(D.train())
        finally:
            torch.set_rng_state(outer_rng)
        self.sources = [
            DatasetSource(self.source.dataset, self.source.sampling)
            if isinstance(self.source, DatasetSource)
            else self.source
            for _ in cfgs
        ]
        self.data_rngs = [torch.Generator().manual_seed(c.seed + 1) for c in cfgs]
        self.eval_z = torch.randn(
            cfg.eval_samples, cfg.latent_dim, generator=torch.Generator().manual_seed(EVAL_LATENT_SEED)
        )
        self.evaluate_samples = make_evaluator(cfg, self.source)
        probe = (
            self.source
            if not isinstance(self.source, DatasetSource)
            else DatasetSource(self.source.dataset, "replacement")
        )
        self._sample_shape = tuple(probe.sample(1, torch.Generator().manual_seed(0)).shape[1:])

        # --- the packed model ------------------------------------------------------------
        self.G = _PackedNet(cfg.model, "G", G_nets, self.device)
        self.D = _PackedNet(cfg.model, "D", D_nets, self.device, cfgs)
        self.D.refresh_powers()
        self.opt_g = _Adam(self.G.params, [c.lr_g for c in cfgs], [c.beta1 for c in cfgs], [c.beta2 for c in cfgs])
        self.opt_d = _Adam(self.D.params, [c.lr_d for c in cfgs], [c.beta1 for c in cfgs], [c.beta2 for c in cfgs])

        # --- per-member bookkeeping (Trainer's) --------------------------------------------
        self.step = 0
        self.status = ["running"] * K
        self.errors = [""] * K
        self.frozen_step: list[int | None] = [None] * K
        self._snapshots: dict[int, list[Tensor]] = {}
        self.best: list[dict[str, float]] = [{} for _ in cfgs]
        self.best_step: list[dict[str, int]] = [{} for _ in cfgs]
        self.history: list[list[dict[str, float]]] = [[] for _ in cfgs]
        self._wall = [0.0] * K

    # --- members ----------------------------------------------------------------------
    @property
    def active(self) -> list[bool]:
        return [f is None for f in self.frozen_step]

    def member_step(self, k: int) -> int:
        f = self.frozen_step[k]
        return self.step if f is None else f

    def _rows(self) -> list[Tensor]:
        """Every per-member state tensor of the pack (leading dimension = member)."""
        return self.G.rows() + self.D.rows() + [self.opt_g.m, self.opt_g.v, self.opt_d.m, self.opt_d.v]

    @torch.no_grad()
    def _freeze(self, k: int) -> None:
        """Stop member k: snapshot its rows; they are restored after every later step."""
        if self.frozen_step[k] is None:
            self.frozen_step[k] = self.step
        self._snapshots[k] = [t[k].clone() for t in self._rows()]

    @torch.no_grad()
    def _restore_frozen(self) -> None:
        if not self._snapshots:
            return
        rows = self._rows()
        for k, saved in self._snapshots.items():
            for t, row in zip(rows, saved, strict=True):
                t[k].copy_(row)

    # --- one iteration ------------------------------------------------------------------
    def _real(self, n: int) -> Tensor:
        """Each running member's real batch from its own data generator (zeros for frozen members)."""
        parts = [
            self.sources[k].sample(n, self.data_rngs[k])
            if self.frozen_step[k] is None
            else torch.zeros(n, *self._sample_shape)
            for k in range(self.K)
        ]
        return self._pack(torch.stack(parts).to(self.device))

    def _draw(self, shape: tuple[int, ...], fn: Callable) -> Tensor:
        """Per-member draws from each member's private stream (zeros for frozen members)."""
        out = [
            fn(shape, generator=self.gens[k], device=self.device)
            if self.frozen_step[k] is None
            else torch.zeros(shape, device=self.device)
            for k in range(self.K)
        ]
        return torch.stack(out)

    def _pack(self, x: Tensor) -> Tensor:
        """(K, N, *sample) -> the packed layout of D's input."""
        if not self.image:
            return x
        K, N = x.shape[:2]
        return x.transpose(0, 1).reshape(N, K * x.shape[2], *x.shape[3:])

    def _unpack(self, x: Tensor) -> Tensor:
        """G's packed output -> (K, N, *sample)."""
        if not self.image:
            return x
        N = x.shape[0]
        return x.view(N, self.K, -1, *x.shape[2:]).transpose(0, 1)

    def _d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        name = self.loss_name
        # Two forwards, as the reference: one forward over [real; fake] would be faster, but it
        # changes how each bias gradient is summed, and where the reference's real and fake
        # halves cancel exactly (e.g. the last conv bias under a saturated hinge) a rounding
        # residue would be left that Adam's first steps blow up to ~lr. The normalized weights
        # (the reference's shared sigma) are computed once for both.
        weights = self.D.effective()
        d_real = self.D.forward(real, True, weights=weights)
        d_fake = self.D.forward(fake, True, weights=weights)
        if name == "hinge":
            return F.relu(1.0 - d_real).mean(1) + F.relu(1.0 + d_fake).mean(1)
        if name == "ns":
            return F.softplus(-d_real).mean(1) + F.softplus(d_fake).mean(1)
        # wgan_gp: per-sample interpolates with alpha from each member's stream (losses.gradient_penalty)
        b = self.cfg.batch_size
        if self.image:
            alpha = self._draw((b, 1, 1, 1), torch.rand)  # (K, N, 1, 1, 1)
            r, f = self._unpack(real), self._unpack(fake)
            x_hat = self._pack(r + alpha * (f - r)).requires_grad_(True)
        else:
            alpha = self._draw((b, 1), torch.rand)
            x_hat = (real + alpha * (fake - real)).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D.forward(x_hat, True, weights=weights).sum(), x_hat, create_graph=True)
        grad = self._unpack(grad).flatten(2)  # (K, N, features)
        slope = torch.sqrt(grad.pow(2).sum(2) + 1e-8)
        gp = ((slope - 1.0) ** 2).mean(1)
        return -d_real.mean(1) + d_fake.mean(1) + self.cfg.gp_weight * gp

    def train_step(self) -> tuple[list[float], list[float]]:
        """One iteration for every member: n_dis D updates, then one G update (Trainer.train_step)."""
        cfg, b = self.cfg, self.cfg.batch_size
        fake_g: Tensor | None = None
        z: Tensor | None = None
        loss_d = torch.zeros(self.K)
        for i in range(cfg.n_dis):
            real = self._real(b)
            z = self._draw((b, cfg.latent_dim), torch.randn)
            if i == cfg.n_dis - 1:
                # keep this forward's graph for the G step (same z, same G weights)
                fake_g = self.G.forward(z, True, record_bn=True)
                fake = fake_g.detach()
            else:
                with torch.no_grad():
                    fake = self.G.forward(z, True)
            loss_d = self._d_loss(real, fake)
            self.opt_d.step(self.D.params.grad(loss_d.sum()))
            self.D.update_powers()  # exactly one persisted power iteration per D update
        assert fake_g is not None
        self.G.replay_bn()  # the G step's forward would update BN statistics a second time
        loss_g = _g_loss(self.loss_name, self.D.forward(fake_g, True, weights=self.D.effective(frozen=True)))
        self.opt_g.step(self.G.params.grad(loss_g.sum()))
        self._restore_frozen()
        return loss_d.detach().tolist(), loss_g.detach().tolist()

    # --- evaluation ---------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, z: Tensor, chunk: int = 256) -> Tensor:
        """Eval-mode samples of every member for the same latents: (K, n, *sample)."""
        outs = []
        for c in z.split(chunk):
            zc = c.to(self.device).unsqueeze(0).expand(self.K, -1, -1)
            outs.append(self._unpack(self.G.forward(zc, False)).cpu())
        return torch.cat(outs, 1)

    def _evaluate(self, members: list[int]) -> dict[int, tuple[dict[str, float], Tensor]]:
        samples = self.generate(self.eval_z)
        out = {}
        for k in members:
            s = samples[k].contiguous()
            metrics = self.evaluate_samples(s)
            for name, value in metrics.items():
                better = max if direction(name) == "max" else min
                best = self.best[k]
                if math.isfinite(value) and (name not in best or better(value, best[name]) == value):
                    if best.get(name) != value:
                        best[name], self.best_step[k][name] = value, self.step
            out[k] = (metrics, s[:64])
        return out

    # --- the loop ---------------------------------------------------------------------
    def run(self, report: Callable[[int, list[Progress | None]], None] | None = None) -> list[TrainResult]:
        """Train every member to ``iterations``; one ``TrainResult`` per member, in order.

        ``report(step, progress)`` is called at every step where some member reports:
        each evaluation step, and the step where a member diverges. ``progress[k]`` is
        member k's ``Progress`` (the metrics ``Trainer`` reports, without diagnostics) or
        None when member k has nothing to say at this step (it stopped earlier).
        """
        cfg, K = self.cfg, self.K
        t0 = time.perf_counter()
        loss_sum = [[0.0, 0.0, 0] for _ in range(K)]
        if report is not None and self.step >= cfg.iterations and any(self.history):
            # restored from the final checkpoint: repeat the closing report
            progress = [
                Progress(
                    self.step, cfg.iterations, {k2: v for k2, v in h[-1].items() if k2 != "step"},
                    functools.partial(self.save_member, k), None, done=True, status=self._final_status(k),
                )
                if h and self.frozen_step[k] is None
                else None
                for k, h in enumerate(self.history)
            ]  # fmt: skip
            report(self.step, progress)
        while self.step < cfg.iterations and any(self.active):
            running = [k for k in range(K) if self.frozen_step[k] is None]
            is_eval = (self.step + 1) % cfg.eval_every == 0 or self.step + 1 == cfg.iterations
            losses_d, losses_g = self.train_step()
            self.step += 1
            reporting: dict[int, dict[str, float]] = {}
            diverged_now: list[int] = []
            for k in running:
                ld, lg = losses_d[k], losses_g[k]
                s = loss_sum[k]
                loss_sum[k] = [s[0] + ld, s[1] + lg, s[2] + 1]
                threshold = self.cfgs[k].divergence_threshold
                bad = next((v for v in (ld, lg) if not math.isfinite(v) or abs(v) > threshold), None)
                if bad is not None:
                    self.status[k] = "diverged"
                    self.errors[k] = f"loss {bad} at step {self.step} (threshold {threshold})"
                    diverged_now.append(k)
                    self._freeze(k)
                if is_eval or bad is not None:
                    s = loss_sum[k]
                    reporting[k] = {"loss_d": s[0] / s[2], "loss_g": s[1] / s[2]}
                    loss_sum[k] = [0.0, 0.0, 0]
            if not reporting:
                continue
            evaluated = self._evaluate([k for k in reporting if k not in diverged_now])
            progress: list[Progress | None] = [None] * K
            for k, metrics in reporting.items():
                samples = None
                if k in evaluated:
                    metrics.update(evaluated[k][0])
                    samples = evaluated[k][1]
                self.history[k].append({"step": float(self.step), **metrics})
                done = k in diverged_now or self.step >= cfg.iterations
                if done:
                    self._wall[k] = time.perf_counter() - t0
                progress[k] = Progress(
                    step=self.step,
                    iterations=cfg.iterations,
                    metrics=metrics,
                    save_checkpoint=functools.partial(self.save_member, k),
                    samples=samples,
                    done=done,
                    status=self._final_status(k) if done else "running",
                )
            if report is not None:
                report(self.step, progress)
        wall = time.perf_counter() - t0
        results = []
        for k in range(K):
            if self.frozen_step[k] is None and self.step >= cfg.iterations:
                self.status[k] = "completed"
            final = {n: v for n, v in (self.history[k][-1] if self.history[k] else {}).items() if n != "step"}
            results.append(
                TrainResult(
                    status=self._final_status(k),
                    step=self.member_step(k),
                    final=final,
                    best=dict(self.best[k]),
                    best_step=dict(self.best_step[k]),
                    error=self.errors[k],
                    wall_seconds=self._wall[k] or wall,
                    history=list(self.history[k]),
                )
            )
        return results

    def _final_status(self, k: int) -> str:
        return "diverged" if self.status[k] == "diverged" else "completed"

    # --- checkpoints ------------------------------------------------------------------
    def member_state_dict(self, k: int) -> dict:
        """Member k's checkpoint in ``Trainer.state_dict``'s format (``Trainer.load`` accepts it)."""
        cfg = self.cfgs[k]
        step = self.member_step(k)
        G, D = self.G.push(k), self.D.push(k)
        state = {
            "config": cfg.to_dict(),
            "step": step,
            "G": {n: t.clone() for n, t in G.state_dict().items()},
            "D": {n: t.clone() for n, t in D.state_dict().items()},
            "opt_g": self._adam_state(self.G, self.opt_g, k, step),
            "opt_d": self._adam_state(self.D, self.opt_d, k, step * cfg.n_dis),
            "rng_torch": self.gens[k].get_state() if self.device.type == "cpu" else self._cpu_rng_after_init[k],
            "rng_data": self.data_rngs[k].get_state(),
            "best": dict(self.best[k]),
            "best_step": dict(self.best_step[k]),
            "history": list(self.history[k]),
            # pack bookkeeping (Trainer ignores these keys)
            "status": self.status[k],
            "error": self.errors[k],
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = self.gens[k].get_state()
        if hasattr(self.sources[k], "state_dict"):
            state["source"] = self.sources[k].state_dict()
        return state

    def _adam_state(self, net: _PackedNet, opt: _Adam, k: int, steps: int) -> dict:
        cfg = self.cfgs[k]
        module = net.nets[k]
        lr = cfg.lr_g if net.role == "G" else cfg.lr_d
        adam = torch.optim.Adam(module.parameters(), lr=lr, betas=(cfg.beta1, cfg.beta2))
        if steps > 0:
            slots = net.slot_of(k)
            m, v = net.params.split(opt.m[k]), net.params.split(opt.v[k])
            for p in module.parameters():
                i = slots[id(p)]
                adam.state[p] = {
                    "step": torch.tensor(float(steps), dtype=torch.float32),
                    "exp_avg": m[i].clone(),
                    "exp_avg_sq": v[i].clone(),
                }
        return adam.state_dict()

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict) -> None:
        """Load a ``Trainer``-format checkpoint (or one from :meth:`member_state_dict`) into member k.

        A building block: the pack's step and Adam step counts are set by :meth:`load_state_dict`
        / :meth:`load_members`, which check that the members agree on them.
        """
        cfg = self.cfgs[k]
        saved = TrainConfig.from_dict(state["config"])
        changed = {n: v for n, v in saved.diff(cfg).items() if n not in RESUMABLE_CHANGES}
        if changed:
            detail = "; ".join(f"{n}: checkpoint {a!r} != config {b!r}" for n, (a, b) in changed.items())
            raise ConfigError(f"refusing to load member {k}: the configuration changed ({detail})")
        G, D = self.G.nets[k], self.D.nets[k]
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        self.G.pull(k)
        self.D.pull(k)
        for net, opt, key in ((self.G, self.opt_g, "opt_g"), (self.D, self.opt_d, "opt_d")):
            adam = torch.optim.Adam(net.nets[k].parameters())
            adam.load_state_dict(state[key])
            slots = net.slot_of(k)
            m, v = net.params.split(opt.m[k]), net.params.split(opt.v[k])
            for p in net.nets[k].parameters():
                i = slots[id(p)]
                st = adam.state.get(p)
                m[i].copy_(st["exp_avg"] if st else torch.zeros_like(m[i]))
                v[i].copy_(st["exp_avg_sq"] if st else torch.zeros_like(v[i]))
        if self.device.type == "cpu":
            self.gens[k].set_state(state["rng_torch"].cpu())
        else:
            self._cpu_rng_after_init[k] = state["rng_torch"].cpu()
            if "rng_cuda" in state:
                self.gens[k].set_state(state["rng_cuda"].cpu())
        self.data_rngs[k].set_state(state["rng_data"].cpu())
        if "source" in state and hasattr(self.sources[k], "load_state_dict"):
            self.sources[k].load_state_dict(state["source"])
        self.best[k], self.best_step[k] = dict(state["best"]), dict(state["best_step"])
        self.history[k] = list(state["history"])
        self.status[k] = state.get("status", "running")
        self.errors[k] = state.get("error", "")

    def state_dict(self) -> dict:
        """The whole pack: every member's ``Trainer``-format checkpoint plus the pack's step."""
        return {
            "format": PACK_FORMAT,
            "step": self.step,
            "frozen_step": list(self.frozen_step),
            "members": [self.member_state_dict(k) for k in range(self.K)],
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != PACK_FORMAT:
            raise ConfigError(f"not a packed checkpoint (format {state.get('format')!r}, expected {PACK_FORMAT!r})")
        members = state["members"]
        if len(members) != self.K:
            raise ConfigError(f"refusing to resume: the checkpoint packs {len(members)} members, this pack {self.K}")
        for k, member in enumerate(members):
            self.load_member_state_dict(k, member)
        self.step = int(state["step"])
        self.frozen_step = [None if f is None else int(f) for f in state["frozen_step"]]
        for k, member in enumerate(members):
            if self.frozen_step[k] is None and int(member["step"]) != self.step:
                raise ConfigError(f"member {k} is at step {member['step']}, the pack at {self.step}")
        self.opt_g.steps = self.step
        self.opt_d.steps = self.step * self.cfg.n_dis
        self.D.refresh_powers()
        self._snapshots = {}
        for k, f in enumerate(self.frozen_step):
            if f is not None:
                self._freeze(k)

    def load_members(self, states: Sequence[dict]) -> None:
        """Resume the pack from one ``Trainer``-format checkpoint per member (``save_member``'s, or a
        solo ``Trainer``'s at the same step): every running member must be at the same step."""
        if len(states) != self.K:
            raise ConfigError(f"refusing to resume: {len(states)} member checkpoints for a pack of {self.K}")
        frozen = [int(st["step"]) if st.get("status") == "diverged" else None for st in states]
        running = {int(st["step"]) for st, f in zip(states, frozen, strict=True) if f is None}
        if len(running) > 1:
            raise ConfigError(f"refusing to resume: running members are at different steps {sorted(running)}")
        step = running.pop() if running else max(f for f in frozen if f is not None)
        self.load_state_dict({"format": PACK_FORMAT, "step": step, "frozen_step": frozen, "members": list(states)})

    def _write(self, obj: dict, directory: Path, filename: str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / filename
        tmp = directory / f".{filename}.tmp"
        torch.save(obj, tmp)
        tmp.replace(path)  # never a torn checkpoint
        return path

    def save(self, directory: Path) -> Path:
        """Write the whole pack to ``directory/packed_checkpoint.pt``."""
        return self._write(self.state_dict(), directory, PACKED_CHECKPOINT_FILE)

    def load(self, path: Path) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / PACKED_CHECKPOINT_FILE
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    def save_member(self, k: int, directory: Path) -> Path:
        """Write member k alone as ``directory/checkpoint.pt``, resumable by ``trainers.loop.Trainer``."""
        return self._write(self.member_state_dict(k), directory, CHECKPOINT_FILE)


def train_packed(
    cfgs: Sequence[TrainConfig],
    report: Callable[[int, list[Progress | None]], None] | None = None,
    resume_from: Path | None = None,
) -> list[TrainResult]:
    """Train a pack; resume from a packed checkpoint file or directory when given."""
    trainer = PackedTrainer(cfgs)
    if resume_from is not None:
        trainer.load(Path(resume_from))
    return trainer.run(report)
