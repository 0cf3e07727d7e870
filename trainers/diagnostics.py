"""Per-layer diagnostics of a discriminator: the quantities the paper's analysis is about.

* :func:`gradient_norms`: ||grad|| of each raw weight (Figs. 2, 12, 13: exploding /
  vanishing gradients), call after ``backward``;
* :func:`spectral_norms`: sigma of each *effective* weight, for both kernel reshapes
  and, when the layer's input size is known, for the convolution operator itself
  (App. L.3 plots ||w_tilde|| / ||w_hat||);
* :func:`parameter_variance`: variance of each effective weight and the sum of their
  logs (Thms. 2-3, Figs. 7, 16, 17, 22, 23);
* :func:`prop1_bound` / :func:`prop1_report`: the Prop. 1 upper bound on the gradient
  next to the actual gradient;
* :func:`collect`: all of the above in one MLflow-safe flat dict.

Layers are named ``layerK`` in module traversal order over Conv2d / ConvTranspose2d /
Linear (:func:`trainers.normalizers.layers`; :func:`layer_names` maps them back).

Nothing here changes training: effective weights are read in eval mode (no
power-iteration step, no BatchNorm statistics update; each submodule's mode is
restored afterwards), power iterations start from a private generator (the global
RNG is untouched), and no buffer is written.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from trainers import normalizers

__all__ = [
    "collect",
    "conv_operator_norm",
    "gradient_norms",
    "input_sizes",
    "layer_names",
    "parameter_variance",
    "prop1_bound",
    "prop1_report",
    "spectral_norms",
]

CONV_ITERS = 30
"""Default power iterations for conv operator norms: "a few tens" keeps a diagnostic
call well under a second on a CPU for the CIFAR CNN; the estimate converges from below."""


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _layers(D: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(f"layer{k}", m) for k, (_, m) in enumerate(normalizers.layers(D))]


def layer_names(D: nn.Module) -> dict[str, str]:
    """``layerK`` -> qualified module name (for reports and plot legends)."""
    return {f"layer{k}": name for k, (name, _) in enumerate(normalizers.layers(D))}


@contextlib.contextmanager
def _eval_mode(D: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in D.modules()}
    D.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _is_conv(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d | nn.ConvTranspose2d)


def _effective_weights(D: nn.Module) -> list[tuple[str, nn.Module, Tensor]]:
    with torch.no_grad(), _eval_mode(D):
        return [(k, m, normalizers.effective_weight(m).detach()) for k, m in _layers(D)]


def _top_sv(mat: Tensor) -> float:
    """Largest singular value, exactly: sqrt(largest eigenvalue of the smaller Gram matrix), float64.

    Same value as ``torch.linalg.matrix_norm(mat, ord=2)`` to ~1e-12 relative (the top
    eigenvalue of a PSD Gram matrix is perfectly conditioned) and several times faster
    than a full SVD for the 512 x 2304 reshapes of the CIFAR D.
    """
    a = mat.detach().double()
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    return math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0))


def _safe(key: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . /`` and spaces only."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in key)


# --------------------------------------------------------------------------------------
# the conv operator
# --------------------------------------------------------------------------------------
def _padding(layer: nn.Module) -> tuple[int, int]:
    pad = layer.padding  # type: ignore[attr-defined]
    if pad == "valid":
        return (0, 0)
    if pad == "same":  # symmetric part; exact when dilation*(k-1) is even
        dil, ker = layer.dilation, layer.kernel_size  # type: ignore[attr-defined]
        return (dil[0] * (ker[0] - 1) // 2, dil[1] * (ker[1] - 1) // 2)
    return (int(pad[0]), int(pad[1]))


def _conv_ops(layer: nn.Module, weight: Tensor, hw: tuple[int, int]):
    """(A, A^T, input shape) of the layer's linear map (bias excluded) for input size ``hw``."""
    stride, dilation, groups = layer.stride, layer.dilation, layer.groups  # type: ignore[attr-defined]
    padding = _padding(layer)
    c_in = layer.in_channels  # type: ignore[attr-defined]
    if isinstance(layer, nn.ConvTranspose2d):
        op = layer.output_padding

        def fwd(x: Tensor) -> Tensor:
            return F.conv_transpose2d(x, weight, None, stride, padding, op, groups, dilation)

        def adj(y: Tensor) -> Tensor:
            return F.conv2d(y, weight, None, stride, padding, dilation, groups)

    else:
        kernel = layer.kernel_size  # type: ignore[attr-defined]
        out_pad = []
        for n, k, s, p, d in zip(hw, kernel, stride, padding, dilation, strict=True):
            n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
            out_pad.append(n - ((n_out - 1) * s - 2 * p + d * (k - 1) + 1))

        def fwd(x: Tensor) -> Tensor:
            return F.conv2d(x, weight, None, stride, padding, dilation, groups)

        def adj(y: Tensor) -> Tensor:
            return F.conv_transpose2d(y, weight, None, stride, padding, tuple(out_pad), groups, dilation)

    return fwd, adj, (1, c_in, *hw)


