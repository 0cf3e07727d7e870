"""Packed training (trainers.packed) against the reference loop (trainers.loop.Trainer).

Tolerances (docs/PACKED.md, "Equivalence"): "relative" means max |packed - solo| over a
tensor divided by the largest |value| of the same kind in that network (every parameter
of G, every parameter of D, ...), i.e. relative to the parameter scale.

* float64: <= 1e-6 on everything: parameters, BatchNorm statistics, power-iteration
  vectors, Adam moments; RNG states identical; histories (losses, metrics) <= 1e-6.
  Observed <= 1e-10. This is the machine-independent proof that the pack runs the same
  algorithm as K solo runs (same RNG streams, step order, normalizer semantics, Adam).
* float32: <= 1e-4 after 50 steps, except where the reference trajectory itself is not
  reproducible to that level under float32 round-off: the unnormalized (``none``) CNN
  member moves by ~1e-2 when its own initial weights are nudged by one ulp, so it is
  held to 10x that self-sensitivity; and the sngan_cnn G biases that feed a BatchNorm
  (their exact gradient is 0, so any implementation moves them by round-off noise
  amplified by Adam) and the BatchNorm running means that accumulate them are left out
  of the float32 comparison (float64 covers them; running variances are compared).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch

from trainers.config import ConfigError, TrainConfig
from trainers.loop import Progress, Trainer, TrainResult
from trainers.packed import PackedTrainer, _Adam, _Params, can_pack

CNN = {"dataset": "blobs", "model": "sngan_cnn", "resolution": 8, "width": 0.0625, "latent_dim": 8, "batch_size": 8}
MLP = {"dataset": "ring", "model": "mlp", "width": 0.25, "latent_dim": 4, "batch_size": 16}
MEMBERS = [  # mixed normalizers, scales, lrs, betas, seeds
    {"normalizer": "none", "scale": 1.0, "lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "seed": 0},
    {"normalizer": "sn", "scale": 1.5, "lr_g": 5e-4, "lr_d": 1e-4, "beta1": 0.0, "beta2": 0.9, "seed": 1},
    {"normalizer": "bsn", "scale": 0.8, "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.9, "beta2": 0.99, "seed": 2},
    {"normalizer": "sn", "scale": 1.2, "lr_g": 3e-4, "lr_d": 3e-4, "beta1": 0.5, "beta2": 0.99, "seed": 3},
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


def configs(arch: dict, steps: int = 50, members: list[dict] = MEMBERS, **kw) -> list[TrainConfig]:
    base = {
        **arch, "iterations": steps, "eval_every": 25, "eval_samples": 64, "n_dis": 2, "diagnostics": False,
        "metrics": ["mode_coverage", "hq_fraction"], **kw,
    }  # fmt: skip
    return [TrainConfig(**base, **m) for m in members]


def solo(cfg: TrainConfig, nudge: bool = False, report=None) -> tuple[Trainer, TrainResult]:
    t = Trainer(cfg)
    if nudge:  # one ulp, random direction, on every initial weight: the trajectory's own round-off sensitivity
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for p in [*t.G.parameters(), *t.D.parameters()]:
                away = torch.where(torch.rand(p.shape, generator=g) < 0.5, -math.inf, math.inf).to(p.dtype)
                p.copy_(torch.nextafter(p, away))
    return t, t.run(report)


def differences(ref: dict, got: dict, skip: set[str] = frozenset()) -> dict[str, float]:
    """Max |got - ref| per group, relative to the largest |ref| of the group (the parameter scale)."""
    groups: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for net in ("G", "D"):
        for name, a in ref[net].items():
            b = got[net][name]
            if not a.is_floating_point():
                assert torch.equal(a, b), f"{net}.{name}"
                continue
            if f"{net}.{name}" in skip or not a.numel():
                continue
            kind = (
                "powers"
                if "powers" in name
                else "bn_mean"
                if "running_mean" in name
                else "bn_var"
                if "running_var" in name
                else "params"
            )
            groups.setdefault(f"{net}.{kind}", []).append((a.double(), b.double()))
    for opt in ("opt_g", "opt_d"):
        ra, ga = ref[opt]["state"], got[opt]["state"]
        assert ra.keys() == ga.keys(), opt
        for i in ra:
            assert float(ra[i]["step"]) == float(ga[i]["step"]), (opt, i)
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
    params = _Params(init, torch.device("cpu"))
    adam = _Adam(params, lrs, b1s, b2s)
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
        assert all(torch.equal(a, b.detach()) for a, b in zip(params.member(k), ps, strict=True))


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
    ok, why = can_pack([TrainConfig(**{**cfgs[0].to_dict(), "normalizer": "snconv"})])
    assert not ok and "snconv" in why and "cannot be packed" in why
    ok, why = can_pack([TrainConfig(**{**cfgs[0].to_dict(), "model": "sngan_resnet"})])
    assert not ok and "sngan_resnet" in why
    assert can_pack([]) == (False, "nothing to pack: no configurations")


# --------------------------------------------------------------------------------------
# equivalence with K solo runs
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "extra"),
    [(CNN, {}), (MLP, {}), (CNN, {"loss": "wgan_gp", "grad_through_uv": True, "iterations": 10})],
    ids=["sngan_cnn", "mlp", "sngan_cnn-wgan_gp-grad_through_uv"],
)
def test_pack_equals_solo_runs_in_float64(arch, extra):
    """Same RNG streams, step order, normalizer semantics and Adam: float64 agreement to 1e-6."""
    with default_dtype(torch.float64):
        cfgs = configs(arch, **extra)
        pack = PackedTrainer(cfgs)
        seen: list[tuple[int, list]] = []
        results = pack.run(lambda step, progress: seen.append((step, progress)))
        for k, cfg in enumerate(cfgs):
            solo_seen: list[Progress] = []
            ref, ref_result = solo(cfg, report=solo_seen.append)
            for (_, progress), ref_progress in zip(seen, solo_seen, strict=True):  # eval-mode samples
                assert torch.allclose(progress[k].samples, ref_progress.samples, rtol=0, atol=1e-6)
            got = pack.member_state_dict(k)
            diffs = differences(ref.state_dict(), got)
            assert max(diffs.values()) <= 1e-6, (k, cfg.normalizer, diffs)
            assert torch.equal(ref.state_dict()["rng_torch"], got["rng_torch"])
            assert torch.equal(ref.state_dict()["rng_data"], got["rng_data"])
            assert history_difference(ref_result.history, results[k].history) <= 1e-6
            assert (results[k].status, results[k].step) == (ref_result.status, ref_result.step)
            assert results[k].best_step == ref_result.best_step
    steps = [s for s, _ in seen]
    assert steps == [h["step"] for h in results[0].history]
    assert all(p is not None and p.done == (s == cfgs[0].iterations) for s, ps in seen for p in ps)


@pytest.mark.parametrize("arch", [CNN, MLP], ids=["sngan_cnn", "mlp"])
def test_pack_matches_solo_runs_in_float32(arch):
    cfgs = configs(arch)
    pack = PackedTrainer(cfgs)
    results = pack.run()
    for k, cfg in enumerate(cfgs):
        ref, ref_result = solo(cfg)
        diffs = differences(ref.state_dict(), pack.member_state_dict(k), skip=GAUGE)
        diffs = {g: d for g, d in diffs.items() if not g.endswith(".bn_mean")}  # running means carry the gauge biases
        tolerance = 1e-4
        if max(diffs.values()) > tolerance:  # is the reference itself that sensitive to round-off?
            nudged, _ = solo(cfg, nudge=True)
            own = differences(ref.state_dict(), nudged.state_dict(), skip=GAUGE)
            tolerance = max(tolerance, 10 * max(d for g, d in own.items() if not g.endswith(".bn_mean")))
        assert max(diffs.values()) <= tolerance, (k, cfg.normalizer, diffs, tolerance)
        assert (results[k].status, results[k].step) == (ref_result.status, ref_result.step)
        assert history_difference(ref_result.history, results[k].history) <= 2e-2


# --------------------------------------------------------------------------------------
# divergence, resume, checkpoints, reports
# --------------------------------------------------------------------------------------
def _states(pack: PackedTrainer, k: int) -> dict[str, torch.Tensor]:
    st = pack.member_state_dict(k)
    return {f"{net}.{n}": v for net in ("G", "D") for n, v in st[net].items()}


def test_a_diverging_member_is_frozen_and_does_not_touch_the_others():
    good = configs(CNN, steps=12, members=MEMBERS[:3], eval_every=6)
    bad = [good[0], TrainConfig(**{**good[0].to_dict(), "lr_d": 10.0, "lr_g": 10.0, "seed": 5}), good[2]]
    reports: list[tuple[int, list]] = []
    pack = PackedTrainer(bad)
    results = pack.run(lambda step, progress: reports.append((step, progress)))
    alone, alone_result = solo(bad[1])
    assert results[1].status == alone_result.status == "diverged"
    assert results[1].step == alone_result.step < 12 and "threshold" in results[1].error
    assert results[1].history[-1].keys() == {"step", "loss_d", "loss_g"}
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
    source, calls = pack.sources[2], {"n": 0}

    class Poisoned:
        def sample(self, n, generator):
            calls["n"] += 1
            x = source.sample(n, generator)
            return x * math.nan if calls["n"] >= 7 else x

    pack.sources[2] = Poisoned()  # type: ignore[assignment]
    results = pack.run()
    assert results[2].status == "diverged" and results[2].step == 4  # n_dis=2: the 7th batch is in step 4
    assert "nan" in results[2].error
    clean = PackedTrainer(cfgs)
    clean.run()
    for k in (0, 1):
        a, b = _states(pack, k), _states(clean, k)
        assert all(torch.equal(a[n], b[n]) for n in a), k
    assert [r.status for r in results[:2]] == ["completed", "completed"]


def test_resume_from_a_pack_checkpoint_is_bit_exact(tmp_path: Path):
    cfgs = configs(CNN, steps=8, members=MEMBERS[:3], eval_every=4)
    straight = PackedTrainer(cfgs)
    straight_results = straight.run()
    first = PackedTrainer(configs(CNN, steps=4, members=MEMBERS[:3], eval_every=4))
    first.run()
    first.save(tmp_path)
    resumed = PackedTrainer(cfgs)  # only `iterations` changed: allowed, as for Trainer
    resumed.load(tmp_path)
    results = resumed.run()
    for k in range(3):
        a, b = _states(straight, k), _states(resumed, k)
        assert all(torch.equal(a[n], b[n]) for n in a), k
        assert results[k].history == straight_results[k].history
    with pytest.raises(ConfigError, match="configuration changed"):
        PackedTrainer([TrainConfig(**{**c.to_dict(), "lr_d": 1e-3}) for c in cfgs]).load(tmp_path)


def test_member_checkpoint_is_a_trainer_checkpoint(tmp_path: Path):
    cfgs = configs(MLP, steps=6, members=MEMBERS[:2], eval_every=3)
    pack = PackedTrainer(cfgs)
    paths = []
    pack.run(lambda step, progress: paths.append(progress[1].save_checkpoint(tmp_path / f"m1-{step}")))
    t = Trainer(TrainConfig(**{**cfgs[1].to_dict(), "iterations": 8}))
    t.load(paths[-1])  # Trainer.load accepts it: same keys, same optimizer state layout
    assert t.step == 6 and t.history == pack.history[1]
    assert torch.equal(t.data_rng.get_state(), pack.data_rngs[1].get_state())
    t.run()
    assert t.step == 8


def test_pack_resumes_from_member_checkpoints(tmp_path: Path):
    """The Tune-style path: each member saved its own checkpoint; a new pack resumes from them."""
    cfgs = configs(MLP, steps=8, members=MEMBERS[:3], eval_every=4)
    straight = PackedTrainer(cfgs)
    straight.run()
    first = PackedTrainer(configs(MLP, steps=4, members=MEMBERS[:3], eval_every=4))
    first.run(lambda step, progress: [p.save_checkpoint(tmp_path / f"m{k}") for k, p in enumerate(progress)])
    resumed = PackedTrainer(cfgs)
    resumed.load_members([torch.load(tmp_path / f"m{k}" / "checkpoint.pt", weights_only=True) for k in range(3)])
    resumed.run()
    for k in range(3):
        a, b = _states(straight, k), _states(resumed, k)
        assert all(torch.equal(a[n], b[n]) for n in a), k


def test_report_progress_matches_trainer_metrics():
    cfgs = configs(MLP, steps=4, members=MEMBERS[:2], eval_every=2)
    seen: list[tuple[int, list]] = []
    PackedTrainer(cfgs).run(lambda step, progress: seen.append((step, progress)))
    solo_seen = []
    Trainer(cfgs[0]).run(solo_seen.append)
    assert [s for s, _ in seen] == [p.step for p in solo_seen] == [2, 4]
    for (_, progress), ref in zip(seen, solo_seen, strict=True):
        assert len(progress) == 2
        assert progress[0].metrics.keys() == ref.metrics.keys()  # diagnostics=False here
        assert progress[0].samples is not None and progress[0].samples.shape == ref.samples.shape
        assert (progress[0].done, progress[0].status) == (ref.done, ref.status)
