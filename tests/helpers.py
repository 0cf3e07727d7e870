"""Small builders shared by several test files."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def dense_operator(layer: nn.Module, w: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """The conv layer's linear map as a dense matrix: apply it (no bias) to every basis input."""
    c_in = layer.in_channels
    n = c_in * hw[0] * hw[1]
    basis = torch.eye(n, dtype=torch.float64).reshape(n, c_in, *hw)
    w = w.detach().double()
    if isinstance(layer, nn.ConvTranspose2d):
        out = F.conv_transpose2d(basis, w, None, layer.stride, layer.padding, layer.output_padding)
    else:
        out = F.conv2d(basis, w, None, layer.stride, layer.padding)
    return out.reshape(n, -1).T.numpy()


def trial_row(tid: str, norm: str, c: float, seed: int, **columns: Any) -> dict[str, Any]:
    """One v1 trial row at the paper's default setting; ``columns`` add metrics and override the rest."""
    row: dict[str, Any] = {
        "sweep": "t", "trial_id": tid, "attempt": 0, "status": "completed", "error": None,
        "dataset": "cifar10", "model": "cnn32", "normalizer": norm, "scale": float(c),
        "lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.5, "beta2": 0.999, "n_dis": 1, "batch_size": 64,
        "seed": seed, "iterations": 1000, "wall_seconds": 10.0, "started_at": "2025-01-01T00:00:00",
        "finished_at": "2025-01-01T00:00:10", "host": "h", "mlflow_run_id": "r", "config_json": "{}",
    }  # fmt: skip
    row.update(columns)
    return row