@torch.no_grad()
def conv_operator_norm(layer: nn.Module, weight: Tensor, hw: tuple[int, int], iters: int = CONV_ITERS) -> float:
    """||w_tilde||_sp of the conv (or transposed conv) with kernel ``weight`` on ``hw`` inputs.

    Plain power iteration from a fixed-seed start (the global RNG is not touched).
    The Rayleigh estimate ||A u|| never exceeds the true norm and increases towards it.
    """
    fwd, adj, shape = _conv_ops(layer, weight, hw)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(shape, generator=gen).to(device=weight.device, dtype=weight.dtype)
    u = u / u.norm()
    for _ in range(max(1, iters)):
        v = fwd(u)
        v = v / (v.norm() + 1e-30)
        u = adj(v)
        u = u / (u.norm() + 1e-30)
    return float(fwd(u).norm())


@torch.no_grad()
def input_sizes(D: nn.Module, x: Tensor) -> dict[str, tuple[int, int]]:
    """``layerK`` -> input spatial size of every conv layer, from one eval-mode forward of ``x[:1]``."""
    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    for key, m in _layers(D):
        if _is_conv(m):

            def hook(mod: nn.Module, args: tuple, key: str = key) -> None:
                sizes[key] = (int(args[0].shape[-2]), int(args[0].shape[-1]))

            hooks.append(m.register_forward_pre_hook(hook))
    try:
        with _eval_mode(D):
            D(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return sizes


def _known_sizes(D: nn.Module) -> dict[str, tuple[int, int]]:
    """Input sizes SNConv layers have learnt (no forward needed)."""
    out = {}
    for key, m in _layers(D):
        hw = normalizers.input_size(m)
        if hw is not None:
            out[key] = hw
    return out


# --------------------------------------------------------------------------------------
# public diagnostics
# --------------------------------------------------------------------------------------
def gradient_norms(D: nn.Module) -> dict[str, float]:
    """``grad_norm/layerK`` = ||dL/dW_raw||_F per layer and ``grad_norm/total`` over them.

    Raw (trainable) weights, as the optimizer sees them; biases and gamma excluded, as
    in the paper's per-layer plots. Layers without a gradient are skipped. Call after
    ``backward`` and before ``zero_grad``.
    """
    out: dict[str, float] = {}
    total = 0.0
    for key, m in _layers(D):
        g = normalizers.raw_weight(m).grad
        if g is None:
            continue
        n = float(torch.linalg.vector_norm(g.detach().double()))
        out[f"grad_norm/{key}"] = n
        total += n * n
    if out:
        out["grad_norm/total"] = math.sqrt(total)
    return out


def spectral_norms(
    D: nn.Module, sizes: dict[str, tuple[int, int]] | None = None, iters: int = CONV_ITERS
) -> dict[str, float]:
    """Exact sigmas of each effective weight, plus the conv operator norm where the input size is known.

    ``sigma_w/layerK``: ||reshape(W, c_out x rest)||_2 (what SN normalizes);
    ``sigma_wt/layerK``: ||reshape(W, c_in x rest)||_2 (BSN's second term; equal to
    sigma_w for Linear and 1x1 convs); both exact (see ``_top_sv``).
    ``sigma_conv/layerK``: conv layers only, for the input size in ``sizes`` or learnt
    by SNConv; skipped when unknown (pass ``sizes=input_sizes(D, x)``).
    """
    sizes = {**_known_sizes(D), **(sizes or {})}
    out: dict[str, float] = {}
    for key, m, w in _effective_weights(D):
        od = normalizers.out_dim(m)
        w64 = w.double()
        out[f"sigma_w/{key}"] = _top_sv(w64.movedim(od, 0).flatten(1))
        out[f"sigma_wt/{key}"] = _top_sv(w64.movedim(1 - od, 0).flatten(1))
        if _is_conv(m) and key in sizes:
            out[f"sigma_conv/{key}"] = conv_operator_norm(m, w, sizes[key], iters)
    return out


def parameter_variance(D: nn.Module) -> dict[str, float]:
    """``param_var/layerK`` = variance of the effective weight's entries; ``log_var_product``.

    Population variance (mean of squares minus squared mean) of W̄, the quantity of
    Thm. 2/3; ``log_var_product`` = sum_k log var_k, the x axis of Fig. 23 (a zero
    variance is clamped to 1e-300 so the value stays finite).
    """
    out: dict[str, float] = {}
    logs = 0.0
    for key, _, w in _effective_weights(D):
        var = float(torch.var(w.double(), correction=0))
        out[f"param_var/{key}"] = var
        logs += math.log(max(var, 1e-300))
    out["log_var_product"] = logs
    return out


def _operator_norms(
    layers: list[tuple[str, nn.Module, Tensor]], sizes: dict[str, tuple[int, int]], iters: int
) -> list[float]:
    norms = []
    for key, m, w in layers:
        if _is_conv(m):
            if key not in sizes:
                raise ValueError(f"prop1: input size of {key} unknown; D must be a chain the input reaches")
            norms.append(conv_operator_norm(m, w.detach(), sizes[key], iters))
        else:
            norms.append(_top_sv(w))
    return norms


def _log_operator_norms(
    D: nn.Module, sizes: dict[str, tuple[int, int]], iters: int
) -> tuple[list[tuple[str, nn.Module, Tensor]], list[float]]:
    """Each layer's (key, module, effective weight) and the log of its operator norm; called inside
    the caller's eval-mode / cached-parametrization context (the report keeps the weights' graph)."""
    layers = [(k, m, normalizers.effective_weight(m)) for k, m in _layers(D)]
    return layers, [math.log(max(n, 1e-300)) for n in _operator_norms(layers, sizes, iters)]


def prop1_report(
    D: nn.Module,
    x: Tensor,
    max_samples: int = 8,
    iters: int = 50,
    sizes: dict[str, tuple[int, int]] | None = None,
) -> dict[str, float]:
    """Prop. 1 of the paper, bound next to the actual gradient, over up to ``max_samples`` inputs.

    For a single input x and each layer t:
    ``||grad_{w_t} D(x)||_F <= ||x|| * prod_{i != t} ||w_i||_sp``.
    Keys (max over samples, and over layers t unless named ``_total``):

    * ``prop1_bound``: the right-hand side with ||w_i||_sp the *operator* norm of each
      effective weight (exact SVD for Linear, power iteration on the actual input size
      for convs: ``iters`` steps, an estimate from below);
    * ``prop1_grad_norm``: the left-hand side as the paper states it, the gradient with
      respect to the layer's matrix w̃_t: the outer product of the gradient at the
      layer output and the layer input, so its norm is ||δ_t|| * ||o_{t-1}||;
    * ``prop1_bound_total`` / ``prop1_grad_norm_total``: sqrt of the sum over layers;
    * ``prop1_grad_norm_kernel`` / ``prop1_bound_kernel``: the gradient with respect to
      the (shared) kernel *parameters*, which sums the matrix gradient over the
      positions each tap is used in; by Cauchy-Schwarz it is at most sqrt(kh*kw) times
      ||δ_t|| * ||o_{t-1}||, so the kernel bound multiplies conv layers' terms by
      sqrt(kh*kw) (factor 1 for Linear).

    Assumptions (the proposition's): D is a chain of the Conv2d/ConvTranspose2d/Linear
    layers and elementwise activations that are 1-Lipschitz with a(0) = 0 (ReLU,
    leaky ReLU, tanh), biases ignored (zero). Residual branches, pooling with norm > 1
    (sum pooling) or biases make the bound inapplicable; it is still reported.
    D is evaluated in eval mode; gradients are w.r.t. the effective weights.
    """
    xs = x[: max(1, max_samples)].detach()
    sizes = {**_known_sizes(D), **(sizes if sizes is not None else input_sizes(D, xs))}
    best = dict.fromkeys(("bound", "bound_total", "bound_kernel", "grad", "grad_total", "grad_kernel"), 0.0)
    in_norms: list[float] = []
    outs: list[Tensor] = []

    def record(mod: nn.Module, args: tuple, out: Tensor) -> Tensor:
        in_norms.append(float(args[0].detach().double().norm()))
        outs.append(out)
        return out.clone()  # later in-place ops (inplace LeakyReLU) must not rebase `out`

    with _eval_mode(D), parametrize.cached(), torch.enable_grad():
        layers, log_norms = _log_operator_norms(D, sizes, iters)
        factors = [
            math.sqrt(m.kernel_size[0] * m.kernel_size[1]) if _is_conv(m) else 1.0  # type: ignore[attr-defined]
            for _, m, _ in layers
        ]
        weights = [w for _, _, w in layers]
        hooks = [m.register_forward_hook(record) for _, m, _ in layers]
        try:
            for i in range(xs.shape[0]):
                in_norms.clear()
                outs.clear()
                y = D(xs[i : i + 1]).sum()
                grads = torch.autograd.grad(y, [*weights, *outs], allow_unused=True, retain_graph=True)
                xnorm = float(xs[i].double().norm())
                bounds = [xnorm * math.exp(sum(log_norms) - ln) for ln in log_norms]
                mat = [
                    float(g.double().norm()) * a if g is not None else 0.0
                    for g, a in zip(grads[len(weights) :], in_norms, strict=True)
                ]
                ker = [float(g.double().norm()) if g is not None else 0.0 for g in grads[: len(weights)]]
                kb = max(b * f for b, f in zip(bounds, factors, strict=True))
                best["bound"] = max(best["bound"], max(bounds))
                best["bound_total"] = max(best["bound_total"], math.sqrt(sum(b * b for b in bounds)))
                best["bound_kernel"] = max(best["bound_kernel"], kb)
                best["grad"] = max(best["grad"], max(mat))
                best["grad_total"] = max(best["grad_total"], math.sqrt(sum(g * g for g in mat)))
                best["grad_kernel"] = max(best["grad_kernel"], max(ker))
        finally:
            for h in hooks:
                h.remove()
    return {
        "prop1_bound": best["bound"],
        "prop1_bound_total": best["bound_total"],
        "prop1_bound_kernel": best["bound_kernel"],
        "prop1_grad_norm": best["grad"],
        "prop1_grad_norm_total": best["grad_total"],
        "prop1_grad_norm_kernel": best["grad_kernel"],
    }


def prop1_bound(D: nn.Module, x: Tensor, max_samples: int = 8, iters: int = 50) -> float:
    """max over layers t (and over up to 8 samples of ``x``) of ||x|| prod_{i != t} ||w_i||_sp.

    The same number as ``prop1_report(D, x)["prop1_bound"]``, without the per-sample backward
    passes the report needs for the actual gradients (the trainer logs the bound at every
    evaluation of every trial). See :func:`prop1_report` for the assumptions.
    """
    xs = x[: max(1, max_samples)].detach()
    sizes = {**_known_sizes(D), **input_sizes(D, xs)}
    with _eval_mode(D), parametrize.cached(), torch.no_grad():
        _, log_norms = _log_operator_norms(D, sizes, iters)
    xnorm = max(float(xs[i].double().norm()) for i in range(xs.shape[0]))
    return max(xnorm * math.exp(sum(log_norms) - ln) for ln in log_norms)


def collect(D: nn.Module, x: Tensor | None = None, max_samples: int = 4) -> dict[str, float]:
    """Everything above in one flat, MLflow-safe dict.

    Gradient norms when gradients are present; spectral norms (conv operator norms for
    the sizes learnt by SNConv or, with ``x``, seen in one forward); parameter
    variance; and with ``x`` the Prop. 1 report over ``max_samples`` inputs.
    """
    out: dict[str, float] = {}
    out.update(gradient_norms(D))
    sizes = input_sizes(D, x) if x is not None else None
    out.update(spectral_norms(D, sizes))
    out.update(parameter_variance(D))
    if x is not None:
        out.update(prop1_report(D, x, max_samples=max_samples, iters=CONV_ITERS, sizes=sizes))
    return {_safe(k): v for k, v in out.items()}
