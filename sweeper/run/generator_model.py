"""A trial's final generator as an MLflow PyTorch model, and its sample grids as readable images.

Both come from the trial's last checkpoint, which reaches the driver anyway (``on_checkpoint``):
trials never import MLflow. The generator is rebuilt on the driver's CPU from the checkpoint's
config and ``G`` weights and saved in MLflow 3's default PyTorch format, ``pt2`` (a
``torch.export`` graph): it loads with ``mlflow.pytorch.load_model`` anywhere torch is installed,
without snsweep's code, and takes any batch of latents ``(N, latent_dim)``. Measured on the demo's
generator (2 shared cores, ``benchmarks/bench_mlflow.py``): about 0.35 s per trial, 1.5 s more for
the first (``torch.export``'s warm-up), under 1 MB per model in the artifact store.
``ModelWorker`` does this on a thread of its own, so a pack whose members all complete at once
does not hold up the Tune loop for seconds.
"""

from __future__ import annotations

import io
import math
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.run.mlflow_layout import MIN_IMAGE_SIDE


@dataclass(frozen=True)
class GeneratorSnapshot:
    """What rebuilding a trial's generator takes: its TrainConfig and ``G``'s weights (on CPU)."""

    config: dict[str, Any]
    state: dict[str, Any]
    step: int


def snapshots(checkpoint_dir: Path, indices: Sequence[int | None]) -> dict[int | None, GeneratorSnapshot]:
    """The generators in a trial's checkpoint, by member index (None: a trial that is not a pack);
    indices without a generator are left out.

    Single-process, multi-worker (rank 0's) and packed checkpoints all hold ``Trainer``-format
    states: a pack keeps one per member under ``members``. The file is read once for all the
    indices asked: a pack's checkpoint holds every member's G, D, Adam moments and history, and
    reading it once per member made the end of an 18-member pack cost 18 whole loads (about 30 s
    of the Tune loop's time in the demo)."""
    import torch

    from trainers.loop import CHECKPOINT_FILE

    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    if not indices or not path.is_file():
        return {}
    state = torch.load(path, map_location="cpu", weights_only=True)
    members = state.get("members") or []
    out: dict[int | None, GeneratorSnapshot] = {}
    for index in indices:
        one = state if index is None else (members[index] if index < len(members) else {})
        if "G" in one and "config" in one:
            out[index] = GeneratorSnapshot(config=dict(one["config"]), state=one["G"], step=int(one.get("step", 0)))
    return out


def snapshot(checkpoint_dir: Path, index: int | None) -> GeneratorSnapshot | None:
    """The generator in a trial's checkpoint (member ``index`` of a pack), or None if there is none."""
    return snapshots(checkpoint_dir, [index]).get(index)


def save_generator(snap: GeneratorSnapshot, path: Path) -> Path:
    """``mlflow.pytorch.save_model`` of the rebuilt generator (eval mode, with a signature) into ``path``."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from trainers.config import TrainConfig
    from trainers.models import build

    cfg = TrainConfig.from_dict({**snap.config, "device": "cpu", "num_threads": 0})
    with torch.random.fork_rng(devices=[]):  # building draws an initialisation: leave the driver's RNG alone
        generator, _ = build(cfg)
    generator.load_state_dict(snap.state)
    generator.eval()
    z = torch.randn(2, cfg.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = generator(z)
    mlflow.pytorch.save_model(
        generator,
        str(path),
        serialization_format="pt2",
        input_example=z.numpy(),
        signature=infer_signature(z.numpy(), images.numpy()),
        pip_requirements=mlflow.pytorch.get_default_pip_requirements(),  # skip inference: it loads the model
    )
    return Path(path)


def readable_grid(png: bytes, min_side: int = MIN_IMAGE_SIDE) -> Any:
    """The sample grid enlarged by a whole factor (nearest neighbour: pixels stay pixels) to ``min_side``."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    image.load()
    image = image.convert("RGB")
    factor = max(1, math.ceil(min_side / max(1, min(image.size))))
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return image


class ModelWorker:
    """One background thread that runs queued jobs (building models) in order, off the Tune loop.

    A job that raises is reported through ``on_error`` and the next one runs. ``join`` waits for
    the jobs queued so far (the end of a sweep, before the tracker drains)."""

    def __init__(self, on_error: Callable[[str], None]):
        self.on_error = on_error
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="snsweep-models", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception as e:  # noqa: BLE001 - one model that cannot be built must not stop the others
                self.on_error(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            finally:
                self._jobs.task_done()
        self._jobs.task_done()

    def join(self, timeout_s: float = 600) -> bool:
        """Wait for every job queued so far; False if they are still running after ``timeout_s``."""
        if self._thread is None:
            return True
        self._jobs.put(None)
        self._thread.join(timeout_s)
        done = not self._thread.is_alive()
        self._thread = None
        return done
