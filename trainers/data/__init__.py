"""Data catalogue and batch sampling.

Every dataset is turned into a *source* with ``sample(n, generator)``: procedural
sources draw fresh samples from their known distribution; real datasets draw
indices either with replacement (the paper's ``np.random.choice`` per step) or by
shuffled epochs, as ``TrainConfig.sampling`` says. Sampling through an explicit
``torch.Generator`` keeps batches reproducible and resumable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from trainers.config import ConfigError, TrainConfig

if TYPE_CHECKING:  # torch is imported where batches are made: the catalogue is read without it
    import torch

    from trainers.data.procedural import ProceduralSource

PROCEDURAL = {
    "blobs": "8 coloured Gaussian bumps on a ring (procedural images, known modes; the demo)",
    "ring": "2D ring of 8 Gaussians, std 0.01 (PacGAN)",
    "grid": "2D grid of 25 Gaussians, std 0.05 (PacGAN)",
}
IMAGE_DATASETS = {
    "cifar10": "CIFAR-10 train split, 50k, 32 px (torchvision layout under data_root)",
    "stl10": "STL-10 unlabeled split, 100k, resized 96 -> 48 px",
    "celeba": "CelebA aligned, center crop 128, resize 64",
    "imagenet": "ILSVRC2012 train as an ImageFolder, center crop + resize 128",
    "mnist": "MNIST train, 28 px",
    "folder": "any ImageFolder-style root, resized to `resolution`",
}
DATASETS = {**PROCEDURAL, **IMAGE_DATASETS}


class Source(Protocol):
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor: ...


class DatasetSource:
    """Batches from a finite map-style dataset of (C, H, W) tensors in [-1, 1]."""

    def __init__(self, dataset: torch.utils.data.Dataset, sampling: str):
        self.dataset = dataset
        self.sampling = sampling
        self._order: torch.Tensor | None = None
        self._pos = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        if self.sampling == "replacement":
            return torch.randint(len(self), (n,), generator=generator)
        out = []
        while n > 0:
            if self._order is None or self._pos >= len(self._order):
                self._order, self._pos = torch.randperm(len(self), generator=generator), 0
            take = self._order[self._pos : self._pos + n]
            self._pos += len(take)
            n -= len(take)
            out.append(take)
        return torch.cat(out)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        return torch.stack([self._item(int(i)) for i in self._indices(n, generator)])

    def _item(self, i: int) -> torch.Tensor:
        item = self.dataset[i]
        return item[0] if isinstance(item, (tuple, list)) else item

    def state_dict(self) -> dict:
        return {"order": self._order, "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self._order, self._pos = state["order"], state["pos"]


def make_source(cfg: TrainConfig) -> ProceduralSource | DatasetSource:
    """The batch source for ``cfg.dataset``; unknown names list the valid ones."""
    from trainers.data.procedural import blobs, grid, ring

    if cfg.dataset == "blobs":
        return blobs(cfg.resolution, cfg.channels)
    if cfg.dataset == "ring":
        return ring()
    if cfg.dataset == "grid":
        return grid()
    if cfg.dataset in IMAGE_DATASETS:
        from trainers.data.images import load_dataset  # torchvision is imported only here

        return DatasetSource(load_dataset(cfg), cfg.sampling)
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
