"""What each model takes: its resolutions and the kind of samples (images or 2D points).

The one place for these rules: the models call them when they are built, and the sweep
service's preflight (``sweeper.spec.preflight``) calls them for every resolution and
dataset a sweep can give a model, so a sweep that cannot build some of its models is
refused before anything starts. No torch here: checking a rule must not cost an import.
"""

from __future__ import annotations

from trainers.config import ConfigError

TAKES = {"sngan_cnn": "images", "sngan_resnet": "images", "mlp": "points"}
"""The samples each model's D reads: image tensors (N, C, H, W) or 2D points (N, 2)."""
PAPER_RESOLUTIONS = {"sngan_cnn": (32, 48, 64), "sngan_resnet": (128,)}


def resolution_problem(model: str, resolution: int) -> str | None:
    """Why ``model`` cannot be built at ``resolution`` (None when it can, or when it has no resolution)."""
    if model == "sngan_cnn" and resolution % 8:
        return f"`resolution` must be a multiple of 8 for sngan_cnn (the paper: 32, 48, 64), got {resolution}"
    if model == "sngan_resnet" and (resolution < 8 or resolution & (resolution - 1)):
        return f"`resolution` must be a power of two >= 8 for sngan_resnet (the paper's is 128), got {resolution}"
    return None


def check_resolution(model: str, resolution: int) -> None:
    problem = resolution_problem(model, resolution)
    if problem:
        raise ConfigError(problem)


def check_data(model: str, dataset: str, kind: str) -> None:
    """``model`` can train on ``dataset``, whose samples are ``kind`` (``trainers.data.layout.sample_kind``)."""
    takes = TAKES.get(model)
    if takes is None or takes == kind:
        return
    other = next(m for m, k in TAKES.items() if k == kind)
    if takes == "points":
        raise ConfigError(
            f"model {model!r} trains on 2D points (datasets ring, grid), not on the images of dataset "
            f"{dataset!r}; use `model: {other}` or a 2D dataset"
        )
    raise ConfigError(
        f"model {model!r} trains on images, not on the 2D points of dataset {dataset!r}; "
        f"use `model: {other}` or an image dataset"
    )
