"""Packed training (trainers.packed) vs the same trials one after another (trainers.loop.Trainer).

    python -m benchmarks.bench_packed [--members 16] [--steps 20] [--repeats 5] [--threads 1]
    python -m benchmarks.bench_packed --equivalence      # float32 drift table for docs/PACKED.md
    python -m benchmarks.bench_packed --layouts          # packed vs vmap vs a loop, D fwd+bwd

One timed unit = ``steps`` training iterations (n_dis D updates + one G update, no
evaluation) after ``warmup`` iterations, for every member: the sequential side runs
``Trainer.train_step`` K times over, trial after trial; the packed side runs
``PackedTrainer.train_step`` once per iteration for all K. Both sides use the same
K configurations (normalizers cycling none/sn/bsn, different scales/lrs/betas/seeds)
and the same torch thread count (``--threads``, default 1: one trial per core is how
a sweep runs on a CPU; 0 keeps torch's default for both). Repeats interleave the two
sides (alternating which goes first) so drifting machine load hits both alike; the
table reports medians of wall time and of process CPU time, which is far less
sensitive to other jobs on a shared machine. ``run(...)`` returns the numbers.

Workloads: ``mlp`` is the 2D toy (ring, width 0.5, latent 8, batch 64, as
bench_search), ``cnn`` the tiny SNGAN CNN (blobs 16 px, width 0.125, latent 32,
batch 32) and ``cnn_b8`` the same CNN at batch 8 (the test suite's size).
"""

from __future__ import annotations

import argparse
import math
import statistics
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
NORMALIZERS = ("none", "sn", "bsn")


