"""FID, KID and Inception Score, plus cached real-data statistics and the loop's image evaluator.

The maths is plain numpy in float64 so it is easy to check against references:

* ``frechet_distance``: ``tr sqrt(S1 S2)`` as ``sum sqrt(eig(S1^1/2 S2 S1^1/2))``, the
  eigendecomposition of a *symmetric* PSD matrix. It equals ``scipy.linalg.sqrtm``'s
  answer (to ~1e-14 on 2048-d Inception covariances) in a fraction of the time
  and never returns complex noise.
* ``inception_score``: OpenAI's/tsc2017's formula with contiguous splits, as the
  paper's ``metric.py`` (50k samples, 10 splits there).
* ``kernel_inception_distance``: Binkowski et al.'s unbiased MMD^2 with the cubic
  polynomial kernel ``(x.y/d + 1)^3`` over random subsets, computed as
  torch-fidelity does (same subset sampling for the same seed).

Sample counts bias FID upward (E[FID_N] ~ FID_inf + k/N): the paper uses 10k
generated vs 5k real images; never compare FIDs computed with different counts
or different extractors. ``*_small`` metrics come from a seeded random CNN and
are only comparable with each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.config import ConfigError, TrainConfig
from trainers.metrics.features import FeatureExtractor
from trainers.metrics.inputs import check_cache_dir, check_real_count

CACHE_VERSION = 1
REAL_SUBSET_SEED = 0
"""Every trial scores against the same real subset (common random numbers make metric
differences between configurations less noisy). The paper drew a fresh 5k subset per run."""
KID_SEED = 2020
"""torch-fidelity's default ``rng_seed``, so KID subsets match its output for the same features."""

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def _np64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


