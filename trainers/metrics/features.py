"""Feature extractors for FID/KID/IS: a small seeded CNN for CPU runs, and TF-comparable InceptionV3.

Both map images in [-1, 1], shape (N, C, H, W), to ``(features, logits)``:
features feed FID and KID, ``softmax(logits)`` feeds the Inception Score. Each
carries the facts a result must be labelled with:

* ``name``: what produced the numbers (goes into metric caches and reports);
* ``identity``: exactly which weights (``"seeded-small-v1"`` or the weights'
  sha256), so cached real statistics are never reused across extractors;
* ``metric_suffix``: ``"_small"`` for the small net, whose ``fid_small``,
  ``kid_small``, ``is_small`` rank models against each other but are **not
  comparable to published FID/IS**; ``""`` for Inception (``fid``, ``kid``, ``is``).

Inception weights are never downloaded (the machines have no network, and a silent
download hides which weights were used): ``inception(path)`` refuses without a
local file whose sha256 matches the 2015-12-05 TF graph conversion.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import ConfigError
from trainers.metrics.inputs import (  # the weights rules live there (no torch); re-exported here
    INCEPTION_FILE,  # noqa: F401
    INCEPTION_SHA256_PREFIX,  # noqa: F401
    SMALL_SUFFIX,
    check_inception_weights,
    sha256_of,  # noqa: F401
)

SMALL_NAME = "seeded-small-v1"
SMALL_SEED = 0
SMALL_INPUT = 32
"""The small net sees every image at 32x32, so any resolution >= 8 works at a fixed cost."""
SMALL_CHANNELS = (32, 64, 64)
SMALL_STRIDES = (2, 2, 2)
"""32 -> 16 -> 8 -> 4: about 2 MFLOP per image, so 512 evaluation samples take ~0.1 s on a CPU."""
SMALL_CLASSES = 10
SMALL_LOGIT_GAIN = 3.0
"""Std of the small net's logits: large enough that softmax is far from uniform, so IS varies."""

INCEPTION_NAME = "inception-v3-tf-2015-12-05"
IS_CLASSES = 1000
"""The paper's IS slices the 1008 Inception logits to the 1000 ImageNet classes (PAPER.md §4)."""


class FeatureExtractor(nn.Module):
    """Base: subclasses implement ``forward(images) -> (features, logits)`` on [-1, 1] images."""

    name: str = ""
    identity: str = ""
    metric_suffix: str = ""

    @torch.no_grad()
    def extract(self, images: torch.Tensor, batch_size: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """Features and logits as float64 numpy arrays, computed in batches on this module's device.

        float64 because the FID covariance of thousands of samples loses digits in float32.
        """
        device = next(iter([*self.buffers(), *self.parameters()]), torch.zeros(0)).device
        was_training = self.training
        self.eval()
        feats, logits = [], []
        try:
            for chunk in images.split(batch_size):
                f, lg = self(chunk.to(device))
                feats.append(f.double().cpu())
                logits.append(lg.double().cpu())
        finally:
            self.train(was_training)
        return torch.cat(feats).numpy(), torch.cat(logits).numpy()


class SmallFeatureExtractor(FeatureExtractor):
    """A fixed random CNN (seed 0, never trained): 64-d features, 10 "class" logits.

    Random conv features are a reasonable distribution fingerprint (random-feature
    MMD), cheap on a CPU and need no download. Weights are drawn from an explicit
    ``torch.Generator`` (not the global RNG, not torch's default init), so every
    process, platform and trial gets the same net and loading it never perturbs
    a training run's random stream. Architecture: resize to 32x32 (antialiased
    bilinear), grayscale -> 3 channels by repetition, three 3x3 stride-2 convs
    of 32/64/64 channels with ReLU, then global mean *and* std pooling
    (128 -> 64 by a fixed projection) so both colour/intensity and texture
    statistics count. Logits: per-sample standardized features times a fixed
    Gaussian matrix, scaled to std ``SMALL_LOGIT_GAIN``.
    """

    name = SMALL_NAME
    identity = SMALL_NAME
    metric_suffix = SMALL_SUFFIX
    dim = 64

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(SMALL_SEED)
        cin = 3
        for i, cout in enumerate(SMALL_CHANNELS):
            w = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (cin * 9)) ** 0.5  # He: keeps scale
            self.register_buffer(f"w{i}", w)
            self.register_buffer(f"b{i}", torch.randn(cout, generator=g) * 0.1)
            cin = cout
        self.register_buffer("proj", torch.randn(2 * cin, self.dim, generator=g) / (2 * cin) ** 0.5)
        self.register_buffer("head", torch.randn(self.dim, SMALL_CLASSES, generator=g) / self.dim**0.5)
        # buffers, not parameters: nothing here is trainable, yet they follow .to(device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"SmallFeatureExtractor expects 1 or 3 channels, got {x.shape[1]}")
        x = F.interpolate(
            x,
            size=(SMALL_INPUT, SMALL_INPUT),
            mode="bilinear",
            align_corners=False,
            antialias=x.shape[-1] > SMALL_INPUT,
        )
        for i, stride in enumerate(SMALL_STRIDES):
            x = F.relu(F.conv2d(x, getattr(self, f"w{i}"), getattr(self, f"b{i}"), stride=stride, padding=1))
        pooled = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        feats = pooled @ self.proj
        z = (feats - feats.mean(dim=1, keepdim=True)) / (feats.std(dim=1, keepdim=True) + 1e-6)
        return feats, SMALL_LOGIT_GAIN * (z @ self.head)


