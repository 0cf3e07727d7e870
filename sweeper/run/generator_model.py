"""A trial's final generator as an MLflow PyTorch model, and its sample grids as readable images.

Both come from the trial's last checkpoint, which reaches the driver anyway (``on_checkpoint``):
trials never import MLflow. The generator is rebuilt on the driver's CPU from the checkpoint's
config and ``G`` weights and saved in MLflow 3's default PyTorch format, ``pt2`` (a
``torch.export`` graph): it loads with ``mlflow.pytorch.load_model`` anywhere torch is installed,
without snsweep's code, and takes any batch of latents ``(N, latent_dim)``. Measured on the demo's
generator (190k parameters, 2 shared cores): about 0.2 s per trial on the driver, plus about 3 s
once per sweep for ``torch.export``'s first use; 0.8 MB per model in the artifact store.
"""

from __future__ import annotations

import io
import math
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


def snapshot(checkpoint_dir: Path, index: int | None) -> GeneratorSnapshot | None:
    """The generator in a trial's checkpoint (member ``index`` of a pack), or None if there is none.

    Single-process, multi-worker (rank 0's) and packed checkpoints all hold ``Trainer``-format
    states: a pack keeps one per member under ``members``."""
    import torch

    from trainers.loop import CHECKPOINT_FILE

    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if index is not None:
        members = state.get("members") or []
        if index >= len(members):
            return None
        state = members[index]
    if "G" not in state or "config" not in state:
        return None
    return GeneratorSnapshot(config=dict(state["config"]), state=state["G"], step=int(state.get("step", 0)))


def save_generator(snap: GeneratorSnapshot, path: Path, mlflow_model: Any) -> None:
    """``mlflow.pytorch.save_model`` of the rebuilt generator (eval mode) with a signature."""
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
        mlflow_model=mlflow_model,
        serialization_format="pt2",
        input_example=z.numpy(),
        signature=infer_signature(z.numpy(), images.numpy()),
        pip_requirements=mlflow.pytorch.get_default_pip_requirements(),  # skip inference: it loads the model
    )


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
