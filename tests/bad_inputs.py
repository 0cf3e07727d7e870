"""A corpus of sweep inputs that are wrong on the file system (or for the model), built in a temp dir.

Each case makes real files (folders, CIFAR/STL/ImageNet layouts, weights files, symlink loops) and
returns the ``train``/``space`` entries that point a valid tiny sweep at them, plus what the one
error line must say: the field path and a fragment of the message. ``slot`` says which field a
case breaks, so cases of different slots combine into one spec with one error line each.
``tests/test_preflight.py`` runs every case; ``tests/test_validate_fuzz.py`` combines them at random.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_TRAIN: dict[str, Any] = {
    "dataset": "folder",
    "model": "sngan_cnn",
    "resolution": 8,
    "width": 0.0625,
    "latent_dim": 8,
    "batch_size": 8,
    "iterations": 6,
    "eval_every": 3,
    "eval_samples": 64,
    "metrics": ["fid_small"],
}


def spec(tmp: Path, train: dict[str, Any], space: dict[str, Any] | None = None, name: str = "pf") -> dict[str, Any]:
    """A valid tiny sampled sweep on a good image folder under ``tmp``, with ``train``/``space`` laid over
    it (a continuous parameter, so the spec's own grid checks never see the bad points)."""
    space = dict(space or {})
    merged = {**BASE_TRAIN, "data_root": str(good_folder(tmp / "base")), **train}
    return {
        "name": name,
        "train": {k: v for k, v in merged.items() if k not in space},  # searched keys leave `train`
        "objective": {"metric": "fid_small"},
        "space": {"scale": {"loguniform": [0.5, 2.0]}, **space},
        "search": {"sampler": "tpe", "trials": 4},
    }


def png(path: Path, side: int = 8) -> Path:
    """A real RGB PNG, written by hand so making test data needs no image library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(
        b"\x00" + b"".join(bytes(((x * 32) % 256, (y * 32) % 256, 128)) for x in range(side)) for y in range(side)
    )
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def good_folder(root: Path, n: int = 3) -> Path:
    if root.is_dir():
        return root
    for i in range(n):
        png(root / f"class{i % 2}" / f"{i}.png")
    return root


def loop_link(path: Path) -> Path:
    """A symlink to itself: unreadable for every user, root included (ELOOP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(path.name, path)
    return path


def cifar(root: Path, skip: tuple[str, ...] = (), as_dir: tuple[str, ...] = (), loop: tuple[str, ...] = ()) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta", "test_batch"]:
        if f in skip:
            continue
        if f in as_dir:
            (folder / f).mkdir()
        elif f in loop:
            loop_link(folder / f)
        else:
            (folder / f).write_bytes(b"\x80\x02}q\x00.")  # the preflight reads one byte, never the pickle
    return root


@dataclass(frozen=True)
class Case:
    name: str
    slot: str
    """The field the case breaks: data, weights, cache or shape (shape needs no files)."""
    build: Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]
    """tmp dir -> (train entries, space entries)."""
    path: str
    """The field path the error line names."""
    says: str
    """A fragment of the message."""
    files: bool = True
    """Needs the file checks (``--no-data`` lets it through)."""


def _weights(value: Callable[[Path], Path]) -> Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]:
    return lambda t: ({"metrics": ["fid_small", "fid"], "inception_weights": str(value(t))}, {})


def _junk(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"not the inception graph")
    return p


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True)
    return p


def _stl_train_only(t: Path) -> dict[str, Any]:
    (t / "stl" / "stl10_binary").mkdir(parents=True)
    (t / "stl" / "stl10_binary" / "train_X.bin").write_bytes(b"\x00" * 27648)
    return {"dataset": "stl10", "resolution": 48, "data_root": str(t / "stl")}


def _imagenet_val_only(t: Path) -> dict[str, Any]:
    png(t / "inet" / "val" / "n01440764" / "a.png")
    return {"dataset": "imagenet", "data_root": str(t / "inet")}


def _corrupt_first(t: Path) -> dict[str, Any]:
    (t / "imgs").mkdir()
    (t / "imgs" / "a.png").write_text("version https://git-lfs.github.com/spec/v1\n")  # an LFS pointer
    png(t / "imgs" / "b.png")
    return {"data_root": str(t / "imgs")}


def _file_as_cache(t: Path) -> dict[str, Any]:
    (t / "cache").write_text("")
    return {"stats_cache_dir": str(t / "cache")}


def _one_image(t: Path) -> dict[str, Any]:
    return {"data_root": str(png(t / "one" / "a.png").parent)}


def _notes(t: Path) -> dict[str, Any]:
    (t / "notes").mkdir()
    (t / "notes" / "readme.txt").write_text("x")
    (t / "notes" / "data.npz").write_bytes(b"x")
    return {"data_root": str(t / "notes")}