def small() -> SmallFeatureExtractor:
    """The seeded small extractor (``fid_small``/``kid_small``/``is_small``)."""
    return SmallFeatureExtractor()


# --- InceptionV3 ----------------------------------------------------------------------


class InceptionExtractor(FeatureExtractor):
    """TF-comparable InceptionV3 (the 2015-12-05 graph, via torch-fidelity's port).

    Features are ``pool_3`` (2048-d, as the paper's FID); logits are the 1008-way
    ``logits_unbiased`` (OpenAI's IS graph: pool_3 @ W, no bias) sliced to the 1000
    ImageNet classes as the paper's code does. Images go in as uint8 because the
    TF graph saw 8-bit images; torch-fidelity then resizes to 299 with a
    TF1-compatible bilinear (no antialiasing), as ``tf.image.resize_bilinear`` did.
    """

    name = INCEPTION_NAME
    metric_suffix = ""

    def __init__(self, net: nn.Module, identity: str):
        super().__init__()
        self.net = net
        self.identity = identity
        # torchmetrics' subclass returns only the first feature from forward()
        self._forward = getattr(net, "_torch_fidelity_forward", net)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        u8 = ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        feats, logits = self._forward(u8)
        return feats, logits[:, :IS_CLASSES]


def inception(weights_path: str | None, check_hash: bool = True) -> InceptionExtractor:
    """The real InceptionV3 from a local weights file; never downloads.

    Uses torch-fidelity's ``FeatureExtractorInceptionV3(feature_extractor_weights_path=...)``
    (TF-matching to ~1e-6 on FID); if only torchmetrics is importable, its
    ``NoTrainInceptionV3`` with ``antialias=False`` (its default ``True`` breaks TF
    comparability). Raises ConfigError when the file is missing, its sha256 is not
    the expected graph's (``check_hash``), or neither package is installed.
    """
    digest = check_inception_weights(weights_path, check_hash)  # the rule lives in metrics.inputs
    features = ["2048", "logits_unbiased"]
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        net: nn.Module = FeatureExtractorInceptionV3(
            INCEPTION_NAME, features, feature_extractor_weights_path=weights_path
        )
    except ImportError:
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            net = NoTrainInceptionV3(
                INCEPTION_NAME, features, feature_extractor_weights_path=weights_path, antialias=False
            )
        except (ImportError, ModuleNotFoundError) as e:
            raise ConfigError(
                "metrics fid/kid/is need torch-fidelity: `pip install torch-fidelity` "
                f"(or use fid_small/kid_small/is_small) [{e}]"
            ) from None
    net.eval().requires_grad_(False)
    return InceptionExtractor(net, digest)