# --- the three metrics -----------------------------------------------------------------


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), where tr((S1 S2)^1/2) =
    tr((S1^1/2 S2 S1^1/2)^1/2) because S1 S2 is similar to that symmetric PSD
    matrix; both square roots come from ``eigh`` with tiny negative eigenvalues
    (round-off) clipped to zero.
    """
    m1, m2 = np.atleast_1d(_np64(mu1)), np.atleast_1d(_np64(mu2))
    s1, s2 = np.atleast_2d(_np64(sigma1)), np.atleast_2d(_np64(sigma2))
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.size, m1.size):
        raise ValueError(f"shape mismatch: mu {m1.shape} vs {m2.shape}, sigma {s1.shape} vs {s2.shape}")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    s1_half = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = s1_half @ s2 @ s1_half
    ev = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(ev, 0.0, None)).sum())
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1, as TF-GAN and pytorch-fid) of (N, D) features."""
    f = _np64(features)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def inception_score(probs: ArrayLike, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over ``splits`` contiguous chunks of exp(E_x KL(p(y|x) || p(y))).

    ``probs``: (N, K) class probabilities. Zero probabilities contribute 0 (the
    limit of p log p) instead of NaN.
    """
    p = _np64(probs)
    if p.ndim != 2 or not 1 <= splits <= len(p):
        raise ValueError(f"need (N, K) probabilities and 1 <= splits <= N, got {p.shape}, splits={splits}")
    n = len(p)
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        py = part.mean(axis=0, keepdims=True)
        safe = np.where(part > 0, part, 1.0)
        kl = np.where(part > 0, part * (np.log(safe) - np.log(np.where(py > 0, py, 1.0))), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def softmax(logits: ArrayLike) -> np.ndarray:
    z = _np64(logits)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 of equal-size samples with k(a, b) = (a.b / d + coef0)^degree.

    Within-sample sums exclude the diagonal (the unbiased U-statistic); the
    cross term keeps every pair, as in the KID paper and torch-fidelity.
    """
    m, d = x.shape
    if y.shape != (m, d) or m < 2:
        raise ValueError(f"need two (m >= 2, D) samples of the same shape, got {x.shape} and {y.shape}")
    k_xx = (x @ x.T / d + coef0) ** degree
    k_yy = (y @ y.T / d + coef0) ** degree
    k_xy = (x @ y.T / d + coef0) ** degree
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = KID_SEED,
) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD^2 over random subsets (without replacement)."""
    a, b = _np64(feats_a), _np64(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N, D) features of equal D, got {a.shape} and {b.shape}")
    if subset_size > min(len(a), len(b)) or subset_size < 2 or subsets < 1:
        raise ValueError(
            f"KID subset_size must be in [2, min(N_a, N_b)] = [2, {min(len(a), len(b))}] and subsets >= 1, "
            f"got subset_size={subset_size}, subsets={subsets}"
        )
    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(len(a), subset_size, replace=False)]
        y = b[rng.choice(len(b), subset_size, replace=False)]
        mmds[i] = polynomial_mmd2(x, y)
    return float(mmds.mean()), float(mmds.std())


# --- real images and their cached statistics ------------------------------------------


def take_images(data: Any, n: int, seed: int = REAL_SUBSET_SEED) -> torch.Tensor:
    """``n`` images as a float tensor: a seeded subset (no replacement) of a tensor or
    map-style dataset, or the first ``n`` of an iterable of images or batches."""
    if isinstance(data, torch.Tensor) or (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        total = len(data)
        if n > total:
            raise ValueError(f"asked for {n} real images, the data has only {total}")
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
        if isinstance(data, torch.Tensor):
            return data[idx].float()
        if hasattr(data, "batch"):
            return data.batch(idx).float()
        return torch.stack([_image(data[int(i)]) for i in idx]).float()
    out: list[torch.Tensor] = []
    got = 0
    for item in data:
        x = _image(item)
        x = x.unsqueeze(0) if x.dim() == 3 else x
        out.append(x)
        got += len(x)
        if got >= n:
            break
    if got < n:
        raise ValueError(f"asked for {n} real images, the iterable gave only {got}")
    return torch.cat(out)[:n].float()


def _image(item: Any) -> torch.Tensor:
    return item[0] if isinstance(item, (tuple, list)) else item


def _metadata(
    extractor: FeatureExtractor, n: int, dataset_name: str, source: str, seed: int, shape: Sequence[int]
) -> dict[str, Any]:
    return {
        "version": CACHE_VERSION,
        "extractor": extractor.name,
        "weights": extractor.identity,
        "n": int(n),
        "dataset": dataset_name,
        "source": source,
        "resolution": int(shape[-1]),
        "channels": int(shape[0]),
        "seed": int(seed),
    }


def real_features(
    data: Any,
    extractor: FeatureExtractor,
    n: int,
    cache_dir: str | Path | None = None,
    *,
    dataset_name: str = "data",
    source: str = "",
    seed: int = REAL_SUBSET_SEED,
    batch_size: int = 100,
) -> dict[str, np.ndarray]:
    """``{"mu", "sigma", "features"}`` of ``n`` real images, cached in ``cache_dir`` as .npz.

    The cache file's name is a hash of its metadata (extractor name, weights
    sha256 or ``seeded-small-v1``, n, dataset name, ``source`` e.g. the data
    root, resolution, channels, subset seed), and the metadata is stored inside
    and compared on load, so a change of any of them is a miss and recomputes.
    Files are written atomically, so parallel trials may share one cache.
    """
    first = _image(data[0]) if not isinstance(data, torch.Tensor) and hasattr(data, "__getitem__") else None
    images: torch.Tensor | None = None
    if isinstance(data, torch.Tensor):
        shape = tuple(data.shape[1:])
    elif first is not None:
        shape = tuple(first.shape)
    else:  # an iterator: we must read it to learn the shape
        images = take_images(data, n, seed)
        shape = tuple(images.shape[1:])
    meta = _metadata(extractor, n, dataset_name, source, seed, shape)
    meta_json = json.dumps(meta, sort_keys=True)
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(meta_json.encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"real_{dataset_name}_{extractor.name}_n{n}_{key}.npz"
        cached = _load_cache(path, meta_json)
        if cached is not None:
            return cached
    if images is None:
        images = take_images(data, n, seed)
    feats, _ = extractor.extract(images, batch_size)
    mu, sigma = statistics(feats)
    out = {"mu": mu, "sigma": sigma, "features": feats.astype(np.float32)}
    if path is not None:
        _save_cache(path, out, meta_json)
    return out


def real_statistics(
    data: Any,
    extractor: FeatureExtractor,
    n: int,
    cache_dir: str | Path | None = None,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of ``n`` real images' features; see ``real_features`` for the cache."""
    r = real_features(data, extractor, n, cache_dir, **kwargs)
    return r["mu"], r["sigma"]