def member_configs(workload: str, members: int, n_dis: int = 1, **extra: Any) -> list[TrainConfig]:
    """K configurations of one architecture with different normalizers, scales, lrs, betas and seeds."""
    base = {**WORKLOADS[workload], "n_dis": n_dis, "diagnostics": False, "metrics": ["mode_coverage"], **extra}
    betas = ((0.5, 0.999), (0.0, 0.9), (0.9, 0.99))
    return [
        TrainConfig(
            **base,
            normalizer=NORMALIZERS[k % 3],
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


def _packed(cfgs: list[TrainConfig], steps: int, warmup: int) -> tuple[float, float]:
    p = PackedTrainer(cfgs)
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
    repeats: int = 5,
    warmup: int = 3,
    threads: int = 1,
    n_dis: int = 1,
) -> dict[str, Any]:
    """Trial-iterations per second, sequential vs packed, per workload (medians over repeats)."""
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    outer_rng = torch.get_rng_state()
    try:
        out: dict[str, Any] = {"members": members, "steps": steps, "repeats": repeats, "threads": threads,
                               "n_dis": n_dis, "target": TARGET, "workloads": {}}  # fmt: skip
        for name in workloads:
            cfgs = member_configs(name, members, n_dis)
            seq: list[tuple[float, float]] = []
            pk: list[tuple[float, float]] = []
            for r in range(repeats):
                if r % 2 == 0:
                    seq.append(_sequential(cfgs, steps, warmup))
                    pk.append(_packed(cfgs, steps, warmup))
                else:
                    pk.append(_packed(cfgs, steps, warmup))
                    seq.append(_sequential(cfgs, steps, warmup))
            work = members * steps
            row: dict[str, float] = {}
            for i, clock in enumerate(("wall", "cpu")):
                s = statistics.median(x[i] for x in seq)
                p = statistics.median(x[i] for x in pk)
                row[f"sequential_{clock}_s"] = s
                row[f"packed_{clock}_s"] = p
                row[f"sequential_{clock}_trial_it_per_s"] = work / s
                row[f"packed_{clock}_trial_it_per_s"] = work / p
                row[f"speedup_{clock}"] = s / p
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


def equivalence(workload: str = "cnn_b8", members: int = 4, steps: int = 50, n_dis: int = 2) -> list[dict[str, Any]]:
    """Per member: max relative parameter difference packed vs solo, and solo vs solo-nudged.

    The nudged solo run starts from the same weights, each moved by one ulp in a random
    direction (``nextafter``): its distance from the plain solo run is the trajectory's own
    sensitivity to float32 round-off.
    """
    cfgs = member_configs(workload, members, n_dis, iterations=steps, eval_every=steps, eval_samples=64)
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
# how to vectorize: D forward + backward of K members, four ways
# --------------------------------------------------------------------------------------
def layouts(workload: str = "cnn", members: int = 16, repeats: int = 5, iters: int = 10) -> dict[str, float]:
    """Median ms for one D forward + backward (weights and input) of K members on 2N samples.

    ``packed``: trainers.packed (bmm for Linear, grouped channels-last convs);
    ``packed_nchw``: the same with contiguous (NCHW) convs; ``vmap``: torch.func.vmap over
    functional_call of the reference module with stacked parameters; ``loop``: the K
    reference modules one after another. Unnormalized D, so all four do the same maths.
    """
    import copy

    from torch.func import functional_call, stack_module_state, vmap

    from trainers.models import build
    from trainers.packed import _PackedNet

    cfg = member_configs(workload, 1)[0]
    cfg = TrainConfig(**{**cfg.to_dict(), "normalizer": "none"})
    nets = [build(cfg)[1] for _ in range(members)]
    n = 2 * cfg.batch_size
    shape = (2,) if cfg.model == "mlp" else (cfg.channels, cfg.resolution, cfg.resolution)
    x = torch.randn(members, n, *shape)
    params, buffers = stack_module_state(nets)  # type: ignore[arg-type]
    meta = copy.deepcopy(nets[0]).to("meta")
    packed = _PackedNet(cfg.model, "D", nets, torch.device("cpu"), [cfg] * members)
    nchw = _PackedNet(cfg.model, "D", nets, torch.device("cpu"), [cfg] * members)
    nchw.channels_last = set()
    xp = x if cfg.model == "mlp" else x.transpose(0, 1).reshape(n, -1, *shape[1:])

    def run_packed(net: _PackedNet) -> None:
        torch.autograd.grad(net.forward(xp.requires_grad_(cfg.model != "mlp"), True).sum(), net.params.leaves)

    def run_vmap() -> None:
        out = vmap(lambda p, b, xx: functional_call(meta, (p, b), (xx,)))(params, buffers, x)
        torch.autograd.grad(out.sum(), list(params.values()))

    def run_loop() -> None:
        out = sum(net(x[k]).sum() for k, net in enumerate(nets))
        torch.autograd.grad(out, [p for net in nets for p in net.parameters()])  # type: ignore[arg-type]

    fns = {
        "packed": lambda: run_packed(packed),
        "packed_nchw": lambda: run_packed(nchw),
        "vmap": run_vmap,
        "loop": run_loop,
    }
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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides (0 = torch default)")
    ap.add_argument("--n-dis", type=int, default=1)
    ap.add_argument("--equivalence", action="store_true", help="print the float32 drift table instead")
    ap.add_argument("--layouts", action="store_true", help="compare packed / vmap / loop D fwd+bwd instead")
    args = ap.parse_args(argv)
    if args.layouts:
        torch.set_num_threads(args.threads or torch.get_num_threads())
        for workload in ("mlp", "cnn"):
            res = layouts(workload, args.members, args.repeats)
            print(f"{workload}: D forward+backward of {args.members} members, median ms (CPU time): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in res.items()))  # fmt: skip
        return
    if args.equivalence:
        torch.set_num_threads(args.threads or torch.get_num_threads())
        for workload in ("cnn_b8", "mlp"):
            print(f"{workload}: max relative parameter difference after 50 steps (float32, n_dis 2)")
            for row in equivalence(workload):
                print(
                    f"  member {row['member']} {row['normalizer']:>4} lr_g {row['lr_g']:.0e} lr_d {row['lr_d']:.0e} "
                    f"beta1 {row['beta1']}: packed vs solo {row['packed_vs_solo']:.1e}   "
                    f"solo vs one-ulp-nudged solo {row['solo_vs_nudged_solo']:.1e}"
                )
        return
    res = run(tuple(args.workloads), args.members, args.steps, args.repeats, args.warmup, args.threads, args.n_dis)
    print(
        f"K={res['members']} members, {res['steps']} timed iterations each (+{args.warmup} warm-up), "
        f"n_dis={res['n_dis']}, threads={res['threads'] or 'torch default'}, medians of {res['repeats']} repeats"
    )
    print(
        f"{'workload':<8} {'clock':<5} {'sequential it/s':>16} {'packed it/s':>12} {'speedup':>8}  target >= {TARGET}x"
    )
    for name, row in res["workloads"].items():
        for clock in ("cpu", "wall"):
            print(
                f"{name:<8} {clock:<5} {row[f'sequential_{clock}_trial_it_per_s']:>16.1f} "
                f"{row[f'packed_{clock}_trial_it_per_s']:>12.1f} {row[f'speedup_{clock}']:>7.2f}x"
            )


if __name__ == "__main__":
    main()
