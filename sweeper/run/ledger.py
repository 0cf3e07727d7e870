"""The ledger: which trials a sweep's spec asks for, which are recorded, and what is left to run.

Resume is defined by the spec, not by whatever Tune state a dead driver happened to leave: Ray
Tune saves its experiment state at most every 10 s, so after a SIGKILL it may know fewer trials
than the Parquet files hold (a restored searcher then suggests new configurations under new trial
ids, and the sweep overruns its budget), or nothing at all (a kill before its first save). So the
driver keeps its own record and derives everything from it:

- ``started.jsonl`` (written by the recorder when a trial attempt starts): the trial id, its Tune
  config (searched values and ``__trial_index__``, the seed replicate) and its Tune trial folder,
  where its checkpoints are.
- ``trials/*.parquet``: one row per finished attempt; a trial is *recorded* when its latest
  attempt's status is terminal (completed, diverged, stopped early, failed).

A grid sweep's trials are known in advance (grid points x seeds). A sampled sweep's are the
configurations the sampler has handed out (each x seeds) plus the rest of its budget
(``search.trials``). ``Ledger.plan`` turns what is missing into the next session's work: the
unfinished trials again, under their old trial ids and from their last checkpoint, then the
configurations still to sample, with the finished ones told to Optuna first.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweeper import results
from sweeper.run.reporting import INDEX_KEY, TRIAL_ID_KEY, penalty
from sweeper.spec import SweepSpec

STARTED_FILE = "started.jsonl"
TERMINAL = frozenset(results.STATUSES)
MAX_LISTED = 10


def config_key(params: dict[str, Any]) -> str:
    """A configuration's identity: its searched values (numbers as floats, so 1 and 1.0 agree)."""

    def norm(v: Any) -> Any:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    return json.dumps({k: norm(v) for k, v in sorted(params.items()) if not k.startswith("__")}, default=str)


def tune_params(config: dict[str, Any]) -> dict[str, Any]:
    """A Tune trial's config without the per-trial keys (seed replicate, trial id)."""
    return {k: v for k, v in config.items() if k not in (INDEX_KEY, TRIAL_ID_KEY)}


def note_start(sweep_path: Path, trial_id: str, config: dict[str, Any], attempt: int, trial_path: str | None) -> None:
    """Append one started attempt to ``started.jsonl`` (one line, so a kill mid-write loses only it)."""
    line = {
        "trial_id": trial_id,
        "params": tune_params(config),
        "seed_index": int(config.get(INDEX_KEY, 0)),
        "attempt": attempt,
        "trial_path": trial_path,
        "at": datetime.now(UTC).isoformat(),
    }
    with (Path(sweep_path) / STARTED_FILE).open("a") as f:
        f.write(json.dumps(line, default=str) + "\n")


def read_starts(sweep_path: Path) -> list[dict[str, Any]]:
    path = Path(sweep_path) / STARTED_FILE
    out = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue  # the line a kill cut short
            if isinstance(item, dict) and "trial_id" in item:
                out.append(item)
    return out


@dataclass
class Entry:
    """One trial of the spec: a (configuration, seed) pair, started or not."""

    seed_index: int
    trial_id: str | None = None
    status: str | None = None
    """The latest attempt's status, None while unfinished."""
    attempt: int = 0
    trial_path: str | None = None
    objective: float | None = None
    run_id: str | None = None


@dataclass
class Configuration:
    params: dict[str, Any]
    """What Tune's config holds for it (searched values; ``__constant__`` for an empty space)."""
    entries: dict[int, Entry] = field(default_factory=dict)

    def entry(self, seed_index: int) -> Entry:
        return self.entries.setdefault(seed_index, Entry(seed_index))


@dataclass
class Slot:
    """A trial the next session must run: a Tune config, the id to record it under, a checkpoint."""

    config: dict[str, Any]
    trial_id: str | None
    checkpoint: str | None


