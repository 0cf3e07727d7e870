"""What a real dataset's ``data_root`` must hold: the one place for every layout rule.

The loaders (``trainers.data.images``) and the sweep service's preflight
(``sweeper.spec.preflight``) call the same two functions, so a root the preflight
accepts is one the loader can read, and a bad root fails with the same one-line
``ConfigError`` on a laptop before anything starts or in a trial on a cluster node:

* ``check_config(dataset, data_root, channels)``: the rules that need no files (a
  root is set, the channel count fits the dataset);
* ``locate(dataset, data_root, min_images=...)``: the file-system rules (the root
  exists and is a readable folder, the expected files of the training split are
  there, are files and can be read, at least ``min_images`` images exist and the
  first one decodes). Returns what the loader reads.

Plain ``os``/``pathlib``: no torch and no torchvision, and nothing is read beyond a
byte of each required file and the header of the first image (PIL, when installed),
so checking a root of a million images costs milliseconds. Checksums (torchvision's
MD5 of CIFAR-10) stay in the loader: they read every byte.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from trainers.config import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
URL = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html",
    "stl10": "https://cs.stanford.edu/~acoates/stl10/",
    "celeba": "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
    "imagenet": "https://image-net.org/download.php",
    "mnist": "https://yann.lecun.com/exdb/mnist/",
}
CHANNELS = {"cifar10": 3, "stl10": 3, "celeba": 3, "imagenet": 3, "mnist": 1}
"""Image channels of the fixed-format datasets; ``folder`` converts to 1 or 3."""
FOLDER_CHANNELS = (1, 3)
ROOTED = ("cifar10", "stl10", "celeba", "imagenet", "mnist", "folder")
"""Datasets read from ``data_root`` (the procedural ones ignore it)."""
POINTS = ("ring", "grid")
"""Datasets whose samples are 2D points; every other dataset yields images."""

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("batches.meta",)
"""What ``torchvision.datasets.CIFAR10(train=True)`` opens: the five train batches and the meta file."""
STL10_DIR = "stl10_binary"
STL10_UNLABELED = "unlabeled_X.bin"
STL10_IMAGE_BYTES = 3 * 96 * 96
MNIST_RAW = ("MNIST", "raw")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
"""torchvision's MNIST checks all four raw files even for the train split."""
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip", ".gz", ".bz2", ".xz", ".7z")
_OTHER_SPLITS = ("val", "valid", "validation", "test")


def sample_kind(dataset: str) -> str:
    """``points`` (2D toys) or ``images``: what a model must take to train on ``dataset``."""
    return "points" if dataset in POINTS else "images"


def check_config(dataset: str, data_root: str | None, channels: int) -> None:
    """The rules without files: a rooted dataset needs ``data_root``; channels fit the dataset."""
    if dataset not in ROOTED:
        return
    if not data_root:
        where = f" from {URL[dataset]}" if dataset in URL else ""
        raise ConfigError(f"dataset {dataset!r} needs `data_root`: download it{where} and set `data_root`")
    if dataset in CHANNELS and channels != CHANNELS[dataset]:
        raise ConfigError(
            f"dataset {dataset!r} has {CHANNELS[dataset]} channel(s): set `channels: {CHANNELS[dataset]}` "
            f"(got {channels})"
        )
    if dataset == "folder" and channels not in FOLDER_CHANNELS:
        raise ConfigError(f"dataset 'folder' supports `channels` 1 or 3, got {channels}")


def locate(dataset: str, data_root: str | os.PathLike[str], *, min_images: int = 1, why: str = "") -> Path:
    """The file or folder the loader reads for ``dataset`` under ``data_root``; ConfigError otherwise.

    cifar10 and mnist: the root torchvision takes; stl10: the unlabeled binary; celeba,
    imagenet, folder: the folder whose images are the training set, holding at least
    ``min_images`` images (``why`` says who needs that many, for the message).
    """
    root = Path(data_root).expanduser()
    if dataset == "cifar10":
        return _cifar10(root)
    if dataset == "stl10":
        return _stl10(root)
    if dataset == "mnist":
        return _mnist(root)
    if dataset == "celeba":
        folder = _celeba_folder(root)
    elif dataset == "imagenet":
        folder = _imagenet_folder(root)
    elif dataset == "folder":
        folder = _dir(dataset, root, "a folder of images")
    else:
        raise ConfigError(f"dataset {dataset!r} is not read from `data_root`; valid: {', '.join(ROOTED)}")
    _enough_images(dataset, folder, min_images, why)
    return folder


