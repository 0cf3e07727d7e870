"""The kill matrix: SIGKILL a real `sweeper run` at chosen points, resume, and measure the record.

Used by ``tests/test_kill_matrix.py`` (one test per point) and runnable alone to print the
matrix's table (point, trials recorded, duplicates, RUNNING runs, leftover processes)::

    PYTHONPATH=. .venv/bin/python tests/kill_matrix.py [--chains] [POINT ...]

Each scenario runs in its own temp dir with a private HOME and TMPDIR (every Ray process of the
scenario mentions that TMPDIR in its command line, which is how leftovers are counted), kills
only the driver's PID (not its process group: a dead laptop lid or a killed SSH session does not
politely stop Ray either), then runs `sweeper resume` until it ends.

Where a point is too short to hit from outside (the banner, Tuner creation, the report), the
driver is also given ``SNSWEEP_TEST_KILL_AT=<point>``, with which it SIGKILLs itself exactly
there (``sweeper.run.faults``); the outside trigger stays as a fallback for code without it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from proc_utils import processes_mentioning  # noqa: E402

NAME = "kill"
# The demo's question (normalizer x scale) on the 2D ring with the MLP: a trial costs a fraction
# of a second, so a scenario costs what the driver's start-up and the kills cost.
TRAIN = {"dataset": "ring", "model": "mlp", "latent_dim": 2, "batch_size": 32, "iterations": 30, "eval_every": 10,
         "eval_samples": 256, "metrics": ["mode_coverage", "hq_fraction"]}  # fmt: skip
SPEC = {
    "name": NAME,
    "train": TRAIN,
    "space": {"normalizer": {"choice": ["none", "sn", "bsn"]}, "scale": {"loguniform": [0.5, 3.0]}},
    "seeds": [0, 1],
    "search": {"sampler": "tpe", "seed": 1, "trials": 4},
    "resources": {"max_concurrent": 2},
}
N_TRIALS = 8  # 4 configurations x 2 seeds
HOOKS = (REPO / "sweeper" / "run" / "faults.py").is_file()
"""Code with crash points (``sweeper.run.faults``); older code is killed from outside instead."""
TERMINAL = {"completed", "diverged", "stopped_early", "failed"}


@dataclass
class Kill:
    """When to SIGKILL one invocation: ``hook`` is the in-process point, ``when`` the outside trigger."""

    hook: str | None
    when: Callable[[Scenario, str], bool]
    describe: str


@dataclass
class Scenario:
    work: Path
    tmp: Path
    env: dict[str, str]
    log: list[str] = field(default_factory=list)

    @property
    def sweep(self) -> Path:
        return self.work / "results" / NAME

    def rows(self) -> int:
        return len([p for p in (self.sweep / "trials").glob("*.parquet") if not p.name.startswith(".")])


def new_scenario() -> Scenario:
    work = Path(tempfile.mkdtemp(prefix="killm-"))
    tmp = Path(tempfile.mkdtemp(prefix="km-", dir="/tmp"))  # short: Ray's socket paths
    (work / "home").mkdir()
    (work / f"{NAME}.yaml").write_text(yaml.safe_dump(SPEC))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SNSWEEP_"))}
    env.update(
        HOME=str(work / "home"), TMPDIR=str(tmp), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
        RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true",
    )  # fmt: skip
    return Scenario(work, tmp, env)


def scenario_processes(s: Scenario) -> list:
    """Live processes of this scenario: what names its folders, has its TMPDIR in its environment,
    runs in its folders or holds a file open under its TMPDIR (Ray retitles its agents and workers
    ``ray::...`` and clears the agents' environment; orphaned, they still run in the driver's
    folder with their session's log files open)."""
    import psutil

    found = {p.pid: p for p in processes_mentioning(str(s.work))}
    marker = f"TMPDIR={s.tmp}"
    for p in psutil.process_iter(["pid"]):
        if p.pid == os.getpid() or p.pid in found:
            continue
        try:
            if (
                marker in "\0".join(f"{k}={v}" for k, v in p.environ().items())
                or _under(p.cwd(), s.work, s.tmp)
                or any(_under(f.path, s.tmp) for f in p.open_files())
            ):
                found[p.pid] = p
        except (psutil.Error, OSError):
            continue
    alive = []
    for p in found.values():
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.Error:
            continue
    return alive


def _under(path: str, *folders: Path) -> bool:
    return any(path == str(f) or path.startswith(f"{f}/") for f in folders)


def ours(s: Scenario) -> list[str]:
    """Live processes of this scenario, as 'name(pid)'."""
    out = []
    for p in scenario_processes(s):
        try:
            out.append(f"{' '.join(p.cmdline()[:1]) or p.name()}({p.pid})")
        except Exception:  # noqa: BLE001 - it ended while we looked
            continue
    return sorted(out)


def invoke(s: Scenario, args: list[str], kill: Kill | None, timeout_s: float = 400) -> tuple[int, str, float]:
    """Run ``sweeper ARGS``; with ``kill``, SIGKILL the driver's PID when the trigger fires.

    Returns (exit code, output, seconds)."""
    env = dict(s.env)
    outside = kill.when if kill is not None else None
    if kill is not None and kill.hook and HOOKS:
        env["SNSWEEP_TEST_KILL_AT"] = kill.hook  # the driver kills itself exactly there
        outside = None
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeper.cli", *args], cwd=s.work, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = t0 + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if outside is not None and outside(s, "".join(lines)):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    if proc.poll() is None and time.monotonic() >= deadline:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    out = "".join(lines)
    s.log.append(f"$ sweeper {' '.join(args)}  -> {proc.returncode}\n{out}")
    return proc.returncode, out, time.monotonic() - t0


def leftovers_after_kill(s: Scenario, wait_s: float = 10.0) -> list[str]:
    """What of the killed driver is still alive ``wait_s`` after the kill (the issue looked at 10 s)."""
    deadline = time.monotonic() + wait_s
    left = ours(s)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = ours(s)
    return left


# --- triggers -------------------------------------------------------------------------------------
def _ray_starting(s: Scenario, out: str) -> bool:
    # Ray's daemons name their session folder (under the scenario's TMPDIR) on their command line
    daemons = [p.cmdline()[:1] for p in processes_mentioning(str(s.tmp))]
    return any("raylet" in a or "gcs_server" in a for first in daemons for a in first)


def _banner(s: Scenario, out: str) -> bool:
    return f"sweep {NAME}: " in out


def _tuner_made(s: Scenario, out: str) -> bool:
    return (s.sweep / "tune" / "tuner.pkl").exists() and "> trial" not in out


def _first_trial(s: Scenario, out: str) -> bool:
    return "> trial 1 [" in out


def _rows(k: int) -> Callable[[Scenario, str], bool]:
    return lambda s, out: s.rows() >= k


def _all_recorded(s: Scenario, out: str) -> bool:
    return f"done {N_TRIALS}/{N_TRIALS}" in out


def _randoms(seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    return rng.randint(1, 3), rng.randint(4, N_TRIALS - 1)


def points(seed: int = 19) -> dict[str, list[Kill]]:
    """The matrix, one scenario per point: the kills of successive invocations (the run, then
    resumes), then a final resume that must finish the sweep."""
    a, b = _randoms(seed)
    k1, k2 = _randoms(seed + 1)
    return {
        "ray_start": [RAY_START],
        "banner": [BANNER],
        "tuner": [TUNER],
        "first_trial": [FIRST_TRIAL],
        "mid_a": [mid(a)],
        "mid_b": [mid(b)],
        "report": [REPORT],
        "resume": [mid(k1), mid(k2, "then resume mid-trials")],
    }


def chains(seed: int = 19) -> dict[str, list[Kill]]:
    """The same points in two chains, each kill landing on the session that resumed the one
    before: every point is still a SIGKILL followed by a resume, and the state each one leaves
    builds on the last (what CI runs: a third of the matrix's time)."""
    a, b = _randoms(seed)
    return {
        "early": [RAY_START, BANNER, TUNER, FIRST_TRIAL],
        "late": [mid(a), mid(b, "resume mid-trials"), REPORT],
    }


RAY_START = Kill(None, _ray_starting, "during Ray start")
BANNER = Kill("banner", _banner, "right after the banner")
TUNER = Kill("tuner", _tuner_made, "between Tuner creation and the first trial")
FIRST_TRIAL = Kill(None, _first_trial, "at the first trial start")
REPORT = Kill("report", _all_recorded, "during the report")


def mid(k: int, what: str = "mid-trials") -> Kill:
    return Kill(None, _rows(k), f"{what}, after {k} recorded")


# --- the record -----------------------------------------------------------------------------------
@dataclass
class Outcome:
    point: str
    killed: list[int]
    resume_rc: int
    recorded: int
    completed_rows: int
    duplicates: int
    running_runs: int
    finished_runs_off: int
    """Trials without exactly one FINISHED MLflow run."""
    leftover_after_kill: list[str]
    leftover_at_end: list[str]
    status_line: str
    seconds: float
    duplicates_between: int = 0
    """The most duplicates seen after any kill (before the final resume)."""
    study_running: int = -1
    """Optuna trials left RUNNING in the sweep's study (-1: no study found)."""
    study_configurations_off: int = -1
    """Configurations of the Parquet rows without exactly one COMPLETE Optuna trial."""

    def row(self) -> str:
        left = len(self.leftover_after_kill)
        names = sorted({n.split("(")[0] for n in self.leftover_after_kill})
        shown = f"{left} ({', '.join(names)})" if left else "0"
        status = self.status_line.split(";")[0]
        return (
            f"| {self.point} | {self.recorded}/{N_TRIALS} | {self.duplicates} | {self.running_runs} | "
            f"{shown} | {len(self.leftover_at_end)} | {self.resume_rc} | {status} |"
        )


def measure(s: Scenario, mlflow: bool = True) -> tuple[int, int, int, int, int]:
    """(trials recorded, completed rows, duplicates, RUNNING runs, trials without one FINISHED run).

    An MLflow store that cannot be opened counts as -1 RUNNING runs (a broken store)."""
    import pandas as pd

    trials = s.sweep / "trials"
    files = [p for p in trials.glob("*.parquet") if not p.name.startswith(".")] if trials.is_dir() else []
    df = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()
    recorded = completed = duplicates = 0
    if not df.empty:
        latest = df.sort_values("attempt").groupby("trial_id").tail(1)
        recorded = int(latest["status"].isin(TERMINAL).sum())
        completed = int((df["status"] == "completed").sum())
        # a trial recorded twice, or one (configuration, seed) recorded under two trial ids
        terminal = df[df["status"].isin(TERMINAL)]
        per_trial = int(len(terminal) - terminal["trial_id"].nunique())
        cfg = terminal.assign(key=terminal["config_json"]).drop_duplicates("trial_id")
        per_config = int(len(cfg) - cfg["key"].nunique())
        duplicates = per_trial + per_config + max(0, recorded - N_TRIALS)
    running = off = 0
    db = s.work / "mlflow.db"
    if db.exists() and mlflow:
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient(f"sqlite:///{db}")
            exp = client.get_experiment_by_name(NAME)
            runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
        except Exception:  # noqa: BLE001 - a half-migrated store (what old code left after a kill)
            return recorded, completed, duplicates, -1, -1
        running = sum(r.info.status == "RUNNING" for r in runs)
        finished: dict[str, int] = {}
        for r in runs:
            if r.data.tags.get("snsweep.role") == "trial" and r.info.status == "FINISHED":
                finished[r.data.tags.get("trial_id", "")] = finished.get(r.data.tags.get("trial_id", ""), 0) + 1
        ids = set(df["trial_id"]) if not df.empty else set()
        off = sum(finished.get(t, 0) != 1 for t in ids) + sum(1 for t in finished if t not in ids)
    return recorded, completed, duplicates, running, off


def measure_study(s: Scenario) -> tuple[int, int]:
    """(Optuna trials left RUNNING, configurations without exactly one COMPLETE trial) of the sweep's study."""
    from collections import Counter

    import optuna
    import pandas as pd

    db = s.work / "optuna.db"
    if not db.exists():
        return -1, -1
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{db}")
    running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    complete = Counter((t.params["normalizer"], float(t.params["scale"])) for t in done)
    files = [p for p in (s.sweep / "trials").glob("*.parquet") if not p.name.startswith(".")]
    rows = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame(columns=["normalizer", "scale"])
    configurations = set(zip(rows["normalizer"], rows["scale"].astype(float), strict=True))
    off = sum(complete[c] != 1 for c in configurations) + sum(n for c, n in complete.items() if c not in configurations)
    return running, off


def run_point(point: str, kills: list[Kill]) -> tuple[Outcome, Scenario]:
    s = new_scenario()
    t0 = time.monotonic()
    killed, left_after = [], []
    rc = None
    try:
        args = ["run", f"{NAME}.yaml", "--num-cpus", "2"]
        between = 0
        for kill in kills:
            code, _, _ = invoke(s, args, kill)
            killed.append(code)
            left_after += leftovers_after_kill(s)
            between = max(between, measure(s, mlflow=False)[2])
            args = ["resume", NAME]
        rc, _, _ = invoke(s, ["resume", NAME], None)
        _, status, _ = invoke(s, ["status", NAME], None, timeout_s=120)
        status_line = status.strip().splitlines()[-1] if status.strip() else ""
        left_end = ours(s)
        recorded, completed, dups, running, off = measure(s)
        study_running, study_off = measure_study(s)
        return (
            Outcome(point, killed, rc, recorded, completed, dups, running, off, left_after, left_end,
                    status_line, time.monotonic() - t0, between, study_running, study_off),  # fmt: skip
            s,
        )
    finally:
        cleanup(s)


def cleanup(s: Scenario) -> None:
    """Stop whatever of this scenario is still alive, by PID (never by name), and remove its dirs."""
    import psutil

    procs = scenario_processes(s)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    shutil.rmtree(s.tmp, ignore_errors=True)
    if not os.environ.get("KILL_MATRIX_KEEP"):
        shutil.rmtree(s.work, ignore_errors=True)


HEADER = (
    "| point | trials recorded | duplicates | RUNNING runs | leftover processes 10 s after the kill "
    "| leftover at end | resume exit | `sweeper status` |\n|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str]) -> int:
    """``[--chains] [NAME ...]``: the matrix's points (default) or CI's two chains."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    chosen = chains() if "--chains" in argv else points()
    names = [a for a in argv if not a.startswith("--")] or list(chosen)
    print(HEADER, flush=True)
    results = []
    for name in names:
        outcome, _ = run_point(name, chosen[name])
        results.append(asdict(outcome))
        print(outcome.row(), f"<!-- {outcome.seconds:.0f} s, kills exited {outcome.killed} -->", flush=True)
    out = os.environ.get("KILL_MATRIX_JSON")
    if out:
        Path(out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
