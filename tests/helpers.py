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
    """One trial row with every column the recorder writes (``sweeper.run.rows.summary_row``).

    The paper's default setting; keyword arguments that are TrainConfig fields change the
    configuration (so ``config_json`` agrees with the columns), ``status``/``error``/``attempt``
    and anything else (metric columns such as ``final_fid``) go into the row as given. As in real
    sweeps, a trial that did not complete stopped early: its ``steps_done`` is below ``iterations``.
    """
    from datetime import UTC, datetime, timedelta

    from sweeper.run.rows import summary_row
    from trainers.config import TrainConfig

    fields = set(TrainConfig.field_names())
    config = {"dataset": "cifar10", "model": "cnn32", "normalizer": norm, "scale": float(c), "seed": seed,
              "iterations": 1000, "metrics": ["fid"]}  # fmt: skip
    config.update({k: v for k, v in columns.items() if k in fields})
    rest = {k: v for k, v in columns.items() if k not in fields}
    status = rest.pop("status", "completed")
    cfg = TrainConfig(**config)
    steps = cfg.iterations if status == "completed" else cfg.iterations // 2
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=abs(hash(tid)) % 10_000)
    row = summary_row(
        sweep="t", trial_id=tid, attempt=rest.pop("attempt", 1), status=status, error=rest.pop("error", None),
        params={**cfg.to_dict(), "loss": cfg.resolved_loss}, history=[], last={"step": steps, "hostname": "h"},
        metrics=[], directions={}, started=start, finished=start + timedelta(seconds=10), run_id=f"r-{tid}",
    )  # fmt: skip
    row.update(rest)
    return row
