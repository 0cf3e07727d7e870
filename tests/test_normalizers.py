"""Tests of trainers.normalizers against independent numerics (numpy SVD, dense conv
matrices, torch's own spectral_norm, a numpy port of the official TF ``sn.py``).

Everything runs on tiny layers so the whole file stays well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import dense_operator
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from trainers import normalizers as N

HW = (8, 8)
"""Input size of the test discriminator; conv layers see 8x8, 8x8 and 4x4 inputs."""
LAYER_HW = [(8, 8), (8, 8), (4, 4), None]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convs are ~40x slower with 2 threads on the shared 2-core machine (thread contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_d(seed: int = 0, bias: bool = True) -> nn.Sequential:
    """A small D that has every supported layer type: Conv2d (3x3 s1, 4x4 s2), ConvTranspose2d, Linear."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, 1, 1, bias=bias),
        nn.LeakyReLU(0.1),
        nn.Conv2d(6, 8, 4, 2, 1, bias=bias),
        nn.LeakyReLU(0.1),
        nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=bias),
        nn.LeakyReLU(0.1),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 1, bias=bias),
    )


def inputs(n: int = 2, seed: int = 123) -> torch.Tensor:
    return torch.randn(n, 3, *HW, generator=torch.Generator().manual_seed(seed))


def top_sv(mat: np.ndarray) -> float:
    return float(np.linalg.svd(mat, compute_uv=False)[0])


def reshape_np(w: torch.Tensor, dim: int) -> np.ndarray:
    """numpy reshape with ``dim`` as rows, written independently of the library's helper."""
    a = w.detach().double().numpy()
    return np.moveaxis(a, dim, 0).reshape(a.shape[dim], -1)


def power_states(layer: nn.Module) -> list[nn.Module]:
    return list(layer.parametrizations.weight[0].powers)


def gamma_of(D: nn.Module, layer: nn.Module) -> float:
    holder = layer if hasattr(layer, N.GAMMA_NAME) else D
    return float(getattr(holder, N.GAMMA_NAME, torch.tensor(1.0)))


# ----------------------------------------------------------------------------------------
# the catalogue contract: every method gets the same tests
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(N.METHODS))
def test_contract(method: str) -> None:
    info = N.METHODS[method]
    assert info.description and "\n" not in info.description
    assert info.paper and N.describe(method).startswith(method)
    x = inputs()
    D = N.apply(make_d(0), method, scale=1.3)
    y = D(x)
    assert y.shape == (2, 1)
    y.sum().backward()
    before = {k: v.clone() for k, v in D.state_dict().items()}
    N.update(D)
    after = D.state_dict()
    if info.normalized:
        assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("_u")), "update moved no u"
    else:
        assert all(torch.equal(before[k], after[k]) for k in before)

    # state_dict round trip into a fresh, identically built module (different init seed)
    fresh = N.apply(make_d(7), method, scale=1.3)
    fresh.load_state_dict(D.state_dict())
    assert torch.allclose(fresh(x), D(x), atol=1e-6, rtol=0)  # train mode
    D.eval()
    fresh.eval()
    out = D(x)
    assert torch.equal(out, D(x)), "eval mode must be deterministic"
    assert torch.allclose(fresh(x), out, atol=1e-6, rtol=0)
    # moves and copies
    twin = copy.deepcopy(D)
    assert torch.equal(twin(x), out)
    assert torch.equal(D.to("cpu")(x), out)
    wide = copy.deepcopy(D).to(torch.float64)
    assert torch.allclose(wide(x.double()).float(), out, atol=1e-5)
    N.update(twin)  # the copy owns its own state
    assert torch.equal(D(x), out)


