"""Real image datasets, preprocessed as the paper's code does (PAPER.md §2.1, §2.3).

``load_dataset(cfg)`` returns a map-style ``torch.utils.data.Dataset`` whose items
are float32 tensors (C, H, W) in [-1, 1]; labels are dropped (unconditional GANs).
Nothing is ever downloaded: a missing or incomplete dataset is a one-line
``ConfigError`` that says where the files were expected and where to get them,
because a trial that silently fetches 150 MB-150 GB on a cluster node is worse
than one that fails at once.

Preprocessing follows ``dataset_preprocess/*`` of the official code:

* ``cifar10``: the 50k training images, 32 px, through ``torchvision.datasets.CIFAR10``
  (so torchvision's MD5 checks guard against truncated downloads).
* ``stl10``: the 100k *unlabeled* images, 96 -> 48 px with bilinear resizing
  without antialiasing (``cv2.resize`` INTER_LINEAR; at exactly 2x this is the
  2x2 mean), rounded to uint8 like the official ``stl10.npy``. Only
  ``stl10_binary/unlabeled_X.bin`` is needed; it is memory-mapped and resized in
  chunks instead of torchvision's 2.7 GB read plus MD5 of all five files.
* ``celeba``: the aligned images, center crop 128x128 (offsets ``(h-128)//2``,
  ``(w-128)//2``), resize to 64.
* ``imagenet``: an ImageFolder of ILSVRC2012 train (``root/train`` if present,
  else ``root``), center crop to the short side, resize to 128.
* ``mnist``: ``torchvision.datasets.MNIST`` train, 28 px, 1 channel. The paper
  trains MNIST in [0, 1] with a sigmoid G; here it is [-1, 1] like every dataset,
  so the same tanh generators work (state this when comparing to Figs. 2/3).
* ``folder``: any folder of images (ImageFolder class sub-folders or flat),
  center crop to the short side, resized to ``cfg.resolution`` with antialiasing.

Resolution: at each dataset's paper resolution (``resolution_of``) the resize is
the paper's non-antialiased bilinear; any other ``cfg.resolution`` is allowed (for
cheap CPU runs) and uses antialiased bilinear, since plain bilinear aliases
badly when shrinking by more than 2x. Results at a non-paper resolution are not
comparable to the paper's.

Small datasets (cifar10, stl10, mnist) are held in memory as uint8 (0.15-0.7 GB);
file-based ones (celeba, imagenet, folder) decode lazily per item, so use a
DataLoader with workers for throughput.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from trainers.config import ConfigError, TrainConfig
from trainers.data import layout
from trainers.data.layout import IMAGE_EXTENSIONS, URL

__all__ = ["DATASET_INFO", "IMAGE_EXTENSIONS", "channels_of", "list_images", "load_dataset", "resolution_of"]

DATASET_INFO: dict[str, str] = {
    "cifar10": "CIFAR-10 train split, 50k images, 32 px (torchvision layout: data_root/cifar-10-batches-py)",
    "stl10": "STL-10 unlabeled split, 100k images, resized 96 -> 48 px (data_root/stl10_binary)",
    "celeba": "CelebA aligned, 202,599 images, center crop 128 then resize 64 (img_align_celeba folder)",
    "imagenet": "ILSVRC2012 train as an ImageFolder, center crop + resize 128 (unconditional)",
    "mnist": "MNIST train, 60k images, 28 px, 1 channel (torchvision layout: data_root/MNIST/raw)",
    "folder": "any folder of images (ImageFolder-style or flat), center crop + resize to `resolution`",
}

_RESOLUTION = {"cifar10": 32, "stl10": 48, "celeba": 64, "imagenet": 128, "mnist": 28, "folder": 64}
CELEBA_CROP = 128
STL10_SIDE = 96
_CHUNK = 1024
"""Images resized per step when preprocessing in memory (bounds peak float memory)."""


def resolution_of(name: str) -> int:
    """The paper's resolution for a dataset (``folder`` has none: 64 is only a default)."""
    if name not in _RESOLUTION:
        raise ConfigError(f"unknown image dataset {name!r}; valid: {', '.join(DATASET_INFO)}")
    return _RESOLUTION[name]


def channels_of(name: str) -> int:
    """Image channels of a dataset (``folder`` converts to whatever ``channels`` asks: 3 here)."""
    return layout.CHANNELS.get(name, 3)


# --- datasets ------------------------------------------------------------------------


