"""The sweep's Optuna study in a database, where Optuna's own tools can open it.

Ray Tune keeps OptunaSearch's study inside its searcher checkpoint, invisible to
``optuna-dashboard`` and ``optuna.load_study``. A sweep hands the searcher an RDB storage
instead: one study per sweep, named after it, with one Optuna trial per configuration whose
value is the mean over the seeds (per-seed values and Tune trial ids as user attributes; see
``sweeper.run.study_search``).

Where it lives, most specific first: ``--optuna-storage``, the sweep file's ``search.storage``,
``$SNSWEEP_OPTUNA_STORAGE``, else ``optuna.db`` beside the MLflow SQLite store (in the results dir
when MLflow is a server or off). ``none`` at any of those levels keeps no study. ``sweep.json``
records the URL (password masked) and the study name, so ``resume`` and ``dashboard NAME``
find it.

Lifecycle: a fresh sweep creates the study, and refuses to mix its trials into an existing
study that has some (``--overwrite`` deletes it); ``resume`` continues it after failing the
trials the dead driver left RUNNING (:meth:`Study.fail_running`); every session ends with every
finished configuration recorded once (:meth:`Study.record_finished`) and no RUNNING trial.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.errors import SweepError
from sweeper.run.storage import Storage
from sweeper.spec import SweepSpec
from sweeper.spec.study_url import NONE, shown, url_problem

ENV = "SNSWEEP_OPTUNA_STORAGE"
DEFAULT_FILE = "optuna.db"


@dataclass(frozen=True)
class StudyTarget:
    url: str
    """The full URL (SQLite paths made absolute); never printed: see ``shown``."""
    name: str
    source: str
    """Which setting chose the URL, for messages."""

    @property
    def shown(self) -> str:
        return shown(self.url)

    def record(self) -> dict[str, str]:
        """What sweep.json keeps (no password)."""
        return {"optuna_storage": self.shown, "optuna_study": self.name}


def absolute(url: str) -> str:
    """A relative SQLite path is relative to the current directory: pin it (Ray's driver may move)."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if not path.is_absolute():
            return f"sqlite:///{path.resolve()}"
    return url


def _checked(url: str, source: str) -> str | None:
    problem = url_problem(url)
    if problem:
        raise SweepError(f"{source} {problem}")
    return None if url.strip().lower() == NONE else absolute(url.strip())


def default_url(storage: Storage) -> str:
    """``optuna.db`` beside the MLflow SQLite store, else in the results dir (a server or no MLflow)."""
    uri = storage.tracking_uri or ""
    folder = Path(uri[len("sqlite:///") :]).parent if uri.startswith("sqlite:///") else storage.results_dir
    return f"sqlite:///{(folder / DEFAULT_FILE).resolve()}"


def resolve(spec: SweepSpec, storage: Storage) -> StudyTarget | None:
    """Where a fresh sweep's study goes (the module docstring gives the order); None keeps none."""
    choices = [
        (storage.optuna_storage, "--optuna-storage"),
        (spec.search.storage, "search.storage"),
        (os.environ.get(ENV), f"${ENV}"),
    ]
    for value, source in choices:
        if value is not None:
            url = _checked(value, source)
            return None if url is None else StudyTarget(url, spec.name, source)
    return StudyTarget(default_url(storage), spec.name, "default")


def for_existing(meta: dict[str, Any], given: str | None, *, strict: bool) -> StudyTarget | None:
    """The study a sweep recorded in sweep.json (None: it kept none, or predates studies).

    sweep.json keeps no password: a masked URL takes it from ``given`` (``--optuna-storage``) or
    ``$SNSWEEP_OPTUNA_STORAGE`` when that names the same storage. ``strict`` (resume): a
    ``given`` URL naming another storage is an error, because the restored searcher keeps
    writing to the recorded one."""
    recorded, name = meta.get("optuna_storage"), meta.get("optuna_study") or meta.get("name", "")
    if not recorded:
        return None
    candidates = [(given, "--optuna-storage"), (os.environ.get(ENV), f"${ENV}")]
    for value, source in candidates:
        if value is None or value.strip().lower() == NONE:
            continue
        url = _checked(value, source)
        if url is not None and shown(url) == recorded:
            return StudyTarget(url, name, source)
        if source == "--optuna-storage" and url is not None:
            if strict:
                raise SweepError(
                    f"--optuna-storage {shown(url)}: sweep {name!r} keeps its Optuna study in {recorded}, and "
                    "resume continues it there; drop --optuna-storage"
                )
            return StudyTarget(url, name, source)
    if "***" in recorded:
        raise SweepError(
            f"sweep {name!r} keeps its Optuna study in {recorded}; sweep.json keeps no password: pass the full "
            f"URL with --optuna-storage or ${ENV} (or use ~/.pgpass)"
        )
    return StudyTarget(recorded, name, "sweep.json")


def dashboard_target(meta: dict[str, Any] | None, storage: Storage, name: str | None) -> StudyTarget:
    """What ``sweeper dashboard [NAME]`` opens: NAME's recorded study, else the storage a sweep
    started here would use (``--optuna-storage``, ``$SNSWEEP_OPTUNA_STORAGE``, the default)."""
    if name is not None:
        if not meta:
            raise SweepError(f"no sweep {name!r} under {storage.results_dir} (no sweep.json); see `sweeper status`")
        target = for_existing(meta, storage.optuna_storage, strict=False)
        if target is None:
            raise SweepError(
                f"sweep {name!r} keeps no Optuna study (it ran with --optuna-storage none, or before sweeps kept "
                "one); its results are in Parquet and MLflow (`sweeper ui`)"
            )
        return target
    for value, source in ((storage.optuna_storage, "--optuna-storage"), (os.environ.get(ENV), f"${ENV}")):
        if value is not None:
            url = _checked(value, source)
            if url is None:
                raise SweepError(f"{source} is none: there is no study to show")
            return StudyTarget(url, "", source)
    return StudyTarget(default_url(storage), "", "default")


class Study:
    """A sweep's study, opened in a background thread (a fresh SQLite file takes about a second).

    ``storage()`` waits for it and raises what opening it raised (a SweepError line); it is None
    when the *default* storage could not be opened (one warning line: like an unopenable default
    MLflow store, that must not cost the sweep), and then ``target`` is None too."""

    def __init__(self, target: StudyTarget, future: Future):
        self._target = target
        self._future = future

    @property
    def target(self) -> StudyTarget | None:
        return self._target if self.storage() is not None else None

    @property
    def name(self) -> str:
        return self._target.name

    def storage(self) -> Any:
        return self._future.result()

    def fail_running(self) -> int:
        """Fail the trials left RUNNING: at a resume's start (the dead driver's: no session reports
        them again, since every session runs a fresh Tuner), and once Tune is done (groups cut
        short by a time budget or an abort), as Optuna's ``fail_stale_trials`` does for a lost
        heartbeat, so no tool shows a trial as running forever. Returns how many."""
        import optuna

        if self.storage() is None:
            return 0
        study = optuna.load_study(study_name=self.name, storage=self.storage())
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for t in running:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        return len(running)

    def record_finished(self, spec: SweepSpec, rows: Any) -> int:
        """Give every configuration whose seeds are all recorded exactly one COMPLETE trial.

        The sampler completes the trials it proposed; this adds the configurations a session ran
        without it, from the Parquet rows: a grid's points (a grid needs no sampler), and sampled
        configurations whose unfinished seeds were re-run under their old ids after a driver died
        (their first Optuna trial was failed at the resume). Idempotent. Returns how many it added."""
        import optuna

        if self.storage() is None or rows.empty:
            return 0
        from sweeper.spec.space import optuna_space

        space = optuna_space(spec)
        study = optuna.load_study(study_name=self.name, storage=self.storage())
        done = {_params_key(t.params) for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}
        added = 0
        for params, seeds in finished_configurations(spec, rows, list(space)):
            values = [v for v, _ in seeds.values() if v is not None]
            if _params_key(params) in done or not values:  # every seed failed: nothing to tell
                continue
            attrs: dict[str, Any] = {"seeds": sorted(seeds), "trial_ids": [seeds[s][1] for s in sorted(seeds)]}
            attrs.update({f"objective_seed_{s}": v for s, (v, _) in seeds.items()})
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions={k: space[k] for k in params}, value=sum(values) / len(values),
                    user_attrs=attrs,
                )
            )  # fmt: skip
            done.add(_params_key(params))
            added += 1
        return added

    def hint(self) -> str | None:
        if self.target is None:
            return None
        return f"optuna-dashboard {self.target.shown}  (study {self.name!r}; or `sweeper dashboard {self.name}`)"