@pytest.mark.parametrize("method", [m for m, i in N.METHODS.items() if i.normalized])
@pytest.mark.parametrize("scale", [1.0, 1.7])
def test_sigma_equals_scale_after_convergence(method: str, scale: float) -> None:
    """After 200 updates the effective weight's sigma is scale (times gamma) within 1e-3, by numpy SVD.

    sn*: top singular value of the c_out x rest reshape (ConvTranspose2d: dim 1 is c_out);
    bsn*: mean of both reshapes' top singular values (one reshape on Linear);
    snconv: top singular value of the dense conv operator on the layer's input size.
    """
    D = N.apply(make_d(1), method, scale=scale)
    gamma = 1.0
    if N.METHODS[method].gamma is not None:
        gamma = 0.6
        with torch.no_grad():
            for p in (p for n, p in D.named_parameters() if n.endswith(N.GAMMA_NAME)):
                p.fill_(gamma)
    D(inputs())  # snconv learns its input sizes
    for _ in range(200):
        N.update(D)
    for mode in ("train", "eval"):
        D.train(mode == "train")
        for (_, layer), hw in zip(N.layers(D), LAYER_HW, strict=True):
            w = layer.weight.detach()
            od = 1 if isinstance(layer, nn.ConvTranspose2d) else 0
            s1 = top_sv(reshape_np(w, od))
            if method.startswith("bsn") and w.dim() == 4:
                s = (s1 + top_sv(reshape_np(w, 1 - od))) / 2
            elif method == "snconv" and w.dim() == 4:
                s = top_sv(dense_operator(layer, w, hw))
            else:
                s = s1
            assert s == pytest.approx(scale * gamma, rel=1e-3), (mode, type(layer).__name__)


def test_lecun_std_matches_fan_in() -> None:
    """Entries ~ N(0, (c/sqrt(fan_in))^2): the sample std is within 5 standard errors (1/sqrt(2n))."""
    torch.manual_seed(0)
    D = nn.Sequential(nn.Conv2d(64, 96, 3), nn.ConvTranspose2d(96, 64, 4, 2, 1), nn.Linear(300, 200))
    scale = 0.2
    N.apply(D, "lecun", scale=scale)
    fan_ins = [64 * 9, 96 * 16 / 4, 300]  # transposed conv: c_in*k*k/stride^2 taps reach each output
    for layer, fan in zip(D, fan_ins, strict=True):
        w = layer.weight.detach().double()
        expected = scale / math.sqrt(fan)
        assert N.fan_in(layer) == pytest.approx(fan)
        assert abs(float(w.std()) / expected - 1) < 5 / math.sqrt(2 * w.numel())
        assert abs(float(w.mean())) < 5 * expected / math.sqrt(w.numel())
        assert torch.count_nonzero(layer.bias) == 0
        assert not parametrize.is_parametrized(layer)


def test_none_ignores_scale() -> None:
    D = make_d(0)
    ref = copy.deepcopy(D.state_dict())
    assert N.apply(D, "none", scale=3.0) is D
    assert not any(parametrize.is_parametrized(m) for m in D.modules())
    assert all(torch.equal(ref[k], v) for k, v in D.state_dict().items())


# ----------------------------------------------------------------------------------------
# agreement with torch's spectral_norm and with the official TF algorithm
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make", [lambda: nn.Linear(7, 5), lambda: nn.Conv2d(3, 4, 3), lambda: nn.ConvTranspose2d(4, 3, 4, 2, 1)]
)
def test_sn_agrees_with_torch_spectral_norm(make) -> None:
    """Same weights, same (u, v), same number of iterations -> same vectors and weights to 1e-5.

    torch iterates u <- n(W v), v <- n(W^T u) on every train forward; our update() does
    v' = n(W^T u), u' = n(W v'), and then stores v = n(W^T u'). Starting from torch's
    post-warm-up state (where v = n(W^T u) already holds) both sequences coincide, and
    both eval-mode weights are W / (u^T W v). torch uses max(||x||, eps), we use
    ||x|| + eps: irrelevant at eps = 1e-12.
    """
    torch.manual_seed(3)
    ours, theirs = make(), make()
    theirs.load_state_dict(ours.state_dict())
    torch_spectral_norm(theirs, eps=1e-12)
    N.apply(ours, "sn")
    state = power_states(ours)[0]
    tsn = theirs.parametrizations.weight[0]
    with torch.no_grad():
        state._u.copy_(tsn._u)
        state._v.copy_(tsn._v)
    ours.eval()
    theirs.eval()
    assert torch.allclose(ours.weight, theirs.weight, atol=1e-5, rtol=0)
    ours.train()
    theirs.train()
    for _ in range(5):
        N.update(ours)
        _ = theirs.weight  # one torch power iteration per train-mode access
    assert torch.allclose(state._u, tsn._u, atol=1e-5, rtol=0)
    assert torch.allclose(state._v, tsn._v, atol=1e-5, rtol=0)
    ours.eval()
    theirs.eval()
    assert torch.allclose(ours.weight, theirs.weight, atol=1e-5, rtol=0)


