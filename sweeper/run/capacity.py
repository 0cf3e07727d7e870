"""Can this machine (or the connected cluster) ever run one trial of this sweep?

Checked before anything starts or is written: a trial that asks for more CPUs or GPUs than exist
would wait forever in Ray's queue. For a local sweep the capacity is this machine's (``--num-cpus``
or every core; GPUs as the NVIDIA driver lists them, never by importing torch); for a connected
cluster it is what Ray reports, which an autoscaler may still grow, so only an impossible request
(GPUs on a cluster with none, more CPUs per trial than the whole cluster) is refused there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sweeper.spec import Resources


@dataclass(frozen=True)
class Capacity:
    cpus: float
    gpus: float
    where: str
    """How messages name it: ``this machine`` or ``the cluster``."""
    exact: bool = True
    """False for a cluster that may autoscale: then one GPU anywhere is enough to wait for more."""


def local_gpus() -> int:
    """NVIDIA GPUs visible to a local Ray: ``CUDA_VISIBLE_DEVICES`` when set, else the driver's list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def local_capacity(num_cpus: int | None = None) -> Capacity:
    return Capacity(cpus=float(num_cpus or os.cpu_count() or 1), gpus=float(local_gpus()), where="this machine")


def cluster_capacity() -> Capacity:
    import ray

    have = ray.cluster_resources()
    return Capacity(cpus=float(have.get("CPU", 0)), gpus=float(have.get("GPU", 0)), where="the cluster", exact=False)


def capacity_problems(resources: Resources, have: Capacity) -> list[str]:
    """One line per request ``have`` can never satisfy (empty when one trial fits)."""
    problems = []
    workers = resources.workers
    gpus = resources.gpus_per_trial
    enough_gpus = have.gpus >= gpus * workers if have.exact else have.gpus >= min(gpus * workers, 1.0)
    if gpus > 0 and not enough_gpus:
        each = f" x {workers} workers" if workers > 1 else ""
        fix = " (an autoscaling cluster must keep one GPU worker up, as cluster.yaml does)" if not have.exact else ""
        problems.append(
            f"resources.gpus_per_trial: {gpus:g} GPU(s) per trial{each} but {have.where} has {have.gpus:g}; "
            f"set gpus_per_trial: 0, or run on a GPU machine or cluster{fix}"
        )
    cpus = resources.cpus_per_trial * workers
    if cpus > have.cpus:
        each = f" ({resources.cpus_per_trial:g} x {workers} workers)" if workers > 1 else ""
        hint = "lower cpus_per_trial" + ("" if not have.exact else ", or run on a cluster (--address)")
        problems.append(
            f"resources.cpus_per_trial: a trial needs {cpus:g} CPUs{each} but {have.where} has {have.cpus:g}; {hint}"
        )
    return problems
