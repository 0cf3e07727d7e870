"""How fast a sweep with bad inputs is refused, end to end and inside the preflight.

Why: issue 15's user pointed a sweep at ``data_root: /nonexistent``; ``sweeper run`` started Ray
and ran all 8 trials to failure (66 s) before anything said why. The target is one error line in
under 5 s including Python start-up. End to end, each case is a fresh ``python -m sweeper.cli``
process (medians of interleaved repeats); next to it, ``import torch`` alone, which the spec stage
still pays through ``trainers.normalizers`` (every other catalogue the preflight reads imports
without torch). In process, ``preflight.problems`` on sweeps that stress it: a grid over 1,000
configurations and 4 data roots, an ``int`` range of 4,089 resolutions x 3 models, a folder of
20,000 images (the walk stops at the first two), a 92 MB weights file (hashed once per path).
``runtime_abort_s``: the same bad spec let through with ``--no-data``, so the first trial's
ConfigError stops the sweep (Ray start included).

Run: ``python -m benchmarks.bench_preflight``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ISSUE_SPEC = (
    "name: bad\ntrain: {dataset: folder, data_root: /nonexistent, metrics: [fid_small]}\n"
    "objective: {metric: fid_small}\nspace: {normalizer: {choice: [sn, bsn]}, scale: {loguniform: [0.5, 2.0]}}\n"
)
WEIGHTS_BYTES = 92 * 2**20
"""About the size of pt_inception-2015-12-05-6726825d.pth."""


def _env(tmp: Path) -> dict[str, str]:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    (tmp / "t").mkdir(exist_ok=True)
    return {**os.environ, "HOME": str(home), "TMPDIR": str(tmp / "t"), "PYTHONPATH": str(REPO),
            "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], expect: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    if proc.returncode != expect:
        raise RuntimeError(f"{' '.join(cmd[-3:])}: exit {proc.returncode}, expected {expect}: {proc.stderr[-500:]}")
    return took


def _bad_inputs() -> Any:
    """The tests' corpus of broken inputs (tests/bad_inputs.py) builds the cases here too."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    import bad_inputs

    return bad_inputs


def _cases(tmp: Path) -> dict[str, Path]:
    """Spec files: the issue's example and three other kinds of bad input."""
    BY_NAME, spec = _bad_inputs().BY_NAME, _bad_inputs().spec  # noqa: N806

    out = {"issue example (data_root /nonexistent)": tmp / "issue.yaml"}
    out["issue example (data_root /nonexistent)"].write_text(ISSUE_SPEC)
    weights = tmp / "w" / "other.pth"
    weights.parent.mkdir()
    with open(weights, "wb") as f:
        f.write(os.urandom(WEIGHTS_BYTES))
    wrong_weights = {"metrics": ["fid_small", "fid"], "inception_weights": str(weights)}
    for label, name, extra in (
        ("CIFAR-10 missing a train batch", "cifar_missing_split", {}),
        ("92 MB weights with the wrong hash", None, wrong_weights),
        ("a searched resolution sngan_cnn cannot take", "resolution_some_searched_values", {}),
    ):  # fmt: skip
        d = tmp / (name or "weights")
        d.mkdir()
        train, space = BY_NAME[name].build(d) if name else ({}, {})
        path = d / "s.yaml"
        path.write_text(yaml.safe_dump(spec(d, {**train, **extra}, space)))
        out[label] = path
    return out


def _in_process(tmp: Path) -> dict[str, float]:
    """Seconds of ``preflight.problems`` alone, on sweeps built to stress it."""
    from sweeper.spec import from_data
    from sweeper.spec.preflight import problems

    good_folder, png, spec = _bad_inputs().good_folder, _bad_inputs().png, _bad_inputs().spec
    roots = [str(good_folder(tmp / f"root{i}")) for i in range(4)]
    big = tmp / "big"
    png(big / "000000.png")
    png(big / "000001.png")
    for i in range(2, 20_000):
        (big / f"{i:06d}.jpg").touch()
    specs = {
        "grid: 1,000 configurations over 4 data roots": {
            **spec(tmp, {}, {"data_root": {"grid": roots}, "scale": {"grid": [0.5 + i / 50 for i in range(50)]},
                             "normalizer": {"grid": ["sn", "bsn", "none", "lecun", "snconv"]}}),
            "search": {"sampler": "grid"},
        },
        "int range: 4,089 resolutions x 3 models": spec(
            tmp, {"dataset": "blobs"}, {"resolution": {"int": [8, 4096]},
                                        "model": {"choice": ["sngan_cnn", "sngan_resnet", "mlp"]}}),
        "folder of 20,000 images": spec(tmp, {"data_root": str(big)}),
        "issue example": yaml.safe_load(ISSUE_SPEC),
    }  # fmt: skip
    out = {}
    for label, data in specs.items():
        s = from_data(data, "bench")
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            problems(s, "bench")
            times.append(time.perf_counter() - t0)
        out[label] = statistics.median(times)
    return out


def run(repeats: int = 5, runtime_abort: bool = True) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="sns-bench-pf-", dir="/tmp"))
    try:
        env = _env(tmp)
        cases = _cases(tmp)
        cli = [sys.executable, "-m", "sweeper.cli"]
        torch_s, validate_s = [], []
        run_s: dict[str, list[float]] = {label: [] for label in cases}
        issue = next(iter(cases.values()))
        for _ in range(repeats):  # interleaved, so drift of the shared machine hits every row alike
            torch_s.append(_timed([sys.executable, "-c", "import torch"], tmp, env, 0))
            validate_s.append(_timed([*cli, "validate", str(issue)], tmp, env, 2))
            for label, path in cases.items():
                run_s[label].append(_timed([*cli, "run", str(path)], tmp, env, 2))
        nothing_written = not (tmp / "results").exists() and not (tmp / "mlflow.db").exists()
        abort_s = None
        if runtime_abort:
            abort_s = _timed([*cli, "run", str(issue), "--no-data", "--num-cpus", "2"], tmp, env, 2)
            shutil.rmtree(tmp / "results", ignore_errors=True)
        return {
            "repeats": repeats,
            "import_torch_s": statistics.median(torch_s),
            "validate_issue_example_s": statistics.median(validate_s),
            "run_refused_s": {k: statistics.median(v) for k, v in run_s.items()},
            "nothing_written": nothing_written,
            "preflight_only_s": _in_process(tmp),
            "runtime_abort_s": abort_s,
            "load_average": os.getloadavg()[0],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def render(r: dict[str, Any]) -> str:
    lines = [
        f"Fresh `python -m sweeper.cli` processes, medians of {r['repeats']} interleaved repeats (load average "
        f"{r['load_average']:.1f} at the end). Target: one error line in < 5 s. Before issue 15 the example ran "
        "all 8 trials to failure: 66 s in the issue, 56 s here.",
        "",
        "| bad input | `sweeper run` refused in (s) |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.2f} |" for k, v in r["run_refused_s"].items()]
    lines += [
        "",
        f"`sweeper validate` on the example: {r['validate_issue_example_s']:.2f} s; `import torch` alone: "
        f"{r['import_torch_s']:.2f} s, which refusing no longer waits for (the checks and catalogues are torch-free); "
        f"nothing written, no Ray started: {r['nothing_written']}.",
        "",
        "| `preflight.problems` alone on | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in r["preflight_only_s"].items()]
    if r["runtime_abort_s"] is not None:
        lines += ["", f"Let through with `--no-data`, the first trial's ConfigError aborts the sweep in "
                      f"{r['runtime_abort_s']:.1f} s end to end (Ray start included) instead of running every trial."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(run()))