class TensorImages(Dataset):
    """All images in memory as uint8 (N, C, H, W); items are float32 in [-1, 1].

    uint8 storage is 4x smaller than float; the conversion per item is negligible.
    ``batch(indices)`` is a vectorized fast path for samplers that want it.
    """

    def __init__(self, images: torch.Tensor, name: str = ""):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_float(self.images[index])

    def batch(self, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        return to_float(self.images[torch.as_tensor(indices, dtype=torch.long)])


class ImageFiles(Dataset):
    """Images decoded lazily from files: crop, resize, round to uint8, scale to [-1, 1].

    ``crop``: ``None`` crops the largest centered square; an int crops that many
    pixels (CelebA's 128), falling back to the square if the image is smaller.
    """

    def __init__(
        self,
        files: Sequence[Path],
        resolution: int,
        channels: int = 3,
        crop: int | None = None,
        antialias: bool = True,
        name: str = "",
    ):
        self.files = list(files)
        self.resolution, self.channels, self.crop, self.antialias = resolution, channels, crop, antialias
        self.name = name

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.files[index]) as im:
            arr = np.asarray(im.convert("RGB" if self.channels == 3 else "L"))
        x = torch.from_numpy(arr.copy())
        x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
        x = center_crop(x, self.crop)
        return to_float(resize_uint8(x.unsqueeze(0), self.resolution, self.antialias)[0])


# --- helpers ---------------------------------------------------------------------------


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def center_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Center crop (C, H, W) to ``size`` (default: the short side), integer offsets as the TF code."""
    h, w = x.shape[-2:]
    s = min(h, w) if size is None else min(size, h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return x[..., top : top + s, left : left + s]


def resize_uint8(x: torch.Tensor, resolution: int, antialias: bool) -> torch.Tensor:
    """Bilinear resize of uint8 (N, C, H, W), rounded back to uint8 (as cv2 on uint8 does)."""
    if x.shape[-2:] == (resolution, resolution):
        return x
    out = []
    for chunk in x.split(_CHUNK):
        y = F.interpolate(
            chunk.float(),
            size=(resolution, resolution),
            mode="bilinear",
            align_corners=False,
            antialias=antialias,
        )
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def list_images(root: Path) -> list[Path]:
    """All image files under ``root`` (recursive, sorted, hidden entries skipped)."""
    return sorted(layout.iter_images(root))


def _antialias(name: str, resolution: int) -> bool:
    """Paper-faithful plain bilinear at the paper's resolution, antialiased elsewhere."""
    return name == "folder" or resolution != _RESOLUTION[name]


# --- loaders ---------------------------------------------------------------------------


def _cifar10(root: Path, cfg: TrainConfig) -> Dataset:
    from torchvision.datasets import CIFAR10

    root = layout.locate("cifar10", root)
    try:
        ds = CIFAR10(str(root), train=True, download=False)
    except RuntimeError as e:  # torchvision's MD5 check
        raise ConfigError(
            f"dataset 'cifar10': files under {root / layout.CIFAR10_DIR} failed torchvision's MD5 check ({e}); "
            f"re-download from {URL['cifar10']}"
        ) from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    images = resize_uint8(images, cfg.resolution, _antialias("cifar10", cfg.resolution))
    return TensorImages(images, "cifar10")


def _stl10(root: Path, cfg: TrainConfig) -> Dataset:
    path = layout.locate("stl10", root)
    # Same layout as torchvision's STL10: (N, 3, 96, 96) stored column-major per channel.
    raw = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, STL10_SIDE, STL10_SIDE)
    antialias = _antialias("stl10", cfg.resolution)
    out = [
        resize_uint8(
            torch.from_numpy(np.array(raw[i : i + _CHUNK])).transpose(2, 3),
            cfg.resolution,
            antialias,
        )
        for i in range(0, len(raw), _CHUNK)
    ]
    return TensorImages(torch.cat(out).contiguous(), "stl10")


def _mnist(root: Path, cfg: TrainConfig) -> Dataset:
    from torchvision.datasets import MNIST

    ds = MNIST(str(layout.locate("mnist", root)), train=True, download=False)
    images = ds.data.unsqueeze(1).contiguous()
    return TensorImages(resize_uint8(images, cfg.resolution, _antialias("mnist", cfg.resolution)), "mnist")


def _celeba(root: Path, cfg: TrainConfig) -> Dataset:
    files = list_images(layout.locate("celeba", root))
    return ImageFiles(files, cfg.resolution, 3, CELEBA_CROP, _antialias("celeba", cfg.resolution), "celeba")


def _imagenet(root: Path, cfg: TrainConfig) -> Dataset:
    files = list_images(layout.locate("imagenet", root))
    return ImageFiles(files, cfg.resolution, 3, None, _antialias("imagenet", cfg.resolution), "imagenet")


def _folder(root: Path, cfg: TrainConfig) -> Dataset:
    files = list_images(layout.locate("folder", root))
    return ImageFiles(files, cfg.resolution, cfg.channels, None, True, "folder")


_LOADERS = {
    "cifar10": _cifar10,
    "stl10": _stl10,
    "celeba": _celeba,
    "imagenet": _imagenet,
    "mnist": _mnist,
    "folder": _folder,
}


def load_dataset(cfg: TrainConfig) -> Dataset:
    """The dataset named by ``cfg.dataset`` under ``cfg.data_root``; items (C, H, W) in [-1, 1]."""
    name = cfg.dataset
    if name not in _LOADERS:
        raise ConfigError(f"unknown image dataset {name!r}; valid: {', '.join(DATASET_INFO)}")
    layout.check_config(name, cfg.data_root, cfg.channels)
    return _LOADERS[name](Path(str(cfg.data_root)).expanduser(), cfg)
