"""How packed members' ordinary layers execute under vmap: memory layout and BatchNorm. Per member both
compute the module's own maths; they only lay the K members' work out for the CPU kernels, which
measured faster than vmap's own rules (G step at batch 32: 49.6 against 69.6 ms; docs/PACKED.md)."""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ChannelsLast(torch.autograd.Function):
    """Identity per member; under vmap, the K members' (N, C, H, W) as one channels-last (N, K*C, H, W)
    tensor, so that the grouped convolutions vmap makes run oneDNN's NHWC kernels (later layers keep it)."""

    generate_vmap_rule = False

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return x

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # under the penalty's torch.func.grad
        return grad

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: Tensor) -> tuple[Tensor, int]:
        x = x.movedim(in_dims[0], 1)  # (N, K, C, H, W)
        y = x.reshape(x.shape[0], -1, *x.shape[3:]).contiguous(memory_format=torch.channels_last)
        return y.view(x.shape), 1


class _WideBatchNorm(torch.autograd.Function):
    """Train-mode ``F.batch_norm`` per member; under vmap one batch_norm over (N, K*C, ...) channels:
    per-member statistics, affine fused, layout kept (torch's rule permutes, 1.3x slower for G). G only
    (no transform differentiates G twice, so no backward of its own)."""

    generate_vmap_rule = False

    @staticmethod
    def forward(x: Tensor, mean: Tensor, var: Tensor, w: Tensor, b: Tensor, momentum: float, eps: float) -> Tensor:
        return F.batch_norm(x, mean, var, w, b, True, momentum, eps)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: Tensor, mean: Tensor, var: Tensor, w: Tensor, b: Tensor,
             momentum: float, eps: float) -> tuple[Tensor, int]:  # fmt: skip
        x = x.movedim(in_dims[0], 1)  # (N, K, C, ...); every member has its own statistics and affine
        out = F.batch_norm(x.reshape(x.shape[0], -1, *x.shape[3:]), mean.reshape(-1), var.reshape(-1),
                           w.reshape(-1), b.reshape(-1), True, momentum, eps)  # fmt: skip
        return out.view(x.shape), 1


def _wide_batch_norm(m: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    if not m.training:
        return type(m).forward(m, x)
    m.num_batches_tracked.add_(1)  # BatchNorm's train-mode forward (momentum set, affine, tracked stats)
    return _WideBatchNorm.apply(x, m.running_mean, m.running_var, m.weight, m.bias, m.momentum, m.eps)


def pack_layout(module: nn.Module, wide_bn: bool) -> nn.Module:
    """``module`` channels-last from its first convolution on, its BatchNorms wide (train mode)."""
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if convs:
        convs[0].register_forward_pre_hook(lambda m, args: (_ChannelsLast.apply(args[0]), *args[1:]))
    for m in module.modules() if wide_bn else ():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats and m.momentum:
            m.forward = functools.partial(_wide_batch_norm, m)  # type: ignore[method-assign]
    return module
