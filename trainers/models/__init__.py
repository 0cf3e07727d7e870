"""Model catalogue: name -> ``build(cfg) -> (G, D)``.

Entries are ``module:function`` strings imported on first use, so adding an
architecture is one line here and importing ``trainers`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from trainers.config import ConfigError, TrainConfig
from trainers.data.layout import sample_kind
from trainers.models.shapes import check_data

if TYPE_CHECKING:  # the catalogue (MODELS) is read by the sweep service without torch
    from torch import nn

MODELS: dict[str, str] = {
    "sngan_cnn": "trainers.models.sngan_cnn:build",
    "sngan_resnet": "trainers.models.resnet:build",
    "mlp": "trainers.models.mlp:build",
}

DESCRIPTIONS: dict[str, str] = {
    "sngan_cnn": "SNGAN standard CNN, 32/48/64 px (paper Tables 2/3); any multiple of 8 with width scaling",
    "sngan_resnet": "SNGAN ResNet, 128 px, unconditional (paper Tables 8-13)",
    "mlp": "MLP generator/discriminator for 2D toy mixtures",
}


def build(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """Build (G, D) for ``cfg.model``; D is returned un-normalized."""
    if cfg.model not in MODELS:
        raise ConfigError(f"unknown model {cfg.model!r}; valid: {', '.join(MODELS)}")
    check_data(cfg.model, cfg.dataset, sample_kind(cfg.dataset))
    module, func = MODELS[cfg.model].split(":")
    factory: Callable[[TrainConfig], tuple[nn.Module, nn.Module]] = getattr(importlib.import_module(module), func)
    return factory(cfg)