def _archive(t: Path) -> dict[str, Any]:
    (t / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    return {"dataset": "cifar10", "resolution": 32, "data_root": str(t / "cifar-10-python.tar.gz")}


def _broken_link(t: Path) -> dict[str, Any]:
    os.symlink(t / "gone", t / "link")
    return {"data_root": str(t / "link")}


def _searched_root(t: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    return {}, {"data_root": {"choice": [str(good_folder(t / "ok")), str(t / "missing")]}}


def _data(fn: Callable[[Path], dict[str, Any]]) -> Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]:
    return lambda t: (fn(t), {})


def _shape(train: dict[str, Any], space: dict[str, Any] | None = None):  # noqa: ANN202
    return lambda t: (dict(train), dict(space or {}))


CASES: list[Case] = [
    Case("missing_root", "data", _data(lambda t: {"data_root": str(t / "nonexistent")}),
         "train.data_root", "does not exist"),
    Case("empty_folder", "data", _data(lambda t: {"data_root": str(_mkdir(t / "empty"))}),
         "train.data_root", "holds no files"),
    Case("no_images_only_other_files", "data", _data(_notes), "train.data_root", "other file(s)"),
    Case("cifar_wrong_layout", "data",
         _data(lambda t: {"dataset": "cifar10", "resolution": 32, "data_root": str(_mkdir(t / "c" / "other"))}),
         "train.data_root", "no CIFAR-10 data under"),
    Case("cifar_missing_split", "data",
         _data(lambda t: {"dataset": "cifar10", "resolution": 32,
                          "data_root": str(cifar(t / "c", skip=("data_batch_3",)))}),
         "train.data_root", "lacks data_batch_3 of the train split"),
    Case("stl10_missing_unlabeled_split", "data", _data(_stl_train_only), "train.data_root", "no unlabeled_X.bin"),
    Case("imagenet_missing_train_split", "data", _data(_imagenet_val_only), "train.data_root", "no train/ split"),
    Case("dir_where_file_expected", "data",
         _data(lambda t: {"dataset": "cifar10", "resolution": 32,
                          "data_root": str(cifar(t / "c", as_dir=("data_batch_1",)))}),
         "train.data_root", "is a folder, not a file"),
    Case("unreadable_data_file", "data",
         _data(lambda t: {"dataset": "cifar10", "resolution": 32,
                          "data_root": str(cifar(t / "c", loop=("batches.meta",)))}),
         "train.data_root", "Too many levels of symbolic links"),
    Case("archive_as_root", "data", _data(_archive), "train.data_root", "is a file, not a folder; extract it first"),
    Case("broken_symlink_root", "data", _data(_broken_link), "train.data_root", "broken symbolic link"),
    Case("too_few_images_for_fid", "data", _data(_one_image), "train.data_root", "need at least 2 real images"),
    Case("undecodable_first_image", "data", _data(_corrupt_first), "train.data_root", "is not a readable image"),
    Case("one_searched_root_missing", "data", _searched_root, "space.data_root", "missing does not exist"),
    Case("weights_wrong_hash", "weights", _weights(lambda t: _junk(t / "w" / "other.pth")),
         "train.inception_weights", "expected 6726825d"),
    Case("weights_missing", "weights", _weights(lambda t: t / "w" / "pt_inception-2015-12-05-6726825d.pth"),
         "train.inception_weights", "Inception weights not found"),
    Case("weights_dir_where_file_expected", "weights", _weights(lambda t: _mkdir(t / "w" / "weights.pth")),
         "train.inception_weights", "is a folder, not a file"),
    Case("weights_unreadable", "weights", _weights(lambda t: loop_link(t / "w" / "loop.pth")),
         "train.inception_weights", "cannot be read"),
    Case("cache_dir_is_a_file", "cache", _data(_file_as_cache), "train.stats_cache_dir", "is a file"),
    Case("resolution_some_searched_values", "shape", _shape({}, {"resolution": {"choice": [8, 12, 16]}}),
         "space.resolution", "multiple of 8 for sngan_cnn (the paper: 32, 48, 64), got 12", files=False),
    Case("resolution_int_range", "shape", _shape({}, {"resolution": {"int": [8, 20]}}),
         "space.resolution", "valid there: 8, 16; use `choice`", files=False),
    Case("model_cannot_take_the_data", "shape",
         _shape({"dataset": "blobs"}, {"model": {"choice": ["sngan_cnn", "mlp"]}}),
         "space.model", "model 'mlp' trains on 2D points (datasets ring, grid), not on the images", files=False),
    Case("metric_cannot_read_the_channels", "shape", _shape({"dataset": "blobs", "channels": 2}),
         "train.channels", "read 1- or 3-channel images, got `channels: 2`", files=False),
    Case("channels_do_not_fit_the_dataset", "shape", _shape({"dataset": "cifar10", "resolution": 32, "channels": 1}),
         "train.channels", "set `channels: 3`", files=False),
]  # fmt: skip
BY_NAME = {c.name: c for c in CASES}
