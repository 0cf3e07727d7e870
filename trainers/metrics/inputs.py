"""What the metrics need from their inputs: the kind of data, real images, Inception weights.

The one place for these rules: the evaluators call them when a run is set up, and the
sweep service's preflight (``sweeper.spec.preflight``) calls them for every dataset,
channel count and weights file a sweep can give a run, so a metric that cannot be
computed is refused before anything starts. No torch here (hashlib and os only):
checking a rule must not cost an import.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
from collections.abc import Iterable

from trainers.config import ConfigError

SMALL_SUFFIX = "_small"
"""Image metrics of the seeded small extractor end in this; the others use the real InceptionV3."""
MIN_REAL_IMAGES = 2
"""A covariance (FID) and an unbiased MMD (KID) need at least two real samples."""
IMAGE_CHANNELS = (1, 3)
"""Both extractors read RGB (grayscale is repeated to 3 channels)."""

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"
"""torch.hub names weight files by their sha256 prefix; pytorch-fid's ``pt_inception-...`` and
torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` both carry this one."""


def needs_inception(image_metric: str) -> bool:
    """An image metric computed with the real InceptionV3 (a local weights file): fid, kid, is."""
    return not image_metric.endswith(SMALL_SUFFIX)


def needs_real_images(metric: str) -> bool:
    """FID and KID compare generated with real features; IS reads generated images only."""
    return metric.startswith(("fid", "kid"))


def real_images_needed(metrics: Iterable[str]) -> int:
    """Real images a run needs: 1 to train on, ``MIN_REAL_IMAGES`` with FID/KID."""
    return MIN_REAL_IMAGES if any(needs_real_images(m) for m in metrics) else 1


def check_fit(
    modes: list[str], images: list[str], dataset: str, *, has_modes: bool, kind: str, channels: int
) -> None:
    """Mode metrics ``modes`` need a dataset with known modes; image metrics ``images`` need
    images (``kind``, see ``trainers.data.layout.sample_kind``) of 1 or 3 channels."""
    if modes and not has_modes:
        raise ConfigError(
            f"metrics {', '.join(modes)} need a dataset with known modes (blobs, ring, grid), not {dataset!r}; "
            "use fid_small/kid_small/is_small (or fid/kid/is with Inception weights)"
        )
    if images and kind != "images":
        raise ConfigError(
            f"`metrics` {', '.join(images)} need image data, but dataset {dataset!r} has 2D points; "
            "use mode metrics for 2D toys"
        )
    if images and channels not in IMAGE_CHANNELS:
        raise ConfigError(f"`metrics` {', '.join(images)} read 1- or 3-channel images, got `channels: {channels}`")


def check_real_count(metrics: Iterable[str], available: int, dataset: str) -> None:
    """Enough real images for the metrics that compare against them."""
    wanted = [m for m in metrics if needs_real_images(m)]
    if wanted and available < MIN_REAL_IMAGES:
        raise ConfigError(
            f"metrics {', '.join(wanted)} need at least {MIN_REAL_IMAGES} real images, dataset {dataset!r} "
            f"has {available}; add images or use is_small/is"
        )


def check_cache_dir(path: str | None) -> None:
    """``stats_cache_dir`` is a folder we can write, or can be created (real statistics are cached there)."""
    if not path:
        return
    target = os.path.abspath(os.path.expanduser(path))
    probe = target
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        what = "is a file" if probe == target else f"cannot be created: {probe} is a file"
        raise ConfigError(f"`stats_cache_dir` {path} {what}, not a folder; set it to a folder (or remove it)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"`stats_cache_dir` {path} is not writable ({probe} denies it); set it to a folder you can write"
        )


# --- Inception weights ---------------------------------------------------------------------
def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_inception_weights(path: str | None, check_hash: bool = True) -> str:
    """The weights file's sha256; ConfigError unless it is a readable file of the expected graph.

    Reads the whole file (about 100 MB, a fraction of a second); callers that check
    many configurations cache the answer per path.
    """
    if not path or not os.path.lexists(path):
        raise ConfigError(
            f"Inception weights not found at {path}: set `inception_weights` (path to {INCEPTION_FILE})"
        )
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ConfigError(
            f"Inception weights at {path} cannot be read ({e.strerror or e}): set `inception_weights` "
            f"(path to {INCEPTION_FILE})"
        ) from None
    if stat.S_ISDIR(mode):
        raise ConfigError(
            f"Inception weights at {path} is a folder, not a file: set `inception_weights` to the file "
            f"itself ({INCEPTION_FILE})"
        )
    try:
        digest = sha256_of(path)
    except OSError as e:
        raise ConfigError(
            f"Inception weights at {path} cannot be read ({e.strerror or e}): fix its permissions or set "
            "`inception_weights`"
        ) from None
    if check_hash and not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise ConfigError(
            f"Inception weights at {path} have sha256 {digest[:8]}..., expected "
            f"{INCEPTION_SHA256_PREFIX}... ({INCEPTION_FILE}); other weights give FIDs not comparable "
            "to published ones"
        )
    return digest


def check_inception_backend() -> None:
    """torch-fidelity (or torchmetrics) is installed: found without importing it."""
    if importlib.util.find_spec("torch_fidelity") is None and importlib.util.find_spec("torchmetrics") is None:
        raise ConfigError(
            "metrics fid/kid/is need torch-fidelity: `pip install torch-fidelity` (or use fid_small/kid_small/is_small)"
        )
