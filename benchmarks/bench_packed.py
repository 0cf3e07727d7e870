"""Packed training (trainers.packed) vs the same trials one after another (trainers.loop.Trainer).

    python -m benchmarks.bench_packed [--members 16] [--steps 20] [--repeats 9] [--threads 1]
                                      [--normalizer sn] [--baseline OTHER_PACKED.py]
    python -m benchmarks.bench_packed --equivalence      # float32 drift table for docs/PACKED.md
    python -m benchmarks.bench_packed --layouts          # vmap's own rules vs the pack's layout rules

One timed unit = ``steps`` training iterations (n_dis D updates + one G update, no
evaluation) after ``warmup`` iterations, for every member: the sequential side runs
``Trainer.train_step`` K times over, trial after trial; the packed side runs
``PackedTrainer.train_step`` once per iteration for all K, replaying the graphs its warm-up
recorded (trainers.packed_graph); the *vmap* side is the same pack with ``replay = False``.
All sides use the same K configurations (one normalizer, as a pack requires; different scales/lrs/betas/seeds)
and the same torch thread count (``--threads``, default 1: one trial per core is how
a sweep runs on a CPU; 0 keeps torch's default for both). ``--baseline FILE`` (or the
``SNSWEEP_PACKED_BASELINE`` environment variable) adds a side: the ``PackedTrainer`` of
another implementation, e.g. a copy of the one this replaced, timed in the same run on the
same configurations. Repeats interleave the sides (rotating which goes first) so drifting
machine load hits all alike; the table reports medians of wall time and of process CPU
time, which is far less sensitive to other jobs on a shared machine, and, with a baseline,
packed / baseline as the median (and range) of the per-repeat ratios: each pairs two runs
made minutes apart, so it cancels the slow drifts that move both sides. ``run(...)`` returns
the numbers.

Workloads: ``mlp`` is the 2D toy (ring, width 0.5, latent 8, batch 64, as
bench_search), ``cnn`` the tiny SNGAN CNN (blobs 16 px, width 0.125, latent 32,
batch 32) and ``cnn_b8`` the same CNN at batch 8 (the test suite's size).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import os
import statistics
import sys
import time
from typing import Any

import torch

from trainers.config import TrainConfig
from trainers.loop import Trainer
from trainers.packed import PackedTrainer

TARGET = 5.0
WORKLOADS: dict[str, dict[str, Any]] = {
    "mlp": {"dataset": "ring", "model": "mlp", "width": 0.5, "latent_dim": 8, "batch_size": 64},
    "cnn": {
        "dataset": "blobs", "model": "sngan_cnn", "resolution": 16, "width": 0.125, "latent_dim": 32, "batch_size": 32,
    },
    "cnn_b8": {
        "dataset": "blobs", "model": "sngan_cnn", "resolution": 16, "width": 0.125, "latent_dim": 32, "batch_size": 8,
    },
}  # fmt: skip


def member_configs(
    workload: str, members: int, n_dis: int = 1, normalizer: str = "sn", **extra: Any
) -> list[TrainConfig]:
    """K configurations of one model and normalizer with different scales, lrs, betas and seeds."""
    base = {**WORKLOADS[workload], "n_dis": n_dis, "diagnostics": False, "metrics": ["mode_coverage"], **extra}
    betas = ((0.5, 0.999), (0.0, 0.9), (0.9, 0.99))
    return [
        TrainConfig(
            **base,
            normalizer=normalizer,
            scale=(0.8, 1.0, 1.5, 2.0)[k % 4],
            lr_g=(1e-4, 2e-4, 5e-4)[k % 3],
            lr_d=(2e-4, 1e-4, 4e-4, 1e-3)[k % 4],
            beta1=betas[k % 3][0],
            beta2=betas[k % 3][1],
            seed=k,
        )
        for k in range(members)
    ]


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _sequential(cfgs: list[TrainConfig], steps: int, warmup: int) -> tuple[float, float]:
    wall = cpu = 0.0
    for cfg in cfgs:
        t = Trainer(cfg)
        for _ in range(warmup):
            t.train_step()
        w0, c0 = _clock()
        for _ in range(steps):
            t.train_step()
        w1, c1 = _clock()
        wall, cpu = wall + w1 - w0, cpu + c1 - c0
    return wall, cpu


def load_baseline(path: str) -> type:
    """The ``PackedTrainer`` class of another implementation (a file outside the package)."""
    spec = importlib.util.spec_from_file_location("baseline_packed", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_packed"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.PackedTrainer


def _packed(
    cfgs: list[TrainConfig], steps: int, warmup: int, cls: type = PackedTrainer, replay: bool | None = None
) -> tuple[float, float]:
    p = cls(cfgs)
    if replay is not None:
        p.replay = replay  # the warm-up records the graphs
    for _ in range(warmup):
        p.train_step()
    w0, c0 = _clock()
    for _ in range(steps):
        p.train_step()
    w1, c1 = _clock()
    return w1 - w0, c1 - c0


def run(
    workloads: tuple[str, ...] = ("mlp", "cnn", "cnn_b8"),
    members: int = 16,
    steps: int = 20,
    repeats: int = 9,
    warmup: int = 3,
    threads: int = 1,
    n_dis: int = 1,
    normalizer: str = "sn",
    baseline: str | None = None,
) -> dict[str, Any]:
    """Trial-iterations per second, sequential vs packed (vs ``baseline``), per workload (medians over repeats)."""
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    outer_rng = torch.get_rng_state()
    baseline = baseline or os.environ.get("SNSWEEP_PACKED_BASELINE") or None
    try:
        out: dict[str, Any] = {"members": members, "steps": steps, "repeats": repeats, "threads": threads,
                               "n_dis": n_dis, "target": TARGET, "normalizer": normalizer, "baseline": baseline,
                               "workloads": {}}  # fmt: skip
        sides: dict[str, Any] = {"sequential": _sequential, "packed": _packed,
                                 "vmap": functools.partial(_packed, replay=False)}  # fmt: skip
        if baseline:
            sides["baseline"] = functools.partial(_packed, cls=load_baseline(baseline))
        for name in workloads:
            cfgs = member_configs(name, members, n_dis, normalizer)
            times: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
            for r in range(repeats):
                order = list(sides)[r % len(sides) :] + list(sides)[: r % len(sides)]
                for side in order:
                    times[side].append(sides[side](cfgs, steps, warmup))
            work = members * steps
            row: dict[str, Any] = {}
            for i, clock in enumerate(("wall", "cpu")):
                s = statistics.median(x[i] for x in times["sequential"])
                row[f"sequential_{clock}_s"] = s
                row[f"sequential_{clock}_trial_it_per_s"] = work / s
                for side in sides:
                    if side != "sequential":
                        p = statistics.median(x[i] for x in times[side])
                        row[f"{side}_{clock}_s"] = p
                        row[f"{side}_{clock}_trial_it_per_s"] = work / p
                        row[f"{'speedup' if side == 'packed' else side + '_speedup'}_{clock}"] = s / p
                if "baseline" in sides:  # paired: both sides of repeat r ran minutes apart
                    ratios = sorted(b[i] / x[i] for b, x in zip(times["baseline"], times["packed"], strict=True))
                    row[f"packed_over_baseline_{clock}"] = statistics.median(ratios)
                    row[f"packed_over_baseline_{clock}_range"] = (ratios[0], ratios[-1])
            out["workloads"][name] = row
        return out
    finally:
        torch.set_rng_state(outer_rng)
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------
# float32 drift: packed vs solo, next to solo vs solo with a one-ulp nudge of its init
# --------------------------------------------------------------------------------------
GAUGE_PREFIXES = ("G.fc.bias", "G.body.0.bias", "G.body.3.bias", "G.body.6.bias")
"""sngan_cnn G biases right before a BatchNorm: their exact gradient is 0 (BN removes the mean),
so their float32 values are round-off driven in any implementation (docs/PACKED.md)."""


def _params(state: dict) -> dict[str, torch.Tensor]:
    return {
        f"{net}.{k}": v.double()
        for net in ("G", "D")
        for k, v in state[net].items()
        if v.is_floating_point() and "running" not in k and "powers" not in k and f"{net}.{k}" not in GAUGE_PREFIXES
    }


def _rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() / max(1.0, b[k].abs().max().item()) for k in b)


def equivalence(
    workload: str = "cnn_b8", members: int = 4, steps: int = 50, n_dis: int = 2, normalizer: str = "sn"
) -> list[dict[str, Any]]:
    """Per member: max relative parameter difference packed vs solo, and solo vs solo-nudged.

    The nudged solo run starts from the same weights, each moved by one ulp in a random
    direction (``nextafter``): its distance from the plain solo run is the trajectory's own
    sensitivity to float32 round-off.
    """
    cfgs = member_configs(workload, members, n_dis, normalizer, iterations=steps, eval_every=steps, eval_samples=64)
    outer_rng = torch.get_rng_state()
    try:
        packed = PackedTrainer(cfgs)
        for _ in range(steps):
            packed.train_step()
        packed.step = steps
        rows = []
        for k, cfg in enumerate(cfgs):
            solos = []
            for nudge in (False, True):
                t = Trainer(cfg)
                if nudge:
                    g = torch.Generator().manual_seed(1234)
                    with torch.no_grad():
                        for p in [*t.G.parameters(), *t.D.parameters()]:
                            away = torch.where(torch.rand(p.shape, generator=g) < 0.5, -math.inf, math.inf)
                            p.copy_(torch.nextafter(p, away.to(p.dtype)))
                for _ in range(steps):
                    t.train_step()
                solos.append(_params(t.state_dict()))
            rows.append(
                {
                    "member": k,
                    "normalizer": cfg.normalizer,
                    "lr_g": cfg.lr_g,
                    "lr_d": cfg.lr_d,
                    "beta1": cfg.beta1,
                    "packed_vs_solo": _rel(_params(packed.member_state_dict(k)), solos[0]),
                    "solo_vs_nudged_solo": _rel(solos[1], solos[0]),
                }
            )
        return rows
    finally:
        torch.set_rng_state(outer_rng)


# --------------------------------------------------------------------------------------
# how to vectorize: vmap's own batching rules vs the pack's layout rules, G and D fwd + bwd
# --------------------------------------------------------------------------------------
def layouts(workload: str = "cnn", members: int = 16, repeats: int = 5, iters: int = 4) -> dict[str, float]:
    """Median ms (CPU time) of one G step (G forward with the BN replay + backward) and one D loss
    (D(real), D(fake) + backward) for K sn members, three ways: ``pack`` (trainers.packed as used:
    channels-last from the first convolution, wide BatchNorm), ``vmap`` (the same vmap and modules
    with torch's own batching rules only) and ``loop`` (the K solo modules one after another)."""
    from trainers.losses import LOSSES
    from trainers.packed import _d_loss, _generate_twice, _Stack

    cfgs = member_configs(workload, members)
    ts = [Trainer(c) for c in cfgs]
    b, loss = cfgs[0].batch_size, LOSSES["hinge"]
    z, real = torch.randn(members, b, cfgs[0].latent_dim), torch.stack([t._real(b) for t in ts])
    fake = torch.stack([t.G(z[k]) for k, t in enumerate(ts)]).detach()
    fns: dict[str, Any] = {}
    for name, layout in (("pack", True), ("vmap", False)):
        G, D = _Stack([t.G for t in ts], layout, wide_bn=True), _Stack([t.D for t in ts], layout)
        fn = functools.partial(_d_loss, loss, 10.0)
        fns[f"G {name}"] = lambda G=G: G.grad(G(_generate_twice, z).sum())
        fns[f"D {name}"] = lambda D=D, fn=fn: D.grad(D(fn, real, fake, None, dims=(0, 0, None)).sum())
    fns["G loop"] = lambda: [torch.autograd.grad(t.G(z[k]).sum(), list(t.G.parameters())) for k, t in enumerate(ts)]
    fns["D loop"] = lambda: [torch.autograd.grad(loss.d_loss(t.D, real[k], fake[k], 10.0), list(t.D.parameters()))
                             for k, t in enumerate(ts)]  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for r in range(repeats):
        for name in list(fns)[r % len(fns) :] + list(fns)[: r % len(fns)]:
            c0 = time.process_time()
            for _ in range(iters):
                fns[name]()
            times[name].append((time.process_time() - c0) / iters * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", nargs="+", default=["mlp", "cnn", "cnn_b8"], choices=sorted(WORKLOADS))
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides (0 = torch default)")
    ap.add_argument("--n-dis", type=int, default=1)
    ap.add_argument("--normalizer", default="sn", help="the members' normalizer (one per pack)")
    ap.add_argument("--baseline", help="time this file's PackedTrainer too (e.g. the implementation replaced)")
    ap.add_argument("--equivalence", action="store_true", help="print the float32 drift table instead")
    ap.add_argument("--layouts", action="store_true", help="compare the pack's layout rules with vmap's own")
    args = ap.parse_args(argv)
    if args.layouts:
        torch.set_num_threads(args.threads or torch.get_num_threads())
        for workload in args.workloads:
            res = layouts(workload, args.members, args.repeats)
            print(f"{workload}: {args.members} sn members, median ms (CPU time): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in res.items()))  # fmt: skip
        return
    if args.equivalence:
        torch.set_num_threads(args.threads or torch.get_num_threads())
        for workload, normalizer in (("cnn_b8", "none"), ("cnn_b8", "sn"), ("cnn_b8", "bsn"), ("mlp", "sn")):
            print(f"{workload} {normalizer}: max relative parameter difference after 50 steps (float32, n_dis 2)")
            for row in equivalence(workload, normalizer=normalizer):
                print(
                    f"  member {row['member']} {row['normalizer']:>4} lr_g {row['lr_g']:.0e} lr_d {row['lr_d']:.0e} "
                    f"beta1 {row['beta1']}: packed vs solo {row['packed_vs_solo']:.1e}   "
                    f"solo vs one-ulp-nudged solo {row['solo_vs_nudged_solo']:.1e}"
                )
        return
    res = run(tuple(args.workloads), args.members, args.steps, args.repeats, args.warmup, args.threads, args.n_dis,
              args.normalizer, args.baseline)  # fmt: skip
    print(
        f"K={res['members']} {res['normalizer']} members, {res['steps']} timed iterations each (+{args.warmup} "
        f"warm-up), n_dis={res['n_dis']}, threads={res['threads'] or 'torch default'}, medians of {res['repeats']} "
        f"repeats{', baseline ' + res['baseline'] if res['baseline'] else ''}"
    )
    base = res["baseline"] is not None
    print(f"{'workload':<8} {'clock':<5} {'sequential it/s':>16} {'packed it/s':>12} {'speedup':>8}"
          + f" {'vmap it/s':>10} {'speedup':>8}"
          + (f" {'baseline it/s':>14} {'speedup':>8}" if base else "") + f"  target >= {TARGET}x")  # fmt: skip
    for name, row in res["workloads"].items():
        for clock in ("cpu", "wall"):
            print(
                f"{name:<8} {clock:<5} {row[f'sequential_{clock}_trial_it_per_s']:>16.1f} "
                f"{row[f'packed_{clock}_trial_it_per_s']:>12.1f} {row[f'speedup_{clock}']:>7.2f}x"
                f" {row[f'vmap_{clock}_trial_it_per_s']:>10.1f} {row[f'vmap_speedup_{clock}']:>7.2f}x"
                + (f" {row[f'baseline_{clock}_trial_it_per_s']:>14.1f} {row[f'baseline_speedup_{clock}']:>7.2f}x"
                   f"  packed/baseline {row[f'packed_over_baseline_{clock}']:.2f}"
                   " ({:.2f}-{:.2f})".format(*row[f"packed_over_baseline_{clock}_range"]) if base else "")
            )  # fmt: skip


if __name__ == "__main__":
    main()