def iter_images(root: Path) -> Iterator[Path]:
    """Image files under ``root``, lazily (recursive, sorted per folder, hidden entries skipped)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                yield Path(dirpath) / f


# --- per dataset -----------------------------------------------------------------------------
def _cifar10(root: Path) -> Path:
    if root.name == CIFAR10_DIR:  # pointing at the inner folder is a common slip
        root = root.parent
    _dir("cifar10", root, f"the folder holding {CIFAR10_DIR}")
    folder = root / CIFAR10_DIR
    if not folder.is_dir():
        raise _missing("cifar10", "CIFAR-10 data", root, folder)
    _files("cifar10", folder, CIFAR10_FILES, "of the train split")
    return root


def _stl10(root: Path) -> Path:
    if root.name == STL10_DIR:
        root = root.parent
    _dir("stl10", root, f"the folder holding {STL10_DIR}")
    path = root / STL10_DIR / STL10_UNLABELED
    if not os.path.lexists(path) and (root / STL10_DIR).is_dir():
        found = sorted(p.name for p in (root / STL10_DIR).iterdir() if p.name.endswith(".bin"))
        if found:
            raise ConfigError(
                f"dataset 'stl10': {root / STL10_DIR} has no {STL10_UNLABELED} (the 100k unlabeled split the "
                f"paper trains on; found {', '.join(found)}); download the full stl10_binary from {URL['stl10']}"
            )
    if not os.path.lexists(path):
        raise _missing("stl10", "STL-10 unlabeled images", root, path)
    _readable("stl10", path)
    size = path.stat().st_size
    if size == 0 or size % STL10_IMAGE_BYTES:
        raise ConfigError(
            f"dataset 'stl10': {path} has {size} bytes, not a multiple of {STL10_IMAGE_BYTES} (truncated?); "
            f"re-download from {URL['stl10']}"
        )
    return path


def _mnist(root: Path) -> Path:
    _dir("mnist", root, "the folder holding MNIST/raw")
    raw = root.joinpath(*MNIST_RAW)
    if not raw.is_dir():
        raise _missing("mnist", "MNIST data", root, raw / MNIST_FILES[0])
    _files("mnist", raw, MNIST_FILES, "(torchvision needs all four raw files)")
    return root


def _celeba_folder(root: Path) -> Path:
    # torchvision's CelebA wants five annotation files we do not use; accept the image folder.
    _dir("celeba", root, "the folder holding img_align_celeba")
    candidates = [root / "celeba" / "img_align_celeba", root / "img_align_celeba", root]
    folder = next((c for c in candidates if c.is_dir() and _has_shallow_image(c)), None)
    if folder is None:
        raise _missing("celeba", "CelebA images", root, root / "celeba" / "img_align_celeba" / "000001.jpg")
    return folder


def _imagenet_folder(root: Path) -> Path:
    _dir("imagenet", root, "the ILSVRC2012 folder holding train/")
    if (root / "train").is_dir():
        return root / "train"
    others = [s for s in _OTHER_SPLITS if (root / s).is_dir()]
    if others:
        raise ConfigError(
            f"dataset 'imagenet': {root} has {'/'.join(others)}/ but no train/ split; set `data_root` to "
            "the folder that holds train/ (or to train/ itself)"
        )
    return root


# --- checks ------------------------------------------------------------------------------
def _missing(name: str, what: str, root: Path, expected: Path | str) -> ConfigError:
    url = f"; download it from {URL[name]}" if name in URL else ""
    return ConfigError(f"dataset {name!r}: no {what} under {root} (expected {expected}){url} and set `data_root`")


def _dir(name: str, root: Path, what: str) -> Path:
    """``root`` is an existing folder we may list."""
    if not os.path.lexists(root):
        url = f" (download it from {URL[name]})" if name in URL else ""
        raise ConfigError(f"dataset {name!r}: data_root {root} does not exist{url}; set `data_root` to {what}")
    if root.is_symlink() and not root.exists():
        raise ConfigError(
            f"dataset {name!r}: data_root {root} is a broken symbolic link (to {os.readlink(root)}); "
            f"set `data_root` to {what}"
        )
    if not root.is_dir():
        hint = "; extract it first" if root.name.lower().endswith(ARCHIVES) else ""
        raise ConfigError(
            f"dataset {name!r}: data_root {root} is a file, not a folder{hint}; set `data_root` to {what}"
        )
    try:
        with os.scandir(root) as it:
            next(it, None)
    except OSError as e:
        raise ConfigError(
            f"dataset {name!r}: cannot list data_root {root} ({e.strerror or e}); fix its permissions "
            "or set `data_root`"
        ) from None
    return root


def _readable(name: str, path: Path) -> None:
    """``path`` is a regular file whose first byte can be read (not a folder, link loop, FIFO...)."""
    try:
        st = path.stat()
    except OSError as e:
        if path.is_symlink():
            raise ConfigError(
                f"dataset {name!r}: {path} is a broken symbolic link ({e.strerror or e}); fix or replace it"
            ) from None
        raise ConfigError(f"dataset {name!r}: cannot read {path} ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"dataset {name!r}: {path} is a folder, not a file; put the file itself there")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"dataset {name!r}: {path} is not a regular file; put the file itself there")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise ConfigError(
            f"dataset {name!r}: cannot read {path} ({e.strerror or e}); fix its permissions"
        ) from None


def _files(name: str, folder: Path, needed: tuple[str, ...], what: str) -> None:
    missing = [f for f in needed if not os.path.lexists(folder / f)]
    if missing:
        url = f"; re-download from {URL[name]}" if name in URL else ""
        raise ConfigError(f"dataset {name!r}: {folder} lacks {', '.join(missing)} {what}{url}")
    for f in needed:
        _readable(name, folder / f)


def _has_shallow_image(folder: Path) -> bool:
    """An image file directly in ``folder`` (a cheap probe, no recursion)."""
    try:
        with os.scandir(folder) as it:
            return any(e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file() for e in it)
    except OSError:
        return False


def _enough_images(name: str, folder: Path, need: int, why: str) -> None:
    found = []
    for path in iter_images(folder):
        found.append(path)
        if len(found) >= max(need, 1):
            break
    if not found:
        others = _other_files(folder)
        seen = f" (found {others[0]} other file(s), e.g. {others[1]})" if others else " (it holds no files)"
        raise ConfigError(
            f"dataset {name!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}{seen}; "
            "set `data_root` to a folder of images"
        )
    if len(found) < need:
        raise ConfigError(
            f"dataset {name!r}: only {len(found)} image(s) under {folder}; {why or f'at least {need} needed'}"
        )
    _readable(name, found[0])
    _decodes(name, found[0])


def _other_files(folder: Path, limit: int = 1000) -> tuple[int, str] | None:
    """(how many non-image files, one of them) among the first ``limit`` files, for the message."""
    n, example = 0, ""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            n += 1
            example = example or str(Path(dirpath, f).relative_to(folder))
            if n >= limit:
                return n, example
    return (n, example) if n else None


def _decodes(name: str, path: Path) -> None:
    """The first image's header parses (catches e.g. Git LFS pointers saved as .jpg)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # the loader needs PIL anyway and will say so
        return
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - reading the header is the check
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ConfigError(
            f"dataset {name!r}: {path} is not a readable image ({type(e).__name__}); remove it or set `data_root`"
        ) from None
