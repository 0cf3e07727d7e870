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


def evaluation_facts(cfg: TrainConfig) -> dict[str, int | str | None]:
    """The evaluation protocol of ``cfg`` as the facts a result must be labelled with.

    ``eval_samples`` (generated images for FID/KID and mode metrics), ``eval_real_samples`` (real
    images for FID/KID; null without them), ``is_samples``/``is_splits`` (null without an IS) and
    ``feature_extractor`` (``seeded-small-v1``, ``inception-v3-tf-2015-12-05@6726825d`` or both
    joined by ``+``; null for mode metrics only). The evaluator below uses exactly these numbers,
    so a row labelled with them tells the truth about how its metrics were computed.
    """
    from trainers.metrics.features import INCEPTION_NAME, INCEPTION_SHA256_PREFIX, SMALL_NAME

    images = [m for m in cfg.metrics if m in IMAGE_METRICS]
    n = int(cfg.eval_samples)
    facts: dict[str, int | str | None] = {
        "eval_samples": n, "eval_real_samples": None, "is_samples": None, "is_splits": None,
        "feature_extractor": None,
    }  # fmt: skip
    if any(m.startswith(("fid", "kid")) for m in images):
        facts["eval_real_samples"] = int(cfg.eval_real_samples or n)
    if any(m.startswith("is") for m in images):
        k = int(cfg.is_samples or n)
        facts["is_samples"], facts["is_splits"] = k, min(int(cfg.is_splits), k)
    names = {SMALL_NAME if m.endswith("_small") else f"{INCEPTION_NAME}@{INCEPTION_SHA256_PREFIX}" for m in images}
    facts["feature_extractor"] = "+".join(sorted(names)) or None
    return facts


def eval_sample_count(cfg: TrainConfig) -> int:
    """Generated images one evaluation needs: ``eval_samples``, or more when the IS wants more."""
    k = evaluation_facts(cfg)["is_samples"]
    return max(int(cfg.eval_samples), int(k or 0))


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

    need = eval_sample_count(cfg)

    def evaluate(samples: torch.Tensor) -> dict[str, float]:
        if len(samples) < need:
            raise ConfigError(
                f"an evaluation needs {need} generated samples (eval_samples {cfg.eval_samples}, "
                f"is_samples {cfg.is_samples}), got {len(samples)}"
            )
        out: dict[str, float] = {}
        if wanted_modes:
            allm = mode_metrics(samples[: cfg.eval_samples], centers, source.hq_radius)  # type: ignore[attr-defined]
            out.update({m: allm[m] for m in wanted_modes})
        if image_eval is not None:
            out.update(image_eval(samples))
        return out

    return evaluate