@dataclass(frozen=True)
class StudyPlan:
    """Where a sweep's study is, known before anything is written; ``open`` then starts the work."""

    target: StudyTarget | None
    spec: SweepSpec
    sweep_path: Path
    resume: bool

    def open(
        self, start: Callable[..., Future], *, overwrite: bool, progress: Callable[[str], None] = print
    ) -> Study | None:
        """Open (or delete and create) the study through ``start`` (a thread); None keeps none."""
        if self.target is None:
            return None
        args = (self.target, self.spec, self.sweep_path, self.resume, overwrite, progress)
        return Study(self.target, start(_prepare, *args))


def plan_study(spec: SweepSpec, storage: Storage, *, resume: bool) -> StudyPlan:
    """A fresh sweep resolves its storage (:func:`resolve`); a resumed one reads sweep.json."""
    from sweeper import results

    sweep_path = results.sweep_dir(storage.results_dir, spec.name)
    if resume:
        target = for_existing(results.read_sweep_meta(sweep_path), storage.optuna_storage, strict=True)
    else:
        target = resolve(spec, storage)
    return StudyPlan(target, spec, sweep_path, resume)


def _prepare(
    target: StudyTarget, spec: SweepSpec, sweep_path: Path, resume: bool, overwrite: bool,
    progress: Callable[[str], None],
) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if target.url.startswith("sqlite:///"):
            Path(target.url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.RDBStorage(target.url)
        names = set(optuna.get_all_study_names(storage))
    except Exception as e:  # noqa: BLE001 - a driver, a server or a file we cannot use: one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        problem = f"cannot open the Optuna storage {target.shown} ({target.source}): {type(e).__name__}: {first}"
        if target.source == "default" and not resume:
            progress(f"warning: {problem}; this sweep keeps no Optuna study (pass --optuna-storage)")
            return None
        raise SweepError(f"{problem}; fix it or pass --optuna-storage none") from None
    if resume and target.name in names:
        return storage
    if resume:
        # The driver died before the study existed (or it was deleted): the Parquet rows are the
        # record, so the study is made again and the session fills in what they hold
        # (Study.record_finished) before its sampler asks for anything.
        progress(f"Optuna: no study {target.name!r} in {target.shown} yet; making it from the recorded trials")
    elif target.name in names:
        old = optuna.load_study(study_name=target.name, storage=storage)
        used = [t for t in old.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]
        if used and not overwrite:
            raise SweepError(
                f"the Optuna study {target.name!r} in {target.shown} already has {len(used)} trials from an earlier "
                f"sweep; `--overwrite` deletes it, or pass --optuna-storage elsewhere"
            )
        optuna.delete_study(study_name=target.name, storage=storage)  # --overwrite, or nothing ever ran
    study = optuna.create_study(
        storage=storage, study_name=target.name, direction="maximize" if spec.metric_mode == "max" else "minimize"
    )
    for key, value in {
        "sweep": spec.name,
        "objective": spec.objective.metric,
        "selection": spec.objective.selection,
        "seeds": list(spec.seeds),
        "value": "mean over seeds of each seed's objective (a run without a finite metric counts as "
        f"{'-1e6' if spec.metric_mode == 'max' else '1e6'})",
        "results": str(sweep_path.resolve()),
    }.items():
        study.set_user_attr(key, value)
    return storage


def _params_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def finished_configurations(
    spec: SweepSpec, rows: Any, keys: list[str]
) -> list[tuple[dict[str, Any], dict[int, tuple[float | None, str]]]]:
    """(params over ``keys``, {seed: (its objective or None, trial id)}) of every configuration
    whose every seed has a terminal row (latest attempts).

    A seed's objective is what the sampler is told for it: the selected metric, or the
    searcher's penalty when the run ended without a finite one (diverged); None for a failed run,
    which the seed repeater leaves out of the mean."""
    from sweeper.results import latest_attempts
    from sweeper.run.reporting import penalty

    column = f"{spec.objective.selection}_{spec.objective.metric}"
    latest = latest_attempts(rows)
    groups: dict[tuple, tuple[dict[str, Any], dict[int, tuple[float | None, str]]]] = {}
    for row in latest.to_dict("records"):
        params = {k: _plain(row[k]) for k in keys if k in row}
        entry = groups.setdefault(_params_key(params), (params, {}))
        value = row.get(column)
        if row["status"] == "failed":
            objective = None
        elif value is None or not math.isfinite(float(value)):
            objective = penalty(spec.metric_mode)
        else:
            objective = float(value)
        entry[1][int(row["seed"])] = (objective, str(row["trial_id"]))
    return [(params, seeds) for params, seeds in groups.values() if set(seeds) >= set(spec.seeds)]


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
