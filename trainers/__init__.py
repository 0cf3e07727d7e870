"""Plain-PyTorch GAN training for normalization research.

Usable without the sweep service: ``python -m trainers --config cfg.yaml`` trains one
GAN, and ``trainers.normalizers.apply(D, "bsn", scale=1.2)`` puts BSSN into any
discriminator. This package never imports ray, optuna, mlflow or pyarrow.
"""

from trainers.config import ConfigError, TrainConfig

__all__ = ["ConfigError", "TrainConfig"]
