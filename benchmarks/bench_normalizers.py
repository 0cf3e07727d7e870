"""Cost of one discriminator update under each normalizer, on the paper's CIFAR10 D.

    python -m benchmarks.bench_normalizers [--repeats 10] [--batch-size 64] [--device cpu]

One timed unit = one full D update as the training loop does it: hinge loss on
D(real) and D(fake) (two forwards), backward, Adam step, ``normalizers.update``.
Methods are interleaved within each repeat (and the order rotates) so that drifting
machine load hits all of them alike; the table reports medians of wall time (the
targets: BSN at most 10% more than SN, SN at most 15% more than no normalization) and,
on CPU, of process CPU time, which is far less sensitive to other jobs on a shared
machine (wall time there mostly measures the neighbours). With several threads CPU
time also counts OpenMP spin-waiting: ``--threads 1`` gives the cleanest CPU numbers.
``run(repeats, batch_size, device)`` returns the numbers for a benchmark suite.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers import normalizers

METHODS = ("none", "sn", "bsn", "snconv")
TARGETS = {"bsn/sn": 1.10, "sn/none": 1.15}
RATIOS = (("bsn", "sn"), ("sn", "none"), ("snconv", "sn"))


def build_discriminator(resolution: int = 32, channels: int = 3) -> nn.Sequential:
    """Local copy of the SNGAN CIFAR D (PAPER.md §2.1), so the benchmark does not depend on trainers.models.

    convs 3x3s1 64, 4x4s2 64, 3x3s1 128, 4x4s2 128, 3x3s1 256, 4x4s2 256, 3x3s1 512, all
    padding 1, LeakyReLU(0.1); dense (resolution/8)^2 * 512 -> 1.
    """
    spec = ((64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), (512, 3, 1))
    layers: list[nn.Module] = []
    c_in = channels
    for c_out, k, s in spec:
        layers += [nn.Conv2d(c_in, c_out, k, s, 1), nn.LeakyReLU(0.1)]
        c_in = c_out
    m = resolution // 8
    layers += [nn.Flatten(), nn.Linear(m * m * 512, 1)]
    return nn.Sequential(*layers)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _d_update(D: nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss = F.relu(1.0 - D(real)).mean() + F.relu(1.0 + D(fake)).mean()
    loss.backward()
    opt.step()
    normalizers.update(D)


def run(
    repeats: int = 10,
    batch_size: int = 64,
    device: str = "cpu",
    methods: tuple[str, ...] = METHODS,
    warmup: int = 2,
    threads: int = 0,
) -> dict[str, Any]:
    """Median seconds per D update for each method, and the ratios the targets are about.

    ``threads`` > 0 sets torch's intra-op threads for the run (restored afterwards).
    """
    previous_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return _run(repeats, batch_size, device, methods, warmup)
    finally:
        torch.set_num_threads(previous_threads)


def _run(repeats: int, batch_size: int, device: str, methods: tuple[str, ...], warmup: int) -> dict[str, Any]:
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(batch_size, 3, 32, 32, generator=gen).to(dev)
    fake = torch.randn(batch_size, 3, 32, 32, generator=gen).to(dev)
    setups = {}
    for method in methods:
        torch.manual_seed(0)
        D = normalizers.apply(build_discriminator(), method).to(dev)
        opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        for _ in range(warmup):  # allocator, cuDNN autotune, SNConv's lazy state
            _d_update(D, opt, real, fake)
        setups[method] = (D, opt)
    times: dict[str, list[float]] = {m: [] for m in methods}
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(repeats):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for method in order:
            D, opt = setups[method]
            _sync(dev)
            c0, t0 = time.process_time(), time.perf_counter()
            _d_update(D, opt, real, fake)
            _sync(dev)
            times[method].append(time.perf_counter() - t0)
            cpu[method].append(time.process_time() - c0)
    median = {m: statistics.median(t) for m, t in times.items()}
    cpu_median = {m: statistics.median(t) for m, t in cpu.items()}
    ratios = {f"{a}/{b}": median[a] / median[b] for a, b in RATIOS if a in median and b in median}
    cpu_ratios = {f"{a}/{b}": cpu_median[a] / cpu_median[b] for a, b in RATIOS if a in median and b in median}
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch_size": batch_size,
        "repeats": repeats,
        "median_s": median,
        "min_s": {m: min(t) for m, t in times.items()},
        "cpu_median_s": cpu_median,
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "targets": dict(TARGETS),
        "meets_targets": all(ratios[k] <= v for k, v in TARGETS.items() if k in ratios),
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"D update (hinge fwd real+fake, backward, Adam, update) on the SNGAN CIFAR D; batch "
        f"{result['batch_size']}, {result['repeats']} interleaved repeats, device {result['device_name']} "
        f"({result['threads']} threads), torch {result['torch']}",
        "",
        "| method | median wall ms | min wall ms | median CPU ms |",
        "|---|---:|---:|---:|",
    ]
    for m, s in result["median_s"].items():
        lo, cpu = result["min_s"][m], result["cpu_median_s"][m]
        lines.append(f"| {m} | {s * 1e3:.1f} | {lo * 1e3:.1f} | {cpu * 1e3:.1f} |")
    lines += ["", "| ratio | wall | CPU time | target (wall) |", "|---|---:|---:|---|"]
    for k, v in result["ratios"].items():
        target = result["targets"].get(k)
        verdict = "-" if target is None else f"<= {target:.2f} {'ok' if v <= target else 'MISSED'}"
        lines.append(f"| {k} | {v:.3f} | {result['cpu_ratios'][k]:.3f} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated normalizer names")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1:
        parser.error(f"--repeats and --batch-size must be >= 1, got {args.repeats} and {args.batch_size}")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    print(format_table(run(args.repeats, args.batch_size, args.device, methods, threads=args.threads)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
