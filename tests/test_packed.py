"""Packed training (trainers.packed) against the reference loop (trainers.loop.Trainer).

Tolerances (docs/PACKED.md, "Equivalence"): "relative" means max |packed - solo| over a
tensor divided by the largest |value| of the same kind in that network (every parameter
of G, every parameter of D, ...), i.e. relative to the parameter scale.

* float64: <= 1e-6 on everything after 50 steps (<= 1e-8 after 4 steps, for every normalizer
  of the catalogue on every model): parameters, BatchNorm statistics, power-iteration
  vectors, Adam moments; RNG states identical; histories (losses, metrics, diagnostics) and
  eval samples within the same bound. This is the machine-independent proof that the pack
  runs the same algorithm as K solo runs (same RNG streams, step order, normalizer
  semantics, Adam). Observed: docs/PACKED.md.
* float32: <= 1e-4 after 50 steps, except where the reference trajectory itself is not
  reproducible to that level under float32 round-off: a quantity (parameters, statistics,
  each Adam moment, the history) of a member whose solo run moves by more when its own
  initial weights are nudged by one ulp is held to 10x that self-sensitivity; and the
  sngan_cnn G biases that feed a BatchNorm (their exact
  gradient is 0, so any implementation moves them by round-off noise amplified by Adam)
  and the BatchNorm running means that accumulate them are left out of the float32
  comparison (float64 covers them; running variances are compared). For a chaotic member
  (its solo run moves by > 1e-3 under the one-ulp nudge; here the unnormalized CNN) the
  Adam moments are not compared in float32: after 50 steps they are mostly the last
  gradients of near-cancelling terms (biases under a saturated hinge, exactly 0 in one
  kernel's summation order and ~1e-3 in another's), different points of two diverged
  trajectories rather than a measure of equivalence; float64 compares them to 1e-6.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from trainers import normalizers
from trainers.config import ConfigError, TrainConfig
from trainers.loop import Progress, Trainer, TrainResult
from trainers.losses import gradient_penalty
from trainers.models import MODELS
from trainers.normalizers.power import _PowerState
from trainers.packed import PER_MEMBER_KEYS, PackedTrainer, _Adam, can_pack

CNN = {"dataset": "blobs", "model": "sngan_cnn", "resolution": 8, "width": 0.0625, "latent_dim": 8, "batch_size": 8}
MLP = {"dataset": "ring", "model": "mlp", "width": 0.25, "latent_dim": 4, "batch_size": 16}
RESNET = {"dataset": "blobs", "model": "sngan_resnet", "resolution": 8, "width": 1 / 32, "latent_dim": 8,
          "batch_size": 4}  # fmt: skip
ARCHS = {"sngan_cnn": CNN, "mlp": MLP, "sngan_resnet": RESNET}
MEMBERS = [  # one normalizer per pack; scales, lrs, betas and seeds differ
    {"scale": 1.0, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "seed": 0},
    {"scale": 1.5, "lr_g": 5e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9, "seed": 1},
    {"scale": 0.8, "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.9, "beta2": 0.99, "seed": 2},
    {"scale": 1.2, "lr_g": 3e-4, "lr_d": 3e-4, "beta1": 0.5, "beta2": 0.99, "seed": 3},
]
GAUGE = {"G.fc.bias", "G.body.0.bias", "G.body.3.bias", "G.body.6.bias"}
"""sngan_cnn G biases right before a BatchNorm: exact gradient 0 (see the module docstring)."""


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def configs(arch: dict, steps: int = 50, members: list[dict] = MEMBERS, normalizer: str = "sn", **kw) -> list:
    base = {
        **arch, "iterations": steps, "eval_every": 25, "eval_samples": 64, "n_dis": 2, "diagnostics": False,
        "normalizer": normalizer, "metrics": ["mode_coverage", "hq_fraction"], **kw,
    }  # fmt: skip
    return [TrainConfig(**{**base, **m}) for m in members]


def solo(cfg: TrainConfig, nudge: bool = False, report=None) -> tuple[Trainer, TrainResult]:
    t = Trainer(cfg)
    if nudge:  # one ulp, random direction, on every initial weight: the trajectory's own round-off sensitivity
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for p in [*t.G.parameters(), *t.D.parameters()]:
                away = torch.where(torch.rand(p.shape, generator=g) < 0.5, -math.inf, math.inf).to(p.dtype)
                p.copy_(torch.nextafter(p, away))
    return t, t.run(report)


def differences(ref: dict, got: dict, skip: set[str] = frozenset(), trainer: Trainer | None = None) -> dict[str, float]:
    """Max |got - ref| per group, relative to the largest |ref| of the group (the parameter scale).

    ``skip``: "G.name" entries left out, with their Adam moments (``trainer`` names the parameters)."""
    names = {"opt_g": [], "opt_d": []} if trainer is None else {
        "opt_g": [f"G.{n}" for n, _ in trainer.G.named_parameters()],
        "opt_d": [f"D.{n}" for n, _ in trainer.D.named_parameters()]}  # fmt: skip
    groups: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for net in ("G", "D"):
        assert ref[net].keys() == got[net].keys(), net
        for name, a in ref[net].items():
            b = got[net][name]
            if not a.is_floating_point():
                assert torch.equal(a, b), f"{net}.{name}"
                continue
            if f"{net}.{name}" in skip or not a.numel():
                continue
            kind = next((k for k in ("powers", "running_mean", "running_var") if k in name), "params")
            groups.setdefault(f"{net}.{kind}", []).append((a.double(), b.double()))
    for opt in ("opt_g", "opt_d"):
        ra, ga = ref[opt]["state"], got[opt]["state"]
        assert ra.keys() == ga.keys(), opt
        assert ref[opt]["param_groups"] == got[opt]["param_groups"], opt
        for i in ra:
            assert float(ra[i]["step"]) == float(ga[i]["step"]), (opt, i)
            if i < len(names[opt]) and names[opt][i] in skip:
                continue
            for key in ("exp_avg", "exp_avg_sq"):
                groups.setdefault(f"{opt}.{key}", []).append((ra[i][key].double(), ga[i][key].double()))
    out = {}
    for group, pairs in groups.items():
        scale = max(a.abs().max().item() for a, _ in pairs) or 1.0
        out[group] = max((a - b).abs().max().item() for a, b in pairs) / scale
    return out


def history_difference(a: list[dict], b: list[dict]) -> float:
    assert [h["step"] for h in a] == [h["step"] for h in b]
    assert [sorted(h) for h in a] == [sorted(h) for h in b]
    return max(abs(x[k] - y[k]) / max(1.0, abs(x[k])) for x, y in zip(a, b, strict=True) for k in x)


def assert_pack_equals_solo(cfgs: list[TrainConfig], tolerance: float, replay: bool | None = None) -> dict:
    """Run the pack and K solo runs; every state, stream, report and result agrees to ``tolerance``."""
    pack = PackedTrainer(cfgs)
    pack.replay = replay
    seen: list[tuple[int, list]] = []
    results = pack.run(lambda step, progress: seen.append((step, progress)))
    worst: dict[str, float] = {}
    for k, cfg in enumerate(cfgs):
        solo_seen: list[Progress] = []
        ref, ref_result = solo(cfg, report=solo_seen.append)
        assert len(seen) == len(solo_seen)
        for (_, progress), ref_progress in zip(seen, solo_seen, strict=True):  # eval-mode samples
            assert torch.allclose(progress[k].samples, ref_progress.samples, rtol=0, atol=tolerance)
            assert (progress[k].step, progress[k].done, progress[k].status) == (
                ref_progress.step, ref_progress.done, ref_progress.status)  # fmt: skip
        got = pack.member_state_dict(k)
        diffs = differences(ref.state_dict(), got)
        assert max(diffs.values()) <= tolerance, (k, cfg.normalizer, diffs)
        assert torch.equal(ref.state_dict()["rng_torch"], got["rng_torch"])
        assert torch.equal(ref.state_dict()["rng_data"], got["rng_data"])
        assert history_difference(ref_result.history, results[k].history) <= tolerance
        assert (results[k].status, results[k].step) == (ref_result.status, ref_result.step)
        assert results[k].best_step == ref_result.best_step
        worst = {g: max(worst.get(g, 0.0), d) for g, d in diffs.items()}
    return worst


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------
def test_private_generator_continues_the_global_stream():
    torch.manual_seed(7)
    torch.randn(3)
    g = torch.Generator()
    g.set_state(torch.get_rng_state())
    glob = [torch.randn(8, 4), torch.rand(8, 1, 1, 1), torch.randn(17)]
    priv = [torch.randn(8, 4, generator=g), torch.rand(8, 1, 1, 1, generator=g), torch.randn(17, generator=g)]
    assert all(torch.equal(a, b) for a, b in zip(glob, priv, strict=True))
    assert torch.equal(g.get_state(), torch.get_rng_state())


def test_vectorized_adam_is_bitwise_torch_adam():
    torch.manual_seed(0)
    lrs, b1s, b2s = [1e-4, 2e-4, 3.3e-4, 1e-3], [0.0, 0.5, 0.9, 0.3], [0.9, 0.999, 0.99, 0.95]
    shapes = [(5, 7), (3,), (2, 3, 4)]
    init = [[torch.randn(s) for s in shapes] for _ in lrs]
    flat = torch.stack([torch.cat([t.reshape(-1) for t in ts]) for ts in init])
    adam = _Adam(flat, lrs, b1s, b2s)
    refs = [[torch.nn.Parameter(t.clone()) for t in ts] for ts in init]
    opts = [torch.optim.Adam(r, lr=lr, betas=(b1, b2)) for r, lr, b1, b2 in zip(refs, lrs, b1s, b2s, strict=True)]
    for _ in range(30):  # gradients over 12 orders of magnitude, down to Adam's eps
        grads = [[torch.randn(s) * 10.0 ** float(torch.randint(-12, 1, ())) for s in shapes] for _ in lrs]
        for ps, gs, opt in zip(refs, grads, opts, strict=True):
            for p, g in zip(ps, gs, strict=True):
                p.grad = g
            opt.step()
        adam.step(torch.stack([torch.cat([g.reshape(-1) for g in gs]) for gs in grads]))
    for k, ps in enumerate(refs):
        assert torch.equal(flat[k], torch.cat([p.detach().reshape(-1) for p in ps])), k


def test_torch_adam_refuses_per_member_hyperparameters():
    """Why the pack has its own Adam: torch.optim.Adam takes 1-element tensor lr/betas only."""
    p = torch.nn.Parameter(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="1-element"):
        torch.optim.Adam([p], lr=torch.full((4, 1), 1e-3), capturable=False, foreach=False)


def test_gradient_penalty_is_bitwise_the_autograd_formula():
    """losses.gradient_penalty uses torch.func.grad (it must run under vmap); a solo run gets exactly
    the numbers of the autograd.grad(create_graph=True) formula, value and parameter gradients."""
    for dtype in (torch.float32, torch.float64):
        with default_dtype(dtype):
            t = Trainer(configs(CNN, normalizer="sn_gamma_diff", loss="wgan_gp")[1])
            real, fake, alpha = torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8), torch.rand(8, 1, 1, 1)
            x_hat = (real + alpha * (fake - real)).requires_grad_(True)
            (g,) = torch.autograd.grad(t.D(x_hat).sum(), x_hat, create_graph=True)
            ref = ((torch.sqrt(g.flatten(1).pow(2).sum(1) + 1e-8) - 1.0) ** 2).mean()
            ours = gradient_penalty(t.D, real, fake, alpha)
            params = list(t.D.parameters())
            ga = torch.autograd.grad(ref, params, allow_unused=True)
            gb = torch.autograd.grad(ours, params, allow_unused=True)
            assert torch.equal(ref, ours)
            assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(ga, gb, strict=True))


def test_scale_is_a_stacked_buffer_outside_the_state_dict():
    """Per-member c: a non-persistent buffer, so stack_module_state stacks it and checkpoints do not change."""
    ds = []
    for c in (0.5, 2.0):
        torch.manual_seed(0)
        ds.append(normalizers.apply(torch.nn.Sequential(torch.nn.Linear(4, 3)), "sn", scale=c))
    assert not any("scale" in k or "_cq" in k or "_cp" in k for k in ds[0].state_dict())
    _, buffers = stack_module_state(ds)
    assert torch.equal(buffers["0.parametrizations.weight.0.scale"], torch.tensor([0.5, 2.0]))
    for _ in range(30):
        normalizers.update(ds[0])
    w = normalizers.effective_weight(ds[0][0]) / 0.5
    torch.testing.assert_close(torch.linalg.matrix_norm(w, 2), torch.tensor(1.0), atol=0.05, rtol=0)


def test_power_iteration_cache_under_functorch():
    """Under vmap the forward cache keys on the stacked tensors: a pack iterates exactly as often as
    a solo run (once per D update, in update()); under other transforms it recomputes. Either way the
    result is the solo one."""
    counts = {"n": 0}
    original = _PowerState._store

    def counting(self, key, q, p):
        counts["n"] += key is not None
        return original(self, key, q, p)

    cfgs = configs(MLP, steps=3, members=MEMBERS[:2])
    pack, ref = PackedTrainer(cfgs), Trainer(cfgs[0])
    pack.replay = False  # the vmapped calls (what a recorded graph replays runs no Python to count)
    pack.train_step()
    ref.train_step()
    _PowerState._store = counting  # type: ignore[method-assign]
    try:
        ref.train_step()
        solo_stores = counts["n"]
        counts["n"] = 0
        pack.train_step()
        assert counts["n"] == solo_stores > 0  # same number of cache fills (in step()), no recomputation
    finally:
        _PowerState._store = original  # type: ignore[method-assign]
    # nested transforms: grad of a vmapped D has no stable tensors to key on; it recomputes and agrees
    D, x = pack.members[0].D, torch.randn(4, 2)
    params, buffers = stack_module_state([D, D])
    nested = torch.func.grad(lambda p: vmap(lambda p, b: functional_call(D, (p, b), (x,)).sum())(p, buffers).sum())
    grads = nested(params)
    ref_grads = torch.autograd.grad(D(x).sum(), list(D.parameters()))
    for g, r in zip(grads.values(), ref_grads, strict=True):
        torch.testing.assert_close(g[0], r, rtol=1e-6, atol=1e-7)


def test_can_pack_names_every_differing_key():
    cfgs = configs(CNN)
    assert can_pack(cfgs) == (True, "")
    other = [*cfgs[:2], TrainConfig(**{**cfgs[2].to_dict(), "width": 0.125, "batch_size": 16})]
    ok, why = can_pack(other)
    assert not ok
    assert "batch_size" in why and "width" in why and "member 2 0.125" in why and "member 0 0.0625" in why
    with pytest.raises(ConfigError, match="differing key"):
        PackedTrainer(other)
    ok, why = can_pack([*cfgs[:1], TrainConfig(**{**cfgs[1].to_dict(), "model": "mlp", "dataset": "ring"})])
    assert not ok and "model" in why and "dataset" in why
    mixed = [cfgs[0], TrainConfig(**{**cfgs[1].to_dict(), "normalizer": "bsn"})]
    ok, why = can_pack(mixed)
    assert not ok and "normalizer: member 0 'sn' vs member 1 'bsn'" in why and "one module structure" in why
    assert "\n" not in why
    assert can_pack([]) == (False, "nothing to pack: no configurations")
    assert PER_MEMBER_KEYS >= {"scale", "seed", "lr_g", "lr_d", "beta1", "beta2"}
    assert "normalizer" not in PER_MEMBER_KEYS


# --------------------------------------------------------------------------------------
# equivalence with K solo runs
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("normalizer", list(normalizers.METHODS))
def test_every_normalizer_packs_on_every_model_and_equals_solo_in_float64(normalizer, model):
    """The whole catalogue: every normalizer x model that trains solo packs (can_pack refuses nothing
    here) and matches K solo runs in float64; the gamma variants train with WGAN-GP (their default)."""
    with default_dtype(torch.float64):
        cfgs = configs(ARCHS[model], steps=4, members=MEMBERS[:2], normalizer=normalizer, eval_every=2)
        assert can_pack(cfgs) == (True, "")
        assert_pack_equals_solo(cfgs, 1e-8)


@pytest.mark.parametrize(
    ("normalizer", "model"),  # bsn on every model; SNConv's and gamma's parametrizations on the CNN
    [*(("bsn", m) for m in sorted(MODELS)), ("snconv", "sngan_cnn"), ("sn_gamma_same", "sngan_cnn")],
)
def test_recorded_graphs_replay_the_vmapped_calls(normalizer, model):
    """Replay of recorded graphs (trainers.packed_graph, the default of long runs) against the same pack run through
    vmap on every call: the same numbers in float64 (fused biases round differently, nothing else),
    recorded once per distinct call, and recording leaves no trace in the state (the first step equal)."""
    with default_dtype(torch.float64):
        cfgs = configs(ARCHS[model], steps=3, members=MEMBERS[:2], normalizer=normalizer, n_dis=2)
        replayed, vmapped = PackedTrainer(cfgs), PackedTrainer(cfgs)
        replayed.replay, vmapped.replay = True, False  # short runs default to vmap (REPLAY_MIN_ITERATIONS)
        for _ in range(3):
            losses = replayed.train_step(), vmapped.train_step()
            torch.testing.assert_close(*(torch.tensor(x) for x in losses), rtol=1e-10, atol=0)
        for a, b in zip(replayed._rows(), vmapped._rows(), strict=True):  # relative to each tensor's largest
            assert (a - b).abs().max() <= 1e-9 * b.abs().max(), (a - b).abs().max()
        assert len(replayed.G.graphs) == 2 and len(replayed.D.graphs) == 3  # G(z) twice, D loss, update, G step
        assert not vmapped.G.graphs and not vmapped.D.graphs


@pytest.mark.parametrize(
    ("arch", "extra"),
    [
        (CNN, {"normalizer": "sn"}), (CNN, {"normalizer": "bsn"}), (CNN, {"normalizer": "none"}),
        (MLP, {"normalizer": "bsn"}), (MLP, {"normalizer": "sn", "loss": "ns"}),
        (CNN, {"normalizer": "bsn", "loss": "wgan_gp", "grad_through_uv": True, "iterations": 10}),
        (CNN, {"normalizer": "sn", "diagnostics": True, "iterations": 10, "eval_every": 5}),
    ],
    ids=["cnn-sn", "cnn-bsn", "cnn-none", "mlp-bsn", "mlp-sn-ns", "cnn-bsn-wgan_gp-grad_through_uv", "cnn-diagnostics"],
)
def test_pack_equals_solo_runs_in_float64(arch, extra):
    """50 steps, 4 members with different scales, lrs, betas and seeds: same RNG streams, step order,
    normalizer semantics, Adam and reports (diagnostics included) as 4 solo runs; with recorded
    graphs (the default of long runs), whose replay the test below compares with vmap directly."""
    with default_dtype(torch.float64):
        assert_pack_equals_solo(configs(arch, **extra), 1e-6, replay=True)


@pytest.mark.parametrize(("arch", "normalizer"), [(CNN, "sn"), (CNN, "bsn"), (CNN, "none"), (MLP, "sn"), (MLP, "bsn")])
def test_pack_matches_solo_runs_in_float32(arch, normalizer):
    cfgs = configs(arch, normalizer=normalizer)
    pack = PackedTrainer(cfgs)
    results = pack.run()
    for k, cfg in enumerate(cfgs):
        ref, ref_result = solo(cfg)
        diffs = differences(ref.state_dict(), pack.member_state_dict(k), skip=GAUGE, trainer=ref)
        diffs = {g: d for g, d in diffs.items() if "running_mean" not in g}  # running means carry the gauge biases
        history = history_difference(ref_result.history, results[k].history)
        tolerance, history_tolerance = dict.fromkeys(diffs, 1e-4), 2e-2
        if max(diffs.values()) > 1e-4 or history > history_tolerance:  # is the solo run itself that sensitive?
            nudged, nudged_result = solo(cfg, nudge=True)
            own = differences(ref.state_dict(), nudged.state_dict(), skip=GAUGE, trainer=ref)
            tolerance = {g: max(1e-4, 10 * own[g]) for g in diffs}
            own_history = history_difference(ref_result.history, nudged_result.history)
            history_tolerance = max(history_tolerance, 10 * own_history)
            if max(own[g] for g in diffs if not g.startswith("opt")) > 1e-3:  # chaotic: see the module docstring
                diffs = {g: d for g, d in diffs.items() if not g.startswith("opt")}
        assert all(diffs[g] <= tolerance[g] for g in diffs), (k, cfg.normalizer, diffs, tolerance)
        assert history <= history_tolerance, (k, cfg.normalizer, history, history_tolerance)
        assert (results[k].status, results[k].step) == (ref_result.status, ref_result.step)


# --------------------------------------------------------------------------------------
# divergence, resume, checkpoints, reports
# --------------------------------------------------------------------------------------
def _states(pack: PackedTrainer, k: int) -> dict[str, torch.Tensor]:
    st = pack.member_state_dict(k)
    return {f"{net}.{n}": v for net in ("G", "D") for n, v in st[net].items()}


def test_a_diverging_member_is_frozen_and_does_not_touch_the_others():
    good = configs(CNN, steps=12, members=MEMBERS[:3], eval_every=6, normalizer="none")
    bad = [good[0], TrainConfig(**{**good[0].to_dict(), "lr_d": 10.0, "lr_g": 10.0, "seed": 5}), good[2]]
    reports: list[tuple[int, list]] = []
    pack = PackedTrainer(bad)
    results = pack.run(lambda step, progress: reports.append((step, progress)))
    alone, alone_result = solo(bad[1])
    assert results[1].status == alone_result.status == "diverged"
    assert results[1].step == alone_result.step < 12 and "threshold" in results[1].error
    assert results[1].error.split(" at ")[1] == alone_result.error.split(" at ")[1]  # the loss differs by round-off
    # evaluated where it stopped, as the solo run is (metrics may be NaN where G is broken)
    assert results[1].history[-1].keys() == alone_result.history[-1].keys() >= {"step", "loss_d", "mode_coverage"}
    first = reports[0]
    assert first[0] == results[1].step and first[1][0] is None and first[1][1].status == "diverged"
    assert all(ps[1] is None for _, ps in reports[1:])  # nothing more from the stopped member
    frozen = pack.member_state_dict(1)
    assert frozen["step"] == results[1].step and frozen["status"] == "diverged"
    assert frozen["opt_d"]["state"][0]["step"] == results[1].step * bad[1].n_dis
    # the others are bitwise what they are in a pack without the diverging member
    clean = PackedTrainer(good)
    clean_results = clean.run()
    for k in (0, 2):
        a, b = _states(pack, k), _states(clean, k)
        assert all(torch.equal(a[n], b[n]) for n in a), k
        assert results[k].history == clean_results[k].history and results[k].status == "completed"


def test_a_planted_nan_stops_only_its_member():
    cfgs = configs(MLP, steps=10, members=MEMBERS[:3], eval_every=5)
    pack = PackedTrainer(cfgs)
    source, calls = pack.members[2].source, {"n": 0}

    class Poisoned:
        def sample(self, n, generator):
            calls["n"] += 1
            x = source.sample(n, generator)
            return x * math.nan if calls["n"] >= 7 else x

    pack.members[2].source = Poisoned()  # type: ignore[assignment]
    results = pack.run()
    assert results[2].status == "diverged" and results[2].step == 4  # n_dis=2: the 7th batch is in step 4
    assert "nan" in results[2].error
    clean = PackedTrainer(cfgs)
    clean.run()
    for k in (0, 1):
        a, b = _states(pack, k), _states(clean, k)
        assert all(torch.equal(a[n], b[n]) for n in a), k
    assert [r.status for r in results[:2]] == ["completed", "completed"]


@pytest.mark.parametrize("replay", [False, True], ids=["vmap", "replay"])
def test_resume_from_a_pack_checkpoint_is_bit_exact(tmp_path: Path, replay: bool):
    cfgs = configs(CNN, steps=8, members=MEMBERS[:3], eval_every=4, normalizer="bsn")
    straight = PackedTrainer(cfgs)
    straight.replay = replay
    straight_results = straight.run()
    first = PackedTrainer(configs(CNN, steps=4, members=MEMBERS[:3], eval_every=4, normalizer="bsn"))
    first.replay = replay
    first.run()
    torch.save(first.state_dict(), tmp_path / "pack.pt")  # what the sweeper's pack trial checkpoints
    saved = torch.load(tmp_path / "pack.pt", weights_only=True)
    resumed = PackedTrainer(cfgs)  # only `iterations` changed: allowed, as for Trainer
    resumed.replay = replay  # recorded afresh after loading: the primed caches make it the same graph
    resumed.load_state_dict(saved)
    results = resumed.run()
    for k in range(3):
        a, b = _states(straight, k), _states(resumed, k)
        assert all(torch.equal(a[n], b[n]) for n in a), k
        assert results[k].history == straight_results[k].history
    with pytest.raises(ConfigError, match="configuration changed"):
        PackedTrainer([TrainConfig(**{**c.to_dict(), "lr_d": 1e-3}) for c in cfgs]).load_state_dict(saved)


def test_resume_after_a_divergence_keeps_the_member_frozen(tmp_path: Path):
    good = configs(MLP, steps=12, members=MEMBERS[:2], eval_every=3)
    cfgs = [good[0], TrainConfig(**{**good[1].to_dict(), "lr_d": 50.0, "lr_g": 50.0, "divergence_threshold": 2.5})]
    straight = PackedTrainer(cfgs)
    straight_results = straight.run()
    assert straight_results[1].status == "diverged" and straight_results[1].step < 6
    half = PackedTrainer([TrainConfig(**{**c.to_dict(), "iterations": 6}) for c in cfgs])
    half.run()
    torch.save(half.state_dict(), tmp_path / "pack.pt")
    resumed = PackedTrainer(cfgs)
    resumed.load_state_dict(torch.load(tmp_path / "pack.pt", weights_only=True))
    results = resumed.run()
    assert [(r.status, r.step) for r in results] == [(r.status, r.step) for r in straight_results]
    for k in range(2):
        a, b = _states(straight, k), _states(resumed, k)
        assert all(torch.equal(a[n], b[n]) for n in a), k


def test_member_checkpoint_is_a_trainer_checkpoint(tmp_path: Path):
    cfgs = configs(MLP, steps=6, members=MEMBERS[:2], eval_every=3)
    pack = PackedTrainer(cfgs)
    paths = []
    pack.run(lambda step, progress: paths.append(progress[1].save_checkpoint(tmp_path / f"m1-{step}")))
    t = Trainer(TrainConfig(**{**cfgs[1].to_dict(), "iterations": 8}))
    t.load(paths[-1])  # Trainer.load accepts it: same keys, same optimizer state layout
    assert t.step == 6 and t.history == pack.history[1]
    assert torch.equal(t.data_rng.get_state(), pack.members[1].data_rng.get_state())
    t.run()
    assert t.step == 8


def test_report_progress_matches_trainer_metrics():
    cfgs = configs(MLP, steps=4, members=MEMBERS[:2], eval_every=2, diagnostics=True)
    seen: list[tuple[int, list]] = []
    PackedTrainer(cfgs).run(lambda step, progress: seen.append((step, progress)))
    solo_seen = []
    Trainer(cfgs[0]).run(solo_seen.append)
    assert [s for s, _ in seen] == [p.step for p in solo_seen] == [2, 4]
    for (_, progress), ref in zip(seen, solo_seen, strict=True):
        assert len(progress) == 2
        assert progress[0].metrics.keys() == ref.metrics.keys()  # diagnostics included
        assert any(k.startswith("grad_norm") or k.startswith("sigma") for k in ref.metrics)
        assert progress[0].samples is not None and progress[0].samples.shape == ref.samples.shape
        assert (progress[0].done, progress[0].status) == (ref.done, ref.status)