@dataclass
class Plan:
    slots: list[Slot]
    new_configurations: int
    evaluated: list[tuple[dict[str, Any], float]]
    """Finished configurations and their mean objective, to tell a fresh Optuna study."""
    seed_offset: int
    """How many configurations exist already: a fresh sampler is seeded past them, so a seeded
    random sampler does not hand out the first configurations a second time."""
    n_seeds: int

    @property
    def total(self) -> int:
        return len(self.slots) + self.new_configurations * self.n_seeds


@dataclass
class Ledger:
    spec_trials: int
    seeds: list[int]
    grid: bool
    budget: int
    """Configurations the spec asks for (grid points, or ``search.trials``)."""
    configurations: list[Configuration]
    mode: str
    """The objective's direction (``max``/``min``): what a diverged trial tells the searcher."""
    budget_left_s: float | None = None
    """``search.time_budget_s`` minus what earlier sessions' trials used (None: no time budget)."""

    # --- what is recorded ----------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        return [e for c in self.configurations for e in c.entries.values()]

    @property
    def recorded(self) -> int:
        return sum(e.status in TERMINAL for e in self.entries())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries():
            if e.status in TERMINAL:
                out[e.status] = out.get(e.status, 0) + 1
        return out

    def _unfinished(self) -> list[tuple[Configuration, int]]:
        return [
            (c, i)
            for c in self.configurations
            for i in range(len(self.seeds))
            if c.entries.get(i) is None or c.entries[i].status not in TERMINAL
        ]

    @property
    def unsampled(self) -> int:
        return 0 if self.grid else max(0, self.budget - len(self.configurations))

    @property
    def missing(self) -> int:
        return len(self._unfinished()) + self.unsampled * len(self.seeds)

    @property
    def budget_spent(self) -> bool:
        """A time-budgeted sweep whose budget is used up ends with what it ran."""
        return self.budget_left_s is not None and self.budget_left_s <= 0

    @property
    def complete(self) -> bool:
        return self.missing == 0 or self.budget_spent

    def missing_lines(self) -> list[str]:
        """What is missing, one line per trial (the first few), for the user."""
        lines = []
        for c, i in self._unfinished():
            e = c.entries.get(i)
            shown = " ".join(f"{k}={_short(v)}" for k, v in c.params.items() if not k.startswith("__"))
            where = f"trial {e.trial_id}, started, not finished" if e and e.trial_id else "not started"
            lines.append(f"{shown or 'the configuration'} seed={self.seeds[i]} ({where})")
        extra = len(lines) - MAX_LISTED
        lines = lines[:MAX_LISTED] + ([f"... and {extra} more"] if extra > 0 else [])
        if self.unsampled:
            n = self.unsampled
            lines.append(
                f"{n} configuration{'s' if n > 1 else ''} not sampled yet ({n * len(self.seeds)} trials)"
            )
        return lines

    def summary(self) -> str:
        return f"{self.recorded}/{self.spec_trials} trials recorded"

    def attempts(self) -> dict[str, int]:
        return {e.trial_id: e.attempt for e in self.entries() if e.trial_id and e.attempt}

    def run_ids(self) -> dict[str, tuple[str, str]]:
        """MLflow run id -> (trial id, status) of every recorded trial's latest attempt."""
        return {e.run_id: (e.trial_id or "", e.status or "") for e in self.entries() if e.run_id and e.status}

    # --- what is left ------------------------------------------------------------------------------
    def plan(self) -> Plan:
        from trainers.loop import CHECKPOINT_FILE

        slots = []
        for c, i in self._unfinished():
            e = c.entries.get(i)
            config = {**c.params, INDEX_KEY: i}
            if e is not None and e.trial_id:
                config[TRIAL_ID_KEY] = e.trial_id
            slots.append(Slot(config, e.trial_id if e else None, latest_checkpoint(e, CHECKPOINT_FILE)))
        evaluated = []
        for c in self.configurations:
            done = [e for e in c.entries.values() if e.status in TERMINAL]
            if len(done) == len(self.seeds) and not self.grid:
                values = [e.objective if e.objective is not None else penalty(self.mode) for e in done]
                evaluated.append((dict(c.params), sum(values) / len(values)))
        return Plan(slots, self.unsampled, evaluated, len(self.configurations), len(self.seeds))