def _load_cache(path: Path, meta_json: str) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["meta"]) != meta_json:
                return None
            return {"mu": z["mu"], "sigma": z["sigma"], "features": z["features"]}
    except (OSError, KeyError, ValueError):  # missing, truncated or foreign file: recompute
        return None


def _save_cache(path: Path, stats: dict[str, np.ndarray], meta_json: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(meta_json), **stats)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- evaluation ---------------------------------------------------------------------


def metric_names(extractor: FeatureExtractor | type[FeatureExtractor]) -> tuple[str, ...]:
    """Names ``evaluate_images`` accepts with this extractor (``_std`` variants included)."""
    s = extractor.metric_suffix
    return (f"fid{s}", f"kid{s}", f"kid{s}_std", f"is{s}", f"is{s}_std")


def evaluate_images(
    fake: torch.Tensor,
    real: Any,
    extractor: FeatureExtractor,
    metrics: Iterable[str],
    n_fake: int,
    n_real: int,
    *,
    real_feats: np.ndarray | None = None,
    batch_size: int = 100,
    is_splits: int = 10,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    n_is: int | None = None,
) -> dict[str, float]:
    """The requested image metrics of ``n_fake`` generated vs ``n_real`` real images.

    The Inception Score uses the first ``n_is`` generated images (default ``n_fake``; the paper's
    IS uses 50k while its FID uses 10k); features are extracted once for the larger count.

    ``metrics`` are names from ``metric_names(extractor)``: ``fid_small``,
    ``kid_small``, ``is_small`` (plus ``kid_small_std``, ``is_small_std``) with the
    small extractor; ``fid``, ``kid``, ``is`` (and ``_std``) with Inception.
    ``real`` is a tensor, dataset or iterable in [-1, 1] (a seeded subset is used),
    or pass precomputed ``real_feats`` (e.g. from ``real_features``) and
    ``real=None``. KID's subset size and IS's split count shrink to the sample
    count when it is smaller.
    """
    wanted = list(metrics)
    valid = metric_names(extractor)
    bad = [m for m in wanted if m not in valid]
    if bad:
        raise ConfigError(
            f"`metrics` {', '.join(bad)} cannot be computed with the {extractor.name} extractor; "
            f"valid with it: {', '.join(valid)}"
        )
    s = extractor.metric_suffix
    want_is = f"is{s}" in wanted or f"is{s}_std" in wanted
    n_is = n_fake if n_is is None or not want_is else n_is
    n_all = max(n_fake, n_is)
    if len(fake) < n_all:
        raise ValueError(f"need {n_all} generated images, got {len(fake)}")
    need_real = any(m.startswith(("fid", "kid")) for m in wanted)
    feats_all, logits_all = extractor.extract(fake[:n_all], batch_size)
    feats_f, logits_f = feats_all[:n_fake], logits_all[:n_is]
    if need_real and real_feats is None:
        real_feats, _ = extractor.extract(take_images(real, n_real), batch_size)
    out: dict[str, float] = {}
    if f"fid{s}" in wanted:
        assert real_feats is not None
        out[f"fid{s}"] = frechet_distance(*statistics(feats_f), *statistics(real_feats))
    if f"kid{s}" in wanted or f"kid{s}_std" in wanted:
        assert real_feats is not None
        size = min(kid_subset_size, len(feats_f), len(real_feats))
        mean, std = kernel_inception_distance(feats_f, real_feats, kid_subsets, size)
        out.update({k: v for k, v in ((f"kid{s}", mean), (f"kid{s}_std", std)) if k in wanted})
    if want_is:
        mean, std = inception_score(softmax(logits_f), min(is_splits, len(logits_f)))
        out.update({k: v for k, v in ((f"is{s}", mean), (f"is{s}_std", std)) if k in wanted})
    return out


