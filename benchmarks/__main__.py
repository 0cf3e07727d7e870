"""Run every benchmark on this machine and write BENCHMARKS.md.

    python -m benchmarks [--quick] [--out BENCHMARKS.md]

Each section measures its ratios side by side in one run (interleaved repeats, medians); timings
on a shared machine are noisy, so read the ratios, not the absolute seconds.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} cores ({cpu}){mem}, {gpu}; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {platform.system()} {platform.release()}"
    )


def _section(title: str, module: str, call: str, kwargs: dict[str, Any], render) -> str:  # noqa: ANN001
    print(f"== {title} ...", flush=True)
    t0 = time.perf_counter()
    try:
        result = getattr(importlib.import_module(module), call)(**kwargs)
        body = render(result)
    except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
        body = "failed:\n\n```\n" + traceback.format_exc()[-2000:] + "```"
    took = time.perf_counter() - t0
    print(body, flush=True)
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    return f"## {title}\n\n{body}\n\n*(measured {when}, took {took:.0f} s; `python -m {module}` reruns it alone)*\n"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller problems")
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    p.add_argument("--only", nargs="+", metavar="N", help="rerun these sections (by number: 4 4b 5), keep the rest")
    p.add_argument("--search-reuse", type=Path, metavar="DIR", help="section 4 replays on an earlier run's sweeps")
    a = p.parse_args()
    q = a.quick
    specs = [
        (
            "1. Sweep efficiency (service overhead)", "benchmarks.bench_sweep", "sweep_overhead",
            {"sizes": ((4, 80), (4, 240)) if q else ((8, 240), (8, 1200))}, _render_sweep,
        ),
        (
            "2. Normalizer cost per discriminator update (SNGAN CIFAR D, batch 64)", "benchmarks.bench_normalizers",
            "run", {"repeats": 3 if q else 10, "threads": 1}, _render_normalizers,
        ),
        (
            "3. Evaluation cost at the demo cadence", "benchmarks.bench_sweep", "evaluation_cost",
            {"repeats": 1 if q else 3},
            lambda r: (
                f"evaluation every {r['eval_every']} of {r['iterations']} iterations: "
                f"**{r['eval_fraction']:.1%}** of training time; diagnostics **{r['diagnostics_fraction']:.1%}**"
            ),
        ),
        (
            "4. Search efficiency: TPE + ASHA vs the full grid", "benchmarks.bench_search", "run",
            {"replays": 5 if q else 30, "reuse": a.search_reuse}, _render_search,
        ),
        ("4b. The demo: wall time and the distribution of its metric", "benchmarks.bench_demo", "run", {},
         _render_demo),
        (
            "5. Packed training throughput (K=16 vs 16 sequential trials)", "benchmarks.bench_packed", "run",
            {"steps": 5, "repeats": 1} if q else {}, _render_packed,
        ),
        ("5b. Commands that do not train: wall time", "benchmarks.bench_cli", "run",
         {"repeats": 2 if q else 5}, _render_cli),
        ("6. Report over 10k trials and 5M curve rows", "benchmarks.bench_report", "run", {}, _render_dict),
        (
            "7. Refusing bad inputs before anything starts (preflight)", "benchmarks.bench_preflight", "run",
            {"repeats": 2, "runtime_abort": False} if q else {}, _render_preflight,
        ),
        (
            "8. MLflow logging per trial: the generator model and the sample grids", "benchmarks.bench_mlflow",
            "run", {"repeats": 4 if q else 12}, _render_mlflow,
        ),
    ]
    numbers = [spec[0].split(".")[0] for spec in specs]
    unknown = sorted(set(a.only or ()) - set(numbers))
    if unknown:
        p.error(f"--only: no section {', '.join(unknown)}; the sections are {' '.join(numbers)}")
    previous = _split(a.out.read_text()) if a.only and a.out.exists() else {}
    sections = [
        _section(*spec) if not a.only or number in a.only or spec[0] not in previous else previous[spec[0]]
        for number, spec in zip(numbers, specs, strict=True)
    ]
    header = (
        "# Benchmarks\n\n"
        f"Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on: {_machine()}. Each section says when it was "
        "measured (`--only N` reruns some and keeps the others).\n\n"
        f"Regenerate with `python -m benchmarks` (`make bench`){' --quick' if q else ''}. Ratios are measured "
        "side by side in one run; the machine is shared, so absolute times vary between runs.\n\n"
    )
    a.out.write_text(header + "\n".join(sections))
    print(f"wrote {a.out}")


def _render_mlflow(r: dict[str, Any]) -> str:
    from benchmarks.bench_mlflow import render

    return render(r)


def _split(text: str) -> dict[str, str]:
    """Sections of an existing BENCHMARKS.md by title, to keep those not rerun."""
    out = {}
    for chunk in text.split("\n## ")[1:]:
        title = chunk.split("\n", 1)[0]
        out[title] = "## " + chunk.rstrip("\n") + "\n"
    return out


def _render_sweep(r: dict[str, Any]) -> str:
    lines = [
        "Each row: N trials of the demo's CNN (blobs 16 px, width 1/4) at concurrency = cores, real Ray, "
        "Optuna, MLflow (SQLite) and Parquet, the report included, each sweep starting its own Ray; bare = "
        "the same N trainings by hand, `cores` processes at a time, each timed alone; ideal = sum(bare) / "
        "cores. Order: sweep, bare, sweep again (sweep = the mean of the two, cancelling a linear drift of "
        "the shared machine). CPU ratio = CPU seconds of the sweep's whole process tree (driver, Ray daemons, "
        "trial workers) over the bare trainings' CPU seconds: insensitive to other jobs, blind to idle waits.",
        "",
        "| trials x iterations | bare trial (s) | ideal (s) | by hand (s) | sweeps (s) | **ratio** | "
        "trial-phase ratio | CPU ratio | Ray start (s) | MLflow set-up (s) | report + flush (s) | "
        "per-trial overhead (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        ph = x["phases_s"]
        walls = " / ".join(f"{w:.1f}" for w in x["sweep_walls_s"])
        lines.append(
            f"| {x['trials']} x {x['iterations']} | {x['bare_mean_s']:.1f} | {x['ideal_s']:.1f} | "
            f"{x['bare_pool_wall_s']:.1f} | {walls} | **{x['ratio']:.3f}** | {x['trial_phase_ratio']:.3f} | "
            f"{x['cpu_ratio']:.3f} | "
            f"{ph.get('ray_start', float('nan')):.1f} | {ph.get('tracking_setup', float('nan')):.2f} | "
            f"{ph.get('finish', float('nan')):.1f} | {x['per_trial_overhead_s']:.2f} |"
        )
    lines += [
        "",
        f"Target <= {r['target']}. With these fixed and per-trial costs, {r['rounds']:g} rounds of trials reach "
        f"{r['target']} once a trial takes **{r['breakeven_trial_s']:.0f} s** or more (the paper's trials take "
        "hours; the demo's take seconds).",
    ]
    return "\n".join(lines)


def _render_search(r: dict[str, Any]) -> str:
    live = r["live_tpe_asha"]
    q = r["grid_quantiles"]
    lines = [
        f"Grid: {r['grid_trials']} configurations, best mode_coverage **{r['grid_best']:.3f}** "
        f"({r['grid_configs_within_2pct_of_best']} configuration(s) within 2% of it; "
        f"{r['grid_share_scoring_zero']:.0%} score 0; quartiles {q['0.25']:.3f} / {q['0.5']:.3f} / {q['0.75']:.3f}).",
        "",
        f"- Live TPE+ASHA sweep: {live['trials']} trials ({live['stopped_early']} stopped early by ASHA), best "
        f"{live['best']:.3f}: **gap {live['gap']:.1%}** with **{live['compute_ratio']:.2f}x** the grid's compute.",
        f"- Replays over the grid's recorded curves, {r['replays']} sampler seeds each (the grid in its order: "
        f"one), budget {r['replay_budget']}:",
        "",
        "| strategy | median gap | seeds within 2% | median trials | stopped by ASHA | median best at "
        "0.10 / 0.20 / 0.33 / 0.50 / 1.00 of the grid's compute |",
        "|---|---|---|---|---|---|",
    ]
    for name, x in r["replayed"].items():
        curve = " / ".join(f"{v:.3f}" for v in x["median_best_vs_compute"].values())
        lines.append(
            f"| {name} | {x['median_gap']:.1%} | {x['share_within_target']:.0%} | {x['median_trials']:g} | "
            f"{x['share_stopped']:.0%} | {curve} |"
        )
    lines += ["", f"Targets: {r['targets']}."]
    if r.get("sweeps_trained_at"):
        lines += ["", f"The grid and the live sweep were trained {r['sweeps_trained_at']} (`--search-reuse`); "
                  "the replays ran now."]  # fmt: skip
    return "\n".join(lines)


def _render_demo(r: dict[str, Any]) -> str:
    q = r["quantiles"]
    lines = [
        f"`sweeper run` (the `{r['preset']}` preset, README's first command without the install) in a fresh "
        f"process and folder: **{r['wall_s']:.0f} s** wall for {r['trainings']} trainings (target <= "
        f"{r['target_s']:.0f} s on 2 cores). It printed: `{r['finished_line']}`",
        "",
        f"The objective `{r['metric']}` over the grid: {r['share_exact_zero']:.0%} exact zeros; quantiles "
        f"0 / 25 / 50 / 75 / 100%: {' / '.join(f'{v:.3f}' for v in q.values())}.",
        "",
        "| normalizer | scales | spread across scales (SD of per-scale means) | spread across seeds (pooled SD) "
        "| per-scale means from .. to |",
        "|---|---|---|---|---|",
    ]
    for norm, x in r["spread"].items():
        lines.append(
            f"| {norm} | {x['scales']} | {x['across_scales_sd']:.3f} | {x['across_seeds_sd']:.3f} | "
            f"{x['min_scale_mean']:.3f} .. {x['max_scale_mean']:.3f} |"
        )
    lines += ["", "The report's headline, verbatim:", ""] + [f"> {line}" for line in r["headline"]]
    return "\n".join(lines)


def _render_cli(r: dict[str, Any]) -> str:
    lines = [
        f"Each command in a fresh process, {r['repeats']} interleaved repeats; target < {r['target_s']} s each "
        "(Python's own start-up shown for reference). Before this change `presets`, `validate` and "
        "`normalizers` imported torch on the way and took 2.5-2.7 s each (measured 2026-12-03 on this "
        "machine under load; `--help` 0.19 s, `schema` 0.32 s, `status` 0.38 s).",
        "",
        "| command | median (s) | fastest (s) |",
        "|---|---|---|",
    ]
    for name, x in r["commands"].items():
        shown = name if name.startswith("python") else f"sweeper {name}"
        lines.append(f"| `{shown}` | {x['median_s']:.2f} | {x['min_s']:.2f} |")
    return "\n".join(lines)


def _render_packed(r: dict[str, Any]) -> str:
    from benchmarks.bench_packed import WORKLOADS

    base = r.get("baseline")
    lines = [
        f"K = {r['members']} members of one normalizer ({r.get('normalizer', 'sn')}; a pack shares it) with different "
        f"scales, lrs, betas and seeds, n_dis {r['n_dis']}, {r['threads']} thread(s) on all sides; {r['steps']} timed "
        f"iterations, medians of {r['repeats']} interleaved repeats. Target >= {r['target']}x trial-iterations/s."
        + (f" *baseline*: the PackedTrainer of `{base}` (the implementation this one replaced, kept outside the "
           "repository), timed in the same run on the same configurations." if base else ""),
        "",
        "| workload | sequential trial-it/s | packed trial-it/s | **speedup (CPU time)** | speedup (wall) |"
        " vmap on every call: speedup (CPU) |"
        + (" baseline trial-it/s | baseline speedup (CPU) | packed / baseline (CPU, median and range of the"
           " per-repeat ratios) |" if base else ""),
        "|---|---|---|---|---|---|" + ("---|---|---|" if base else ""),
    ]
    for name, x in r["workloads"].items():
        w = WORKLOADS.get(name, {})
        desc = ", ".join(f"{k} {v}" for k, v in w.items() if k in ("model", "resolution", "width", "batch_size"))
        lines.append(
            f"| {name} ({desc}) | {x['sequential_cpu_trial_it_per_s']:.1f} | {x['packed_cpu_trial_it_per_s']:.1f} | "
            f"**{x['speedup_cpu']:.2f}x** | {x['speedup_wall']:.2f}x | {x['vmap_speedup_cpu']:.2f}x |"
            + (f" {x['baseline_cpu_trial_it_per_s']:.1f} | {x['baseline_speedup_cpu']:.2f}x | "
               f"{x['packed_over_baseline_cpu']:.2f} ({x['packed_over_baseline_cpu_range'][0]:.2f}-"
               f"{x['packed_over_baseline_cpu_range'][1]:.2f}) |" if base else "")
        )  # fmt: skip
    return "\n".join(lines)


def _render_preflight(r: dict[str, Any]) -> str:
    from benchmarks.bench_preflight import render

    return render(r)


def _render_normalizers(r: dict[str, Any]) -> str:
    from benchmarks.bench_normalizers import format_table

    return format_table(r)


def _render_dict(r: Any) -> str:
    if isinstance(r, dict):
        return "\n".join(f"- {k}: {_fmt(v)}" for k, v in r.items())
    return str(r)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