def tf_sn_numpy(kernel_oihw: np.ndarray, u: np.ndarray, eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Port of the official ``no_gamma-CNN/gan/sn.py`` (TF layout), returning (W / sigma, u')."""
    k = np.transpose(kernel_oihw, (2, 3, 1, 0))  # TF conv kernel [kh, kw, c_in, c_out]
    w = k.reshape(-1, k.shape[-1])  # (kh kw c_in) x c_out
    u = u.reshape(1, -1)
    v = u @ w.T
    v = v / (np.linalg.norm(v) + eps)
    u_new = v @ w
    u_new = u_new / (np.linalg.norm(u_new) + eps)
    sigma = (v @ w @ u_new.T).item()
    return kernel_oihw / sigma, u_new.ravel()


@pytest.mark.parametrize("opt_kw", [{"foreach": False}, {"foreach": True}, {"fused": True}])
def test_train_forward_and_update_match_official_tf_semantics(opt_kw: dict) -> None:
    """Train forward = stored u + one un-persisted iteration; update() persists exactly that u'.

    ``fused=True`` Adam writes the weights without bumping their version counter: update()
    must still iterate on the post-step weights.
    """
    torch.manual_seed(5)
    conv = N.apply(nn.Conv2d(3, 5, 3), "sn")
    opt = torch.optim.Adam(conv.parameters(), lr=0.1, **opt_kw)
    x = torch.randn(2, 3, 6, 6)
    for _ in range(3):
        state = power_states(conv)[0]
        u0 = state._u.detach().double().numpy().copy()
        raw = conv.parametrizations.weight.original.detach().double().numpy()
        expected_w, expected_u = tf_sn_numpy(raw, u0)
        w1 = conv.weight.detach()
        conv(x)
        assert np.allclose(w1.double().numpy(), expected_w, atol=1e-6)
        assert np.allclose(state._u.double().numpy(), u0), "a forward must not move u"
        opt.zero_grad()
        (conv(x) ** 2).mean().backward()
        opt.step()
        raw = conv.parametrizations.weight.original.detach().double().numpy()
        _, expected_u = tf_sn_numpy(raw, u0)  # update uses the post-step weights
        N.update(conv)
        assert np.allclose(state._u.double().numpy(), expected_u, atol=1e-6)


def test_sigma_shared_within_a_step_and_refreshed_after_optimizer_step() -> None:
    D = N.apply(make_d(2), "bsn")
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    real, fake = inputs(seed=1), inputs(seed=2)
    layer = D[2]
    w_real = (D(real), layer.weight.detach().clone())[1]
    w_fake = (D(fake), layer.weight.detach().clone())[1]
    assert torch.equal(w_real, w_fake)
    loss = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()
    loss.backward()
    opt.step()
    # the cache is keyed on the weight version: the new weight is normalized afresh
    raw = layer.parametrizations.weight.original.detach()
    sigmas = []
    for state in power_states(layer):
        wm = raw.movedim(state.dim, 0).flatten(1)
        v = wm.t() @ state._u
        v = v / (v.norm() + 1e-12)
        u2 = wm @ v
        u2 = u2 / (u2.norm() + 1e-12)
        sigmas.append(u2 @ wm @ v)
    assert torch.allclose(layer.weight.detach(), raw / (sum(sigmas) / 2), atol=1e-6)


def test_autograd_patterns_work() -> None:
    """Two separate backwards, a no-grad forward before a grad forward, and double backward (GP)."""
    D = N.apply(make_d(0), "sn_gamma_diff")
    x1, x2 = inputs(seed=1), inputs(seed=2)
    D(x1).sum().backward()
    D(x2).sum().backward()  # would fail if a normalized-weight graph were cached across forwards
    g_sep = [p.grad.clone() for p in D.parameters()]
    D.zero_grad()
    (D(x1).sum() + D(x2).sum()).backward()
    assert all(torch.allclose(a, p.grad, atol=1e-5) for a, p in zip(g_sep, D.parameters(), strict=True))
    D.zero_grad()
    with torch.no_grad():
        D(x1)
    D(x1).sum().backward()
    assert all(p.grad is not None for p in D.parameters())
    xh = x1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(xh).sum(), xh, create_graph=True)
    (g.pow(2).sum()).backward()


@pytest.mark.parametrize("method", ["sn", "bsn_gamma_same", "snconv"])
def test_autocast_and_inference_mode(method: str) -> None:
    """Under autocast sigma stays in fp32; vectors computed in inference mode are never reused for backward."""
    D = N.apply(make_d(0), method)
    ref = D(inputs()).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = D(inputs())
        assert D[0].weight.dtype == torch.float32
    assert torch.allclose(y.float(), ref, rtol=0.1, atol=0.05)
    with torch.inference_mode():
        D(inputs())
    D(inputs()).sum().backward()
    assert D[0].parametrizations.weight.original.grad is not None


def test_bsn_equals_sn_on_linear_and_1x1_conv() -> None:
    x = torch.randn(3, 6, 5, 5)
    for make in (lambda: nn.Sequential(nn.Conv2d(6, 4, 1), nn.Flatten(), nn.Linear(100, 3)),):
        torch.manual_seed(0)
        a = N.apply(make(), "sn", scale=1.2)
        torch.manual_seed(0)
        b = N.apply(make(), "bsn", scale=1.2)
        assert all(len(power_states(m)) == 1 for _, m in N.layers(b))
        for _ in range(3):
            assert torch.equal(a(x), b(x))
            N.update(a)
            N.update(b)
        a.eval()
        b.eval()
        assert torch.equal(a(x), b(x))


def test_bsn_uses_both_reshapes_on_convs() -> None:
    D = N.apply(make_d(0), "bsn")
    dims = [sorted(s.dim for s in power_states(m)) for _, m in N.layers(D)]
    assert dims == [[0, 1], [0, 1], [0, 1], [0]]
    # ConvTranspose2d: SN uses dim 1 (the operator's c_out)
    sn = N.apply(make_d(0), "sn")
    assert [power_states(m)[0].dim for _, m in N.layers(sn)] == [0, 0, 1, 0]


@pytest.mark.parametrize("method", ["sn_gamma_same", "sn_gamma_diff", "bsn_gamma_same", "bsn_gamma_diff"])
def test_gamma_is_trainable_and_scales_bias(method: str) -> None:
    D = N.apply(make_d(0), method, scale=1.5)
    gammas = [(n, p) for n, p in D.named_parameters() if n.endswith(N.GAMMA_NAME)]
    assert len(gammas) == (1 if method.endswith("same") else 4)
    assert all(p.requires_grad and float(p.detach()) == 1.0 for _, p in gammas)
    D(inputs()).sum().backward()
    assert all(p.grad is not None and float(p.grad.abs()) > 0 for _, p in gammas)
    layer = D[0]
    w1, b1 = layer.weight.detach().clone(), layer.bias.detach().clone()
    with torch.no_grad():
        for _, p in gammas:
            p.fill_(2.5)
    assert torch.allclose(layer.weight.detach(), 2.5 * w1, atol=1e-6)
    assert torch.allclose(layer.bias.detach(), 2.5 * layer.parametrizations.bias.original.detach())
    assert torch.allclose(b1, layer.parametrizations.bias.original.detach())


def test_scale_does_not_touch_biases() -> None:
    D = N.apply(make_d(0), "bsn", scale=2.0)
    assert not parametrize.is_parametrized(D[0], "bias")
    ref = N.apply(make_d(0), "bsn", scale=1.0)
    assert torch.allclose(D[0].weight, 2.0 * ref[0].weight, atol=1e-6)


def test_grad_through_uv_changes_gradients_slightly() -> None:
    x = inputs()
    grads = []
    for through in (False, True):
        D = N.apply(make_d(4), "bsn", grad_through_uv=through)
        for _ in range(20):
            N.update(D)
        D(x).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in D.parameters()]))
    rel = float((grads[0] - grads[1]).norm() / grads[0].norm())
    assert 1e-7 < rel < 0.2, rel


