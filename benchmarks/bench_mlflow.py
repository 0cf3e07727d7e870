"""What MLflow logging costs the sweep driver per trial: the generator model and the sample grids.

Why: the recorder logs each completed trial's final generator as an MLflow PyTorch model and each
evaluation's sample grid as a step of an image series, in the driver, through the tracker's queue
(delivered at once while the store is healthy, so the driver waits for it). Per trial vs only the
best trial per normalizer was decided on these numbers. The generator is the demo preset's, from a
real trainer checkpoint; the store is a fresh SQLite one.

Run: ``python -m benchmarks.bench_mlflow``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def demo_train() -> dict[str, Any]:
    """The demo preset's training config, trained 2 iterations: the generator is the demo's."""
    from sweeper.spec import load

    short = {"iterations": 2, "eval_every": 2, "eval_samples": 64, "metrics": ["mode_coverage"], "diagnostics": False}
    return {**load("demo").train, **short}


def _checkpoint(directory: Path) -> Path:
    from sweeper.run.reporting import save_preview
    from trainers.config import TrainConfig
    from trainers.loop import Trainer

    trainer = Trainer(TrainConfig.from_dict(demo_train()))
    trainer.run()
    trainer.save(directory)
    save_preview(trainer.generate(trainer.eval_z)[:64], directory / "samples.png")
    return directory


def run(repeats: int = 12) -> dict[str, Any]:
    import torch

    from sweeper.run.generator_model import readable_grid, save_generator, snapshot
    from sweeper.run.tracking import Tracker

    torch.set_num_threads(1)  # the driver shares the cores with the trials
    with tempfile.TemporaryDirectory(prefix="snsweep-bench-mlflow-") as tmp:
        root = Path(tmp)
        ckpt = _checkpoint(root / "ckpt")
        png = (ckpt / "samples.png").read_bytes()
        tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "bench", root / "artifacts")
        parent = tracker.start_run("bench", {}, {})
        build_s, upload_s, snapshot_s, image_s, artifact_s = [], [], [], [], []
        for i in range(repeats + 1):  # the first round is torch.export's (and MLflow's) warm-up
            run = tracker.start_run(f"trial {i}", {}, {"normalizer": "sn"}, parent=parent)
            t = time.perf_counter()
            snap = snapshot(ckpt, None)  # on the Tune loop's thread
            t1 = time.perf_counter()
            saved = save_generator(snap, root / f"model-{i}")  # on the model thread (ModelWorker)
            t2 = time.perf_counter()
            tracker.log_model(run, "generator", saved, step=2)  # queued calls, delivered at once
            t3 = time.perf_counter()
            tracker.log_image(run, readable_grid(png), "samples", step=2)
            t4 = time.perf_counter()
            tracker.log_artifact(run, ckpt / "samples.png", "samples")  # what was logged before
            t5 = time.perf_counter()
            tracker.end_run(run)
            snapshot_s.append(t1 - t)
            build_s.append(t2 - t1)
            upload_s.append(t3 - t2)
            image_s.append(t4 - t3)
            artifact_s.append(t5 - t4)
        assert tracker.drain(timeout_s=60) and tracker.failures == 0, tracker.last_error
        models = list((root / "artifacts").rglob("MLmodel"))
        size_mb = statistics.median(sum(f.stat().st_size for f in m.parent.rglob("*") if f.is_file())
                                    for m in models) / 2**20  # fmt: skip
        params = sum(v.numel() for v in snap.state.values() if hasattr(v, "numel"))
    return {
        "repeats": repeats,
        "generator_parameters": params,
        "first_model_s": build_s[0] + upload_s[0] + snapshot_s[0],
        "snapshot_s": statistics.median(snapshot_s[1:]),
        "build_s": statistics.median(build_s[1:]),
        "upload_s": statistics.median(upload_s[1:]),
        "image_series_s": statistics.median(image_s[1:]),
        "old_artifact_s": statistics.median(artifact_s[1:]),
        "model_mb": size_mb,
        "grid_px": readable_grid(png).size[0],
    }


def render(r: dict[str, Any]) -> str:
    model = r["snapshot_s"] + r["build_s"] + r["upload_s"]
    return "\n".join([
        f"Demo generator ({r['generator_parameters']:,} parameters) from a trainer checkpoint into a fresh SQLite "
        f"store, one thread, medians of {r['repeats']} trials after a warm-up trial:",
        "",
        "| per completed trial | where | seconds |",
        "|---|---|---|",
        f"| read the generator from the final checkpoint | Tune loop | {r['snapshot_s']:.3f} |",
        f"| rebuild it and save it as an MLflow model (pt2 export) | model thread | {r['build_s']:.2f} |",
        f"| log it (create, link to the run, upload, finalize) | model thread, queued | {r['upload_s']:.3f} |",
        f"| **the generator, in all** | | **{model:.2f}** |",
        f"| the first trial of a sweep (torch.export and MLflow warm-up) | model thread | {r['first_model_s']:.1f} |",
        f"| one sample grid as an image-series step ({r['grid_px']} px + MLflow's thumbnail) | Tune loop | "
        f"{r['image_series_s']:.3f} |",
        f"| (before: the same grid as a plain artifact) | Tune loop | {r['old_artifact_s']:.3f} |",
        "",
        f"Model size {r['model_mb']:.2f} MB. The Tune loop only reads the checkpoint; the export runs on the "
        f"recorder's model thread, so a pack whose members complete together does not stall the sweep, and "
        f"the CPU it takes ({model:.2f} s per trial, {model / 10:.0%} of a demo trial's 10 s of training, "
        "section 1) is small: every completed trial gets its generator, not only the best per normalizer.",
    ])


if __name__ == "__main__":
    print(render(run()))