def make_image_evaluator(
    cfg: TrainConfig, source: Any, wanted: Sequence[str]
) -> Callable[[torch.Tensor], dict[str, float]]:
    """The loop's image evaluator: generated samples -> the ``wanted`` metrics.

    Extractors are built now, so missing Inception weights fail the trial before
    training; the real features are computed once, on the first evaluation, from
    a seeded subset of ``getattr(cfg, "eval_real_samples", cfg.eval_samples)``
    real images (capped at the dataset size) and reused for every evaluation.
    Config fields read when present: ``inception_weights`` (path),
    ``stats_cache_dir`` (where real statistics are cached across trials). FID/KID use the first
    ``eval_samples`` generated images, the IS the first ``is_samples`` (0 = ``eval_samples``) in
    ``is_splits`` splits: ``trainers.metrics.evaluation_facts`` states the same numbers.
    """
    from trainers.metrics import features

    shape = getattr(source, "sample_shape", None)
    if shape is not None and len(shape) != 3:
        raise ConfigError(
            f"`metrics` {', '.join(wanted)} need image data, but dataset {cfg.dataset!r} has samples "
            f"of shape {tuple(shape)}; use mode metrics for 2D toys"
        )
    small_names = metric_names(features.SmallFeatureExtractor)
    groups: list[tuple[FeatureExtractor, list[str]]] = []
    small_wanted = [m for m in wanted if m in small_names]
    big_wanted = [m for m in wanted if m not in small_names]
    device = torch.device(cfg.device)
    if small_wanted:
        groups.append((features.small().to(device), small_wanted))
    if big_wanted:
        groups.append((features.inception(getattr(cfg, "inception_weights", None)).to(device), big_wanted))
    cache_dir = getattr(cfg, "stats_cache_dir", None)
    check_cache_dir(cache_dir)
    n_real_wanted = int(getattr(cfg, "eval_real_samples", None) or cfg.eval_samples)
    real_cache: dict[str, np.ndarray] = {}
    if getattr(source, "dataset", None) is not None:  # before training, not at the first evaluation
        check_real_count(wanted, min(n_real_wanted, len(source.dataset)), cfg.dataset)

    def real_data() -> Any:
        dataset = getattr(source, "dataset", None)
        if dataset is not None:
            return dataset
        # procedural: a fixed-seed draw, without touching the loop's data RNG
        return source.sample(n_real_wanted, torch.Generator().manual_seed(REAL_SUBSET_SEED))

    def evaluate(samples: torch.Tensor) -> dict[str, float]:
        out: dict[str, float] = {}
        for extractor, names in groups:
            feats = None
            if any(m.startswith(("fid", "kid")) for m in names):
                if extractor.identity not in real_cache:
                    data = real_data()
                    n_real = min(n_real_wanted, len(data))
                    real_cache[extractor.identity] = real_features(
                        data,
                        extractor,
                        n_real,
                        cache_dir,
                        dataset_name=cfg.dataset,
                        source=str(cfg.data_root or f"{cfg.resolution}px-{cfg.channels}ch"),
                    )["features"]
                feats = real_cache[extractor.identity]
            out.update(
                evaluate_images(
                    samples, None, extractor, names, cfg.eval_samples, 0, real_feats=feats,
                    is_splits=cfg.is_splits, n_is=cfg.is_samples or cfg.eval_samples,
                )
            )  # fmt: skip
        return out

    return evaluate
