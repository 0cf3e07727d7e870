"""Real-dataset loaders on tiny fake datasets written in the real on-disk layouts.

CIFAR-10 batches are written as Python-2 style pickles (keys are py2 ``str``, so
they read as ``b"data"`` with ``encoding="bytes"`` and as ``"data"`` under
torchvision's ``encoding="latin1"``, exactly like the real files) and are loaded
through the real ``torchvision.datasets.CIFAR10(root, download=False)``. Only the
MD5 table is swapped for the fake files' checksums; the MD5 check itself runs.
No test touches the network.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.config import ConfigError, TrainConfig
from trainers.data import images
from trainers.data.images import DATASET_INFO, load_dataset, resolution_of

PER_BATCH = 40  # 5 train batches -> 200 images


# --- writing fake datasets -------------------------------------------------------------


def _py2_str(s: str) -> bytes:
    """SHORT_BINSTRING: how Python 2 pickled a plain ``str``."""
    raw = s.encode("latin1")
    return b"U" + bytes([len(raw)]) + raw


def _value(v: object) -> bytes:
    if isinstance(v, str):
        return _py2_str(v)
    if isinstance(v, list) and v and isinstance(v[0], str):
        return b"](" + b"".join(_py2_str(x) for x in v) + b"e"  # EMPTY_LIST MARK ... APPENDS
    return pickle.dumps(v, protocol=2)[2:-1]  # strip PROTO and STOP; no outer memo is used


def py2_pickle(d: dict[str, object]) -> bytes:
    """A protocol-2 pickle of a dict with py2-``str`` keys, as CIFAR-10's files are."""
    body = b"".join(_py2_str(k) + _value(v) for k, v in d.items())
    return b"\x80\x02}(" + body + b"u."  # PROTO 2, EMPTY_DICT, MARK, ..., SETITEMS, STOP


