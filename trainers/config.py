"""The typed configuration of one GAN training run.

One flat dataclass, because every field here is also a sweep parameter name, an
MLflow param and a Parquet column: one name per concept across the whole
service. Plain dataclasses (not pydantic) keep ``trainers`` free of service
dependencies; the sweeper validates sweep files with pydantic before any of
this is built.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A user-fixable problem in a training configuration (one clear line)."""


@dataclass
class TrainConfig:
    # --- data and model -------------------------------------------------------
    dataset: str = "blobs"
    """Catalogue name in ``trainers.data.DATASETS``."""
    data_root: str | None = None
    """Local folder of a real dataset; procedural datasets ignore it."""
    resolution: int = 16
    channels: int = 3
    model: str = "sngan_cnn"
    """Catalogue name in ``trainers.models.MODELS``."""
    width: float = 1.0
    """Channel multiplier: 1.0 is the paper's architecture, tests use 1/8."""
    latent_dim: int = 128

    # --- the normalizer under study --------------------------------------------
    normalizer: str = "sn"
    """Catalogue name in ``trainers.normalizers.METHODS``."""
    scale: float = 1.0
    """The paper's c: multiplies every normalized D layer (SSN/BSSN when != 1)."""
    grad_through_uv: bool = False
    """Let gradients flow through the power-iteration vectors (official TF code)."""

    # --- objective and optimizer -----------------------------------------------
    loss: str = "auto"
    """``hinge``, ``wgan_gp``, ``ns``; ``auto`` = hinge, or wgan_gp for gamma variants."""
    gp_weight: float = 10.0
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_dis: int = 1
    batch_size: int = 64
    sampling: str = "replacement"
    """``replacement`` (the paper: each batch drawn with replacement) or ``epochs``."""

    # --- budget, evaluation, bookkeeping ----------------------------------------
    iterations: int = 1000
    """Generator updates (one iteration = n_dis D updates + 1 G update)."""
    eval_every: int = 250
    eval_samples: int = 512
    metrics: list[str] = field(default_factory=lambda: ["mode_coverage"])
    """Metric names computed at each evaluation (see ``trainers.metrics``)."""
    eval_real_samples: int = 0
    """Real images for FID/KID statistics; 0 = ``eval_samples`` (the paper: 10k fake vs 5k real)."""
    is_samples: int = 0
    """Generated images for the Inception Score; 0 = ``eval_samples``. The paper's protocol is 50k
    (PAPER.md §4), while its FID uses 10k: the two counts are separate knobs for that reason."""
    is_splits: int = 10
    """Splits of the Inception Score (mean and std over them); the paper: 10 splits (of 5k each)."""
    inception_weights: str | None = None
    """Local TF-comparable InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth) for fid/kid/is."""
    stats_cache_dir: str | None = None
    """Where real-data feature statistics are cached across trials (keyed by their metadata)."""
    diagnostics: bool = True
    """Log per-layer gradient norms, sigmas and parameter variance at evaluations."""
    checkpoint_every: int = 0
    """0 = checkpoint at every evaluation."""
    divergence_threshold: float = 1e4
    """|loss| above this (or NaN/Inf) ends the run as ``diverged``, evaluated at the step it stopped.
    Sweeps set it to infinity unless ``scheduler.stop_on_divergence`` is on: the paper trains large
    scales to the end although their early hinge loss grows roughly like c^8 (c = 5 passes 1e4)."""
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 0
    """torch intra-op threads; 0 leaves torch's default."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword options for the normalizer (e.g. ``eps``)."""

    # ---------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the field and the rule for the first bad value."""
        rules: list[tuple[str, bool, str]] = [
            ("scale", self.scale > 0, "must be > 0"),
            ("lr_g", self.lr_g > 0, "must be > 0"),
            ("lr_d", self.lr_d > 0, "must be > 0"),
            ("beta1", 0 <= self.beta1 < 1, "must be in [0, 1)"),
            ("beta2", 0 <= self.beta2 < 1, "must be in [0, 1)"),
            ("n_dis", isinstance(self.n_dis, int) and self.n_dis >= 1, "must be an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("iterations", self.iterations >= 1, "must be >= 1"),
            ("eval_every", self.eval_every >= 1, "must be >= 1"),
            ("eval_samples", self.eval_samples >= 2, "must be >= 2"),
            ("eval_real_samples", self.eval_real_samples >= 0, "must be >= 0 (0 = eval_samples)"),
            ("is_samples", self.is_samples == 0 or self.is_samples >= 2, "must be 0 (= eval_samples) or >= 2"),
            ("is_splits", isinstance(self.is_splits, int) and self.is_splits >= 1, "must be an integer >= 1"),
            ("divergence_threshold", self.divergence_threshold > 0, "must be > 0 (inf = only NaN/Inf stop a run)"),
            ("width", self.width > 0, "must be > 0"),
            ("resolution", self.resolution >= 4, "must be >= 4"),
            ("sampling", self.sampling in ("replacement", "epochs"), "must be 'replacement' or 'epochs'"),
            ("loss", self.loss in ("auto", "hinge", "wgan_gp", "ns"), "must be one of auto, hinge, wgan_gp, ns"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"`{name}` {rule}, got {getattr(self, name)!r}")

    @property
    def resolved_loss(self) -> str:
        """Gamma variants are only stable with a gradient penalty (paper App. O)."""
        if self.loss != "auto":
            return self.loss
        return "wgan_gp" if "gamma" in self.normalizer else "hinge"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys are an error that lists the valid ones."""
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(cls.field_names())}")
        return cls(**data)

    def diff(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Per-key differences, used to refuse resuming a checkpoint of another config."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}
