"""Evaluation metrics: name -> direction, and an evaluator built for a dataset.

``METRICS`` maps every metric name the loop can report to ``"max"`` or
``"min"``, which the sweeper uses to tell Optuna and the report which way is
better. Image metrics from a small seeded extractor end in ``_small``: they rank
models but are not comparable to published Inception numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from trainers.config import ConfigError, TrainConfig
from trainers.metrics.inputs import check_fit
from trainers.metrics.modes import MODE_METRICS, mode_metrics

IMAGE_METRICS = {
    "fid_small": "min",
    "kid_small": "min",
    "is_small": "max",
    "fid": "min",
    "kid": "min",
    "is": "max",
}
METRICS: dict[str, str] = {**MODE_METRICS, **IMAGE_METRICS}

if TYPE_CHECKING:  # the catalogue (METRICS) is read by the sweep service without torch
    import torch

Evaluator = Callable[["torch.Tensor"], dict[str, float]]


def direction(metric: str) -> str:
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    return METRICS[metric]


def make_evaluator(cfg: TrainConfig, source: object) -> Evaluator:
    """A function from generated samples to ``{metric: value}`` for ``cfg.metrics``."""
    for m in cfg.metrics:
        direction(m)
    wanted_modes = [m for m in cfg.metrics if m in MODE_METRICS]
    wanted_images = [m for m in cfg.metrics if m in IMAGE_METRICS]
    centers = getattr(source, "centers", None)
    shape = getattr(source, "sample_shape", None)
    check_fit(
        wanted_modes, wanted_images, cfg.dataset, has_modes=centers is not None,
        kind="points" if shape is not None and len(shape) != 3 else "images", channels=cfg.channels,
    )  # fmt: skip
    image_eval: Evaluator | None = None
    if wanted_images:
        from trainers.metrics.fid import make_image_evaluator  # scipy/torchvision only when needed

        image_eval = make_image_evaluator(cfg, source, wanted_images)

    def evaluate(samples: torch.Tensor) -> dict[str, float]:
        out: dict[str, float] = {}
        if wanted_modes:
            allm = mode_metrics(samples, centers, source.hq_radius)  # type: ignore[attr-defined]
            out.update({m: allm[m] for m in wanted_modes})
        if image_eval is not None:
            out.update(image_eval(samples))
        return out

    return evaluate