def latest_checkpoint(entry: Entry | None, filename: str) -> str | None:
    """The newest complete checkpoint of a trial's last attempt (Tune keeps one per trial folder)."""
    if entry is None or not entry.trial_path:
        return None
    folder = Path(entry.trial_path)
    if not folder.is_dir():
        return None
    found = sorted((d for d in folder.glob("checkpoint_*") if (d / filename).is_file()), reverse=True)
    return str(found[0]) if found else None


def read(spec: SweepSpec, sweep_path: Path, retry_failed: bool = False) -> Ledger:
    """The ledger of ``spec`` from what is on disk under ``sweep_path``.

    ``retry_failed``: failed trials count as unfinished (``sweeper resume --retry-failed``, after
    fixing what made them fail); they run again under their ids as new attempts."""
    from sweeper.spec.space import grid_points, optuna_space

    space = optuna_space(spec)
    budget_left = None
    if spec.search.time_budget_s is not None:
        used = float(results.read_sweep_meta(sweep_path).get("time_budget_used_s") or 0.0)
        budget_left = spec.search.time_budget_s - used
    ledger = Ledger(
        spec_trials=spec.n_trials, seeds=list(spec.seeds), grid=spec.is_grid, budget=spec.n_configurations,
        configurations=[], mode=spec.metric_mode, budget_left_s=budget_left,
    )  # fmt: skip
    by_key: dict[str, list[Configuration]] = {}
    if spec.is_grid:
        for pt in grid_points(spec):
            c = Configuration({k: v for k, v in pt.items() if k in space} or {"__constant__": 0})
            ledger.configurations.append(c)
            by_key.setdefault(config_key(c.params), []).append(c)
    by_trial: dict[str, Entry] = {}

    def place(trial_id: str, params: dict[str, Any], seed_index: int) -> Entry | None:
        if trial_id in by_trial:
            return by_trial[trial_id]
        if not 0 <= seed_index < len(ledger.seeds):
            return None
        same = by_key.get(config_key(params), [])
        home = next((c for c in same if seed_index not in c.entries), None)
        if home is None:
            if spec.is_grid:
                return None  # not a point of this grid: not part of the spec
            home = Configuration(dict(params))
            ledger.configurations.append(home)
            by_key.setdefault(config_key(params), []).append(home)
        entry = home.entry(seed_index)
        entry.trial_id = trial_id
        by_trial[trial_id] = entry
        return entry

    for start in read_starts(sweep_path):
        entry = place(str(start["trial_id"]), dict(start.get("params") or {}), int(start.get("seed_index", 0)))
        if entry is not None:
            entry.trial_path = start.get("trial_path") or entry.trial_path
            entry.attempt = max(entry.attempt, int(start.get("attempt") or 0))

    if (Path(sweep_path) / "trials").is_dir():
        df = results.latest_attempts(results.load(sweep_path))
        column = f"{spec.objective.selection}_{spec.objective.metric}"
        for row in df.to_dict("records"):
            tid = str(row["trial_id"])
            entry = by_trial.get(tid)
            if entry is None:  # a row without a start line (a sweep recorded before started.jsonl)
                seed = row.get("seed")
                index = ledger.seeds.index(int(seed)) if seed is not None and int(seed) in ledger.seeds else -1
                entry = place(tid, _params_of(row, space), index)
                if entry is None:
                    continue
            final = row["status"] in TERMINAL and not (retry_failed and row["status"] == "failed")
            entry.status = row["status"] if final else None
            entry.attempt = max(entry.attempt, int(row.get("attempt") or 0))
            entry.run_id = row.get("mlflow_run_id") or None
            value = row.get(column)
            ok = row["status"] in ("completed", "stopped_early") and value is not None and math.isfinite(value)
            entry.objective = float(value) if ok else None
    return ledger


def _params_of(row: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    try:
        cfg = json.loads(row.get("config_json") or "{}")
    except ValueError:
        cfg = {}
    return {k: cfg[k] for k in space if k in cfg} or {"__constant__": 0}


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
