"""The paper's ResNet (128 px) and the 2D toy MLP: parameter counts, shapes, init, errors.

Parameter counts are recomputed here from the architecture table (PAPER.md §2.3,
official ``no_gamma-ResNet/gan/network.py``) with explicit arithmetic, not from
the module code, so a wrong channel, a missing shortcut conv or bias shows up.
Building the full-size nets allocates ~70M parameters but runs no forward pass.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainers.config import ConfigError, TrainConfig
from trainers.models import mlp, resnet

LATENT = 128


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(cin: int, cout: int, k: int) -> int:
    return k * k * cin * cout + cout  # weight + bias


def bn(c: int) -> int:
    return 2 * c  # gamma + beta (running stats are buffers)


def g_up_block(cin: int, cout: int) -> int:
    # BN(cin) ReLU up conv3(cin->cout) BN(cout) ReLU conv3(cout->cout) + shortcut up conv1(cin->cout)
    return bn(cin) + conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + conv(cin, cout, 1)


def d_block(cin: int, cout: int) -> int:
    # conv3(cin->cout) ReLU conv3(cout->cout) + shortcut conv1(cin->cout); pooling has no params
    return conv(cin, cout, 3) + conv(cout, cout, 3) + conv(cin, cout, 1)


# Architecture table at 128 px: G linear to 4x4x1024, up blocks to 1024,512,256,128,64.
G_TABLE = [(1024, 1024), (1024, 512), (512, 256), (256, 128), (128, 64)]
# D: down blocks 3->64->128->256->512->1024, then 1024->1024 without downsampling.
D_TABLE = [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1024), (1024, 1024)]


def test_full_size_generator_parameter_count() -> None:
    expected = (
        (LATENT * 4 * 4 * 1024 + 4 * 4 * 1024)  # linear z -> 4x4x1024: 2,113,536
        + sum(g_up_block(a, b) for a, b in G_TABLE)  # 30,035,392
        + bn(64)  # final BN: 128
        + conv(64, 3, 3)  # output conv: 1,731
    )
    # block by block: 19,930,112 + 7,606,784 + 1,902,848 + 476,288 + 119,360
    assert [g_up_block(a, b) for a, b in G_TABLE] == [19_930_112, 7_606_784, 1_902_848, 476_288, 119_360]
    assert expected == 2_113_536 + 30_035_392 + 128 + 1_731 == 32_150_787
    G, _ = resnet.build(TrainConfig(model="sngan_resnet", resolution=128))
    assert n_params(G) == expected


def test_full_size_discriminator_parameter_count() -> None:
    expected = sum(d_block(a, b) for a, b in D_TABLE) + (1024 + 1)  # + dense 1024 -> 1
    per_block = [38_976, 229_760, 918_272, 3_671_552, 14_683_136, 19_926_016]
    assert [d_block(a, b) for a, b in D_TABLE] == per_block
    assert expected == 39_467_712 + 1_025 == 39_468_737
    _, D = resnet.build(TrainConfig(model="sngan_resnet", resolution=128))
    assert n_params(D) == expected


def test_channel_schedules_match_the_paper_at_128() -> None:
    assert resnet.generator_channels(128) == [1024, 1024, 512, 256, 128, 64]
    assert resnet.discriminator_channels(128) == [64, 128, 256, 512, 1024, 1024]


@pytest.mark.parametrize("resolution", [128, 32, 8])
def test_tiny_resnet_shapes(resolution: int) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(model="sngan_resnet", resolution=resolution, width=1 / 16, latent_dim=16)
    G, D = resnet.build(cfg)
    assert G.latent_dim == 16
    x = G(torch.randn(2, 16))
    assert x.shape == (2, 3, resolution, resolution)
    assert x.abs().max() <= 1.0  # tanh
    assert D(x).shape == (2,)
    G.eval()  # BN inference mode, as for metrics
    assert G(torch.randn(1, 16)).shape == (1, 3, resolution, resolution)


def test_resnet_grayscale_and_gradients_reach_every_d_weight() -> None:
    cfg = TrainConfig(model="sngan_resnet", resolution=16, channels=1, width=1 / 32, latent_dim=8)
    G, D = resnet.build(cfg)
    x = G(torch.randn(3, 8))
    assert x.shape == (3, 1, 16, 16)
    D(x).sum().backward()
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_resnet_has_no_normalization_and_covers_shortcuts() -> None:
    """Every D conv (1x1 shortcuts included) is a plain Conv2d the normalizer can wrap."""
    _, D = resnet.build(TrainConfig(model="sngan_resnet", resolution=32, width=1 / 16))
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    # 4 blocks at 32 px (3 down + 1 flat), 3 convs each
    assert len(convs) == 4 * 3
    assert sum(1 for m in D.modules() if isinstance(m, nn.Linear)) == 1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert not any(hasattr(m, "parametrizations") for m in D.modules())


def test_resnet_glorot_init_gains() -> None:
    """Residual 3x3 convs: Glorot-uniform gain sqrt(2); shortcuts/linear/output: gain 1."""
    torch.manual_seed(0)
    G, D = resnet.build(TrainConfig(model="sngan_resnet", resolution=16, width=1 / 4))

    def bound(w: torch.Tensor, gain: float) -> float:
        rf = w[0, 0].numel() if w.dim() == 4 else 1
        return gain * math.sqrt(6.0 / ((w.shape[0] + w.shape[1]) * rf))

    blk = D.blocks[1]
    for w, gain in [(blk.conv1.weight, math.sqrt(2)), (blk.shortcut.weight, 1.0), (G.fc.weight, 1.0),
                    (G.out.weight, 1.0), (G.blocks[0].conv2.weight, math.sqrt(2))]:  # fmt: skip
        b = bound(w, gain)
        assert w.abs().max() <= b
        assert w.abs().max() > 0.9 * b  # uniform fills its range
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in D.modules() if isinstance(m, nn.Conv2d))


def test_resnet_d_uses_global_sum_pooling() -> None:
    """With a dense layer of ones, D(x) is the sum of all final ReLU activations (not their mean)."""
    torch.manual_seed(0)
    _, D = resnet.build(TrainConfig(model="sngan_resnet", resolution=16, width=1 / 64))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        D.fc.weight.fill_(1.0)
        D.fc.bias.zero_()
        feats = torch.relu(D.blocks(x))
        assert feats.shape[-2:] == (4, 4)  # 16 -> 8 -> 4, then the flat block
        assert torch.allclose(D(x), feats.sum(dim=(1, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("resolution", [100, 4, 48])
def test_resnet_rejects_non_power_of_two(resolution: int) -> None:
    with pytest.raises(ConfigError, match="`resolution` must be a power of two"):
        resnet.build(TrainConfig(model="sngan_resnet", resolution=resolution, width=1 / 16))


def test_mlp_shapes_and_counts() -> None:
    cfg = TrainConfig(model="mlp", latent_dim=4, width=0.25)
    G, D = mlp.build(cfg)
    assert G.latent_dim == 4
    assert G(torch.randn(5, 4)).shape == (5, 2)
    assert D(torch.randn(5, 2)).shape == (5,)
    h = 32  # 128 * 0.25
    assert n_params(G) == (4 * h + h) + 3 * (h * h + h) + (h * 2 + 2)
    assert n_params(D) == (2 * h + h) + 3 * (h * h + h) + (h + 1)
    linears = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == mlp.HIDDEN_LAYERS + 1


def test_mlp_full_width_default() -> None:
    G, D = mlp.build(TrainConfig(model="mlp"))
    assert n_params(D) == (2 * 128 + 128) + 3 * (128 * 128 + 128) + 129
    assert G(torch.randn(2, 128)).shape == (2, 2)
