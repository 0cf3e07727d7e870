"""Tests of trainers.diagnostics against hand computations, numpy SVDs and dense conv matrices."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from helpers import dense_operator
from torch import nn

from trainers import diagnostics as G
from trainers import normalizers as N

MLFLOW_KEY = re.compile(r"^[A-Za-z0-9_\-./ ]+$")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convs are much slower with 2 threads on the shared 2-core machine (thread contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cnn(seed: int = 0, bias: bool = False, inplace: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, 1, 1, bias=bias),
        nn.LeakyReLU(0.1, inplace=inplace),
        nn.Conv2d(6, 8, 4, 2, 1, bias=bias),
        nn.LeakyReLU(0.1, inplace=inplace),
        nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=bias),
        nn.LeakyReLU(0.1),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 1, bias=bias),
    )


def mlp(seed: int = 0, scale: float = 1.0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(10, 16, bias=False),
        nn.LeakyReLU(0.2),
        nn.Linear(16, 12, bias=False),
        nn.LeakyReLU(0.2),
        nn.Linear(12, 1, bias=False),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def top_sv(a: np.ndarray) -> float:
    return float(np.linalg.svd(a, compute_uv=False)[0])


# ----------------------------------------------------------------------------------------
def test_gradient_norms_match_hand_computation() -> None:
    """For D(x) = w.x summed over the batch, dD/dw = sum_b x_b: a closed form, no autograd."""
    torch.manual_seed(0)
    D = nn.Sequential(nn.Linear(5, 1, bias=False))
    x = torch.randn(4, 5)
    assert G.gradient_norms(D) == {}  # no backward yet
    D(x).sum().backward()
    out = G.gradient_norms(D)
    expected = float(np.linalg.norm(x.numpy().sum(0)))
    assert out["grad_norm/layer0"] == pytest.approx(expected, rel=1e-6)
    assert out["grad_norm/total"] == pytest.approx(expected, rel=1e-6)


def test_gradient_norms_of_raw_weights_and_total() -> None:
    D = N.apply(cnn(0, bias=True), "sn")
    D(images()).pow(2).sum().backward()
    out = G.gradient_norms(D)
    raws = [m.parametrizations.weight.original.grad.double().numpy() for _, m in N.layers(D)]
    norms = [float(np.sqrt((g**2).sum())) for g in raws]
    assert [out[f"grad_norm/layer{k}"] for k in range(4)] == pytest.approx(norms, rel=1e-6)
    assert out["grad_norm/total"] == pytest.approx(math.sqrt(sum(n * n for n in norms)), rel=1e-6)


@pytest.mark.parametrize("method", ["none", "sn", "bsn", "snconv"])
def test_spectral_norms_against_numpy(method: str) -> None:
    D = N.apply(cnn(1), method, scale=1.4)
    x = images()
    D(x)
    for _ in range(5):
        N.update(D)
    known = G.spectral_norms(D, iters=5)
    with_x = G.spectral_norms(D, G.input_sizes(D, x), iters=400)
    D.eval()
    sizes = [(8, 8), (8, 8), (4, 4)]
    for k, (_, layer) in enumerate(N.layers(D)):
        w = layer.weight.detach().double()
        od = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
        a = np.moveaxis(w.numpy(), od, 0).reshape(w.shape[od], -1)
        b = np.moveaxis(w.numpy(), 1 - od, 0).reshape(w.shape[1 - od], -1)
        assert with_x[f"sigma_w/layer{k}"] == pytest.approx(top_sv(a), rel=1e-9)
        assert with_x[f"sigma_wt/layer{k}"] == pytest.approx(top_sv(b), rel=1e-9)
        if w.dim() == 4:
            dense = top_sv(dense_operator(layer, w, sizes[k]))
            assert with_x[f"sigma_conv/layer{k}"] == pytest.approx(dense, rel=2e-3)
            assert with_x[f"sigma_conv/layer{k}"] <= dense * (1 + 1e-6)  # power iteration: from below
            # without an input, only SNConv layers know their input size
            assert (f"sigma_conv/layer{k}" in known) == (method == "snconv")
        else:
            assert f"sigma_conv/layer{k}" not in with_x


def test_parameter_variance_and_log_product() -> None:
    D = N.apply(cnn(2), "bsn", scale=1.2)
    out = G.parameter_variance(D)
    D.eval()
    vars_ = [float(np.var(m.weight.detach().double().numpy())) for _, m in N.layers(D)]
    assert [out[f"param_var/layer{k}"] for k in range(4)] == pytest.approx(vars_, rel=1e-9)
    assert out["log_var_product"] == pytest.approx(sum(math.log(v) for v in vars_), rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_prop1_bound_holds_for_bias_free_leaky_relu_mlp(seed: int, scale: float) -> None:
    """Prop. 1: ||dD(x)/dw_t|| <= ||x|| prod_{i != t} ||w_i||_2, checked against per-sample autograd."""
    D = mlp(seed, scale)
    x = torch.randn(5, 10, generator=torch.Generator().manual_seed(seed))
    rep = G.prop1_report(D, x)
    manual = 0.0
    for i in range(5):
        grads = torch.autograd.grad(D(x[i : i + 1]).sum(), list(D.parameters()))
        manual = max(manual, max(float(g.norm()) for g in grads))
    assert rep["prop1_grad_norm_kernel"] == pytest.approx(manual, rel=1e-5)
    assert rep["prop1_grad_norm"] == pytest.approx(manual, rel=1e-5)  # dense layers: same thing
    assert rep["prop1_grad_norm"] <= rep["prop1_bound"]
    assert rep["prop1_grad_norm_total"] <= rep["prop1_bound_total"]
    assert G.prop1_bound(D, x) == rep["prop1_bound"]
    norms = [float(np.linalg.norm(p.detach().double().numpy(), 2)) for p in D.parameters()]
    xmax = float(x.double().norm(dim=1).max())
    expected = xmax * max(math.prod(norms) / n for n in norms)
    assert rep["prop1_bound"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_prop1_bound_holds_for_bias_free_cnn(seed: int) -> None:
    """Conv layers: matrix gradient <= paper bound; kernel-parameter gradient <= sqrt(kh kw) x bound."""
    D = cnn(seed, inplace=True)
    x = images(4, seed)
    rep = G.prop1_report(D, x, iters=300)
    assert 0 < rep["prop1_grad_norm"] <= rep["prop1_bound"]
    assert rep["prop1_grad_norm_total"] <= rep["prop1_bound_total"]
    assert 0 < rep["prop1_grad_norm_kernel"] <= rep["prop1_bound_kernel"]


def test_prop1_with_converged_snconv_bound_is_input_norm() -> None:
    """With every operator norm 1 (converged SNConv, scale 1) the bound is max ||x||: SN bounds gradients."""
    D = N.apply(cnn(5), "snconv")
    x = images(3, 5)
    D(x)
    for _ in range(300):
        N.update(D)
    rep = G.prop1_report(D, x, iters=300)
    assert rep["prop1_bound"] == pytest.approx(float(x.flatten(1).norm(dim=1).max()), rel=1e-2)
    assert rep["prop1_grad_norm"] <= rep["prop1_bound"] * (1 + 1e-3)


def test_conv_operator_norm_transposed_and_strided() -> None:
    torch.manual_seed(0)
    for layer, hw in ((nn.ConvTranspose2d(3, 2, 4, 2, 1), (5, 5)), (nn.Conv2d(2, 3, 4, 2, 1), (6, 6))):
        dense = top_sv(dense_operator(layer, layer.weight, hw))
        est = G.conv_operator_norm(layer, layer.weight.detach(), hw, iters=500)
        assert est == pytest.approx(dense, rel=1e-3)


@pytest.mark.parametrize("method", ["sn", "snconv", "bsn_gamma_diff", "lecun"])
def test_collect_is_safe_complete_and_side_effect_free(method: str) -> None:
    D = N.apply(cnn(3, bias=True), method)
    x = images(4)
    D(x).mean().backward()
    D.train()
    state = {k: v.clone() for k, v in D.state_dict().items()}
    rng = torch.get_rng_state()
    out = G.collect(D, x)
    assert torch.equal(rng, torch.get_rng_state()), "diagnostics must not consume the global RNG"
    assert all(torch.equal(state[k], v) for k, v in D.state_dict().items())
    assert all(m.training for m in D.modules()), "modes restored"
    assert all(MLFLOW_KEY.match(k) for k in out), [k for k in out if not MLFLOW_KEY.match(k)]
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    for k in range(4):
        assert {
            f"grad_norm/layer{k}",
            f"sigma_w/layer{k}",
            f"sigma_wt/layer{k}",
            f"param_var/layer{k}",
        } <= set(out)
    assert {f"sigma_conv/layer{k}" for k in range(3)} <= set(out)
    assert {"grad_norm/total", "log_var_product", "prop1_bound", "prop1_grad_norm_total"} <= set(out)
    assert G.layer_names(D) == {"layer0": "0", "layer1": "2", "layer2": "4", "layer3": "7"}
    # without x: no conv norms unless learnt, no Prop. 1
    bare = G.collect(D)
    assert "prop1_bound" not in bare
    assert any(k.startswith("sigma_conv/") for k in bare) == (method == "snconv")