def write_cifar(root: Path, rng: np.random.Generator) -> list[np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, PER_BATCH)]
        (folder / name).write_bytes(py2_pickle({"batch_label": name, "labels": labels, "data": data}))
        batches.append(data)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {"num_cases_per_batch": PER_BATCH, "label_names": names, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return batches[:5]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[np.ndarray]]:
    from torchvision.datasets import CIFAR10

    batches = write_cifar(tmp_path, np.random.default_rng(0))
    folder = tmp_path / "cifar-10-batches-py"
    monkeypatch.setattr(CIFAR10, "train_list", [[f, _md5(folder / f)] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, _md5(folder / f)] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    return tmp_path, batches


def cfg(name: str, root: Path | None, **kw: object) -> TrainConfig:
    kw.setdefault("resolution", resolution_of(name))
    return TrainConfig(dataset=name, data_root=None if root is None else str(root), **kw)  # type: ignore[arg-type]


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


# --- CIFAR-10 --------------------------------------------------------------------------


def test_fake_cifar_has_the_real_pickle_layout(cifar_root: tuple[Path, list[np.ndarray]]) -> None:
    root, batches = cifar_root
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        d = pickle.load(f, encoding="bytes")  # how the CIFAR web page reads it
    assert set(d) == {b"batch_label", b"labels", b"data"}
    assert d[b"data"].dtype == np.uint8 and d[b"data"].shape == (PER_BATCH, 3072)
    assert np.array_equal(d[b"data"], batches[0])


def test_cifar10_through_torchvision(cifar_root: tuple[Path, list[np.ndarray]]) -> None:
    root, batches = cifar_root
    ds = load_dataset(cfg("cifar10", root))
    assert len(ds) == 5 * PER_BATCH
    x = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    # row-major 3072 bytes = R plane, G plane, B plane, each 32x32
    expected = torch.from_numpy(batches[0][0].reshape(3, 32, 32)).float() / 127.5 - 1
    assert torch.equal(x, expected)
    last = torch.from_numpy(batches[4][-1].reshape(3, 32, 32)).float() / 127.5 - 1
    assert torch.equal(ds[len(ds) - 1], last)
    assert ds.batch([0, 3]).shape == (2, 3, 32, 32)


def test_cifar10_inner_folder_and_resize(cifar_root: tuple[Path, list[np.ndarray]]) -> None:
    root, _ = cifar_root
    ds = load_dataset(cfg("cifar10", root / "cifar-10-batches-py", resolution=16))
    x = ds[7]
    assert x.shape == (3, 16, 16) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_cifar10_works_with_the_loop_source(cifar_root: tuple[Path, list[np.ndarray]]) -> None:
    from trainers.data import make_source

    source = make_source(cfg("cifar10", cifar_root[0]))
    batch = source.sample(4, torch.Generator().manual_seed(0))
    assert batch.shape == (4, 3, 32, 32)


def test_cifar10_missing_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_dataset(cfg("cifar10", tmp_path))
    assert str(e.value) == (
        f"dataset 'cifar10': no CIFAR-10 data under {tmp_path} (expected {tmp_path}/cifar-10-batches-py); "
        "download it from https://www.cs.toronto.edu/~kriz/cifar.html and set `data_root`"
    )
    assert "\n" not in str(e.value)


def test_cifar10_corrupted_files_fail_md5(tmp_path: Path) -> None:
    write_cifar(tmp_path, np.random.default_rng(1))  # real MD5 table: fake files do not match
    with pytest.raises(ConfigError, match="failed torchvision's MD5 check"):
        load_dataset(cfg("cifar10", tmp_path))


def test_data_root_required_and_channels_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs `data_root`"):
        load_dataset(cfg("cifar10", None))
    with pytest.raises(ConfigError, match="set `channels: 3`"):
        load_dataset(cfg("cifar10", tmp_path, channels=1))
    with pytest.raises(ConfigError, match="unknown image dataset 'svhn'"):
        load_dataset(TrainConfig(dataset="svhn", data_root=str(tmp_path)))


# --- image folders ---------------------------------------------------------------------


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(6):
        h, w = int(rng.integers(20, 50)), int(rng.integers(20, 50))
        write_png(tmp_path / f"class{i % 2}" / f"{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    write_png(tmp_path / "class0" / "gray.png", rng.integers(0, 256, (30, 30), dtype=np.uint8))
    (tmp_path / "class0" / "notes.txt").write_text("not an image")
    ds = load_dataset(cfg("folder", tmp_path, resolution=16))
    assert len(ds) == 7
    xs = torch.stack([ds[i] for i in range(len(ds))])
    assert xs.shape == (7, 3, 16, 16) and xs.dtype == torch.float32
    assert float(xs.min()) >= -1.0 and float(xs.max()) <= 1.0
    gray = load_dataset(cfg("folder", tmp_path, resolution=8, channels=1))
    assert gray[0].shape == (1, 8, 8)


def test_image_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset 'folder': data_root .*nope does not exist; set `data_root`"):
        load_dataset(cfg("folder", tmp_path / "nope", resolution=16))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"dataset 'folder': no images .* under .*empty .*; set `data_root`"):
        load_dataset(cfg("folder", tmp_path / "empty", resolution=16))


def test_celeba_center_crop_128_then_64(tmp_path: Path) -> None:
    # a 178x218 aligned image whose central 128x128 crop is white and the rest black
    img = np.zeros((218, 178, 3), dtype=np.uint8)
    top, left = (218 - 128) // 2, (178 - 128) // 2
    img[top : top + 128, left : left + 128] = 255
    folder = tmp_path / "celeba" / "img_align_celeba"
    write_png(folder / "000001.png", img)
    write_png(folder / "000002.png", 255 - img)
    ds = load_dataset(cfg("celeba", tmp_path))
    assert len(ds) == 2
    assert ds[0].shape == (3, 64, 64)
    assert torch.equal(ds[0], torch.ones(3, 64, 64))
    assert torch.equal(ds[1], -torch.ones(3, 64, 64))


def test_celeba_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no CelebA images under .*CelebA.html and set `data_root`"):
        load_dataset(cfg("celeba", tmp_path))


def test_imagenet_prefers_train_subfolder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_png(tmp_path / "train" / "n01440764" / "a.png", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    write_png(tmp_path / "val" / "n01440764" / "b.png", rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    ds = load_dataset(cfg("imagenet", tmp_path, resolution=16))
    assert len(ds) == 1 and ds[0].shape == (3, 16, 16)


# --- STL-10 and MNIST in their binary layouts ----------------------------------------------


def test_stl10_unlabeled_96_to_48(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
    imgs[0, 0] = np.arange(96, dtype=np.uint8)[None, :]  # red ramps along the width
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    # the binary stores each channel column-major: (N, C, W, H) in C order
    (folder / "unlabeled_X.bin").write_bytes(np.ascontiguousarray(imgs.transpose(0, 1, 3, 2)).tobytes())
    ds = load_dataset(cfg("stl10", tmp_path))
    assert len(ds) == 3 and ds[0].shape == (3, 48, 48)
    # bilinear at exactly 1/2 == mean of 2x2 blocks (cv2 INTER_LINEAR), rounded half to even
    mean = torch.from_numpy(imgs.astype(np.float64)).reshape(3, 3, 48, 2, 48, 2).mean(dim=(3, 5))
    assert torch.equal(ds.images, mean.round().to(torch.uint8))
    assert ds.images[0, 0, 5, 10] == 20 or ds.images[0, 0, 5, 10] == 21  # ramp along width survived


def test_stl10_truncated(tmp_path: Path) -> None:
    (tmp_path / "stl10_binary").mkdir()
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").write_bytes(b"\x00" * 1000)
    with pytest.raises(ConfigError, match="not a multiple of 27648"):
        load_dataset(cfg("stl10", tmp_path))


def _idx(path: Path, magic: int, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">i", magic) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes())


def test_mnist_through_torchvision(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    _idx(raw / "train-images-idx3-ubyte", 2051, train)
    _idx(raw / "train-labels-idx1-ubyte", 2049, rng.integers(0, 10, 20, dtype=np.uint8))
    _idx(raw / "t10k-images-idx3-ubyte", 2051, train[:5])
    _idx(raw / "t10k-labels-idx1-ubyte", 2049, rng.integers(0, 10, 5, dtype=np.uint8))
    ds = load_dataset(cfg("mnist", tmp_path, channels=1))
    assert len(ds) == 20 and ds[3].shape == (1, 28, 28)
    assert torch.equal(ds[3][0], torch.from_numpy(train[3]).float() / 127.5 - 1)
    with pytest.raises(ConfigError, match="set `channels: 1`"):
        load_dataset(cfg("mnist", tmp_path))


def test_catalogue() -> None:
    assert set(DATASET_INFO) == {"cifar10", "stl10", "celeba", "imagenet", "mnist", "folder"}
    assert all("\n" not in v for v in DATASET_INFO.values())
    paper = {"cifar10": 32, "stl10": 48, "celeba": 64, "imagenet": 128, "mnist": 28}
    assert {n: resolution_of(n) for n in paper} == paper
    assert images.channels_of("mnist") == 1
    with pytest.raises(ConfigError):
        resolution_of("svhn")