# ----------------------------------------------------------------------------------------
# SNConv specifics
# ----------------------------------------------------------------------------------------
def test_snconv_learns_input_shape_lazily_and_checkpoints() -> None:
    D = N.apply(make_d(0), "snconv")
    assert [N.input_size(m) for _, m in N.layers(D)] == [None] * 4
    rng = torch.get_rng_state()
    D(inputs())
    assert torch.equal(rng, torch.get_rng_state()), "the lazy init must not consume the global RNG"
    assert [N.input_size(m) for _, m in N.layers(D)] == LAYER_HW
    assert power_states(D[0])[0]._u.shape == (1, 3, 8, 8)
    # checkpoint into a module that never ran a forward
    fresh = N.apply(make_d(1), "snconv")
    fresh.load_state_dict(D.state_dict())
    assert [N.input_size(m) for _, m in N.layers(fresh)] == LAYER_HW
    with pytest.warns(UserWarning, match="learnt input size"):
        D[0](torch.randn(1, 3, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D[0](torch.randn(1, 3, 16, 16))  # warns once per layer


def test_snconv_rejects_non_zero_padding() -> None:
    with pytest.raises(ValueError, match="padding_mode='zeros' only, got 'circular'"):
        N.apply(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")), "snconv")


# ----------------------------------------------------------------------------------------
# the paper's theorems, statistically
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("m,n", [(16, 64), (64, 16), (32, 32), (8, 200)])
def test_thm2_sn_variance_between_lecun_bounds(m: int, n: int) -> None:
    """Thm. 2: for W with i.i.d. symmetric entries, L/max(m,n) <= Var(W/||W||) <= 1/max(m,n).

    The upper bound holds for every matrix (||W||_F^2 <= min(m,n) ||W||_2^2); for
    Gaussians ||W||_2 ~ sqrt(m)+sqrt(n), so the variance is about 1/(sqrt m + sqrt n)^2
    >= 1/(4 max): we check a generous L = 0.1.
    """
    torch.manual_seed(m * 1000 + n)
    layer = nn.Linear(n, m, bias=False)
    with torch.no_grad():
        layer.weight.normal_()
    N.apply(layer, "sn")
    for _ in range(100):
        N.update(layer)
    var = float(layer.weight.detach().double().var(correction=0))
    assert 0.1 / max(m, n) <= var <= 1.0 / max(m, n) * (1 + 1e-3)


@pytest.mark.parametrize("c_out,c_in,k", [(64, 64, 3), (32, 3, 3), (64, 32, 4), (16, 64, 4)])
def test_thm3_bsn_variance_is_xavier_like(c_out: int, c_in: int, k: int) -> None:
    """Thm. 3: BSN-normalized Gaussian kernels have variance ~ 2/(fan_in + fan_out).

    fan_in = c_in k^2, fan_out = c_out k^2. With ||W_(a x b)|| ~ sqrt(a) + sqrt(b) the ratio
    is k^2/(1+k)^2 for c_in = c_out (0.56 at k = 3, 0.64 at k = 4) and closer to 1 otherwise:
    we check it lies in [0.5, 2] for the kernel sizes of the paper's CNN (k >= 3).
    """
    torch.manual_seed(c_out + c_in + k)
    conv = nn.Conv2d(c_in, c_out, k, bias=False)
    with torch.no_grad():
        conv.weight.normal_()
    N.apply(conv, "bsn")
    for _ in range(100):
        N.update(conv)
    var = float(conv.weight.detach().double().var(correction=0))
    xavier = 2.0 / (c_in * k * k + c_out * k * k)
    assert 0.5 <= var / xavier <= 2.0


# ----------------------------------------------------------------------------------------
# errors, guard rails, integrations
# ----------------------------------------------------------------------------------------
def test_error_messages() -> None:
    with pytest.raises(ValueError, match=r"unknown normalizer 'foo'; valid: none, sn, snconv, bsn"):
        N.apply(make_d(), "foo")
    with pytest.raises(ValueError, match=r"^`scale` must be > 0, got -1.0$"):
        N.apply(make_d(), "sn", scale=-1.0)
    with pytest.raises(ValueError, match="`scale` must be > 0, got 0"):
        N.apply(make_d(), "none", scale=0)
    with pytest.raises(ValueError, match=r"unknown normalizer option\(s\) n_iter; valid options: eps, grad_through_uv"):
        N.apply(make_d(), "bsn", n_iter=2)
    with pytest.raises(ValueError, match="`eps` must be a finite number > 0, got -1"):
        N.apply(make_d(), "sn", eps=-1)
    with pytest.raises(ValueError, match="unknown normalizer 'bar'"):
        N.describe("bar")
    D = N.apply(make_d(), "sn")
    with pytest.raises(ValueError, match="already parametrized"):
        N.apply(D, "bsn")
    with pytest.raises(ValueError, match="no Conv2d/ConvTranspose2d/Linear"):
        N.apply(nn.Sequential(nn.ReLU()), "sn")


def test_update_is_noop_without_normalizers() -> None:
    D = make_d()
    ref = copy.deepcopy(D.state_dict())
    N.update(D)
    assert all(torch.equal(ref[k], v) for k, v in D.state_dict().items())


def test_torch_compile_fullgraph_eager_backend() -> None:
    """Dynamo traces the parametrizations without graph breaks (``fullgraph=True``).

    The ``eager`` backend keeps this test to a few seconds; inductor compiles the same
    graph but takes about a minute on this CPU (docs/NORMALIZERS.md).
    """
    D = N.apply(make_d(0), "snconv", scale=1.2)
    x = inputs()
    N.materialize(D, x)
    compiled = torch.compile(D, backend="eager", fullgraph=True)
    assert torch.allclose(compiled(x), D(x), atol=1e-6)
    compiled(x).sum().backward()
    N.update(compiled)
    assert torch.allclose(compiled(x), D(x), atol=1e-6)


def test_ddp_single_process() -> None:
    """DDP (gloo, world size 1) wraps a normalized D; update() reaches through the wrapper."""
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'store')}", rank=0, world_size=1)
        try:
            D = N.materialize(N.apply(make_d(0), "bsn_gamma_same"), inputs())
            ddp = nn.parallel.DistributedDataParallel(D)
            opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)
            u0 = power_states(D[0])[0]._u.clone()
            for _ in range(2):
                opt.zero_grad()
                ddp(inputs()).sum().backward()
                opt.step()
                N.update(ddp)
            assert not torch.equal(u0, power_states(D[0])[0]._u)
        finally:
            dist.destroy_process_group()
