"""Parquet results on disk: atomic writes of trial rows and curves, and ``load``.

Layout (contract)::

    <results_dir>/<sweep>/sweep.json            resolved spec, versions, git commit, start time
    <results_dir>/<sweep>/trials/<trial>-a<attempt>.parquet   one row per trial attempt
    <results_dir>/<sweep>/curves/<trial>-a<attempt>.parquet   long format: trial_id, step, metric, value
    <results_dir>/<sweep>/report/               report.md, report.html, figures

Every file is written under a temporary name starting with ``.`` and renamed
into place, so readers (pandas, DuckDB, a concurrent report) never see half a
file, and ``load`` ignores leftovers of a crash. Column types never change
between files: floats are float64 even when a value happens to be integral.
Files of an older schema version are upgraded as they are read (see
``sweeper.results.schema``), so one ``load`` can mix v1 and v2 files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweeper.results.schema import (
    CURVE_SCHEMA,
    EVAL_FACT_FIELDS,
    file_version,
    parse_config,
    trial_schema,
    v1_eval_facts,
)


def sweep_dir(results_dir: Path, sweep: str) -> Path:
    return Path(results_dir) / sweep


def atomic_write_table(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def atomic_write_text(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _file_stem(trial_id: str, attempt: int) -> str:
    return f"{trial_id}-a{attempt}"


def write_trial(sweep_path: Path, row: Mapping[str, Any], metrics: Iterable[str]) -> Path:
    """Write one trial attempt's summary row (current schema) atomically; an empty ``error`` is null."""
    schema = trial_schema(metrics)
    missing = [n for n in schema.names if n not in row]
    full = {**dict.fromkeys(missing), **row}
    if not full.get("error"):
        full["error"] = None
    extra = sorted(set(full) - set(schema.names))
    if extra:
        raise ValueError(f"trial row has columns outside the schema: {extra}")
    table = pa.Table.from_pylist([{n: full[n] for n in schema.names}], schema=schema)
    name = _file_stem(str(row["trial_id"]), int(row["attempt"]))
    return atomic_write_table(table, Path(sweep_path) / "trials" / f"{name}.parquet")


def write_curves(
    sweep_path: Path,
    trial_id: str,
    attempt: int,
    history: list[Mapping[str, float]],
    sweep: str | None = None,
) -> Path:
    """Write a trial's evaluation history in long format (one row per step x metric).

    ``sweep`` defaults to the sweep folder's name, which is the sweep's name by the layout contract.
    """
    sweep = sweep if sweep is not None else Path(sweep_path).name
    rows = [
        {"sweep": sweep, "trial_id": trial_id, "attempt": int(attempt), "step": int(h["step"]), "metric": k,
         "value": float(v)}
        for h in history
        for k, v in h.items()
        if k != "step" and isinstance(v, (int, float))
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=CURVE_SCHEMA)
    return atomic_write_table(table, Path(sweep_path) / "curves" / f"{_file_stem(trial_id, attempt)}.parquet")


def _parquet_files(paths: str | Path | Iterable[str | Path], sub: str) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
            continue
        if not p.exists():
            raise FileNotFoundError(f"no results at {p}")
        # accept a results dir, a sweep dir or the trials/curves dir itself
        if p.name == sub:
            candidates = p.glob("*.parquet")
        elif (p / sub).is_dir():
            candidates = (p / sub).glob("*.parquet")
        else:
            candidates = p.glob(f"*/{sub}/*.parquet")
        files += sorted(f for f in candidates if not f.name.startswith("."))
    return files


def _read_all(files: list[Path], upgrade: Any) -> pa.Table | None:
    tables = [upgrade(pq.read_table(f), f) for f in files]
    if not tables:
        return None
    schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
    return pa.concat_tables([_fill(t, schema) for t in tables])


def _fill(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Add columns a file lacks as nulls (a metric added by a later search space)."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(len(table), f.type))
    return pa.Table.from_arrays(cols, schema=schema.remove_metadata())


# --------------------------------------------------------------------------------------------------
# Reading older files: every table is brought to the current schema before tables are unified
# --------------------------------------------------------------------------------------------------
def _upgrade_trials(table: pa.Table, path: Path) -> pa.Table:
    """A v1 trials table in v2 terms: ``error`` "" -> null, evaluation facts from ``config_json``."""
    if file_version(table.schema) >= 2:
        return table
    if "error" in table.column_names:
        errors = pa.array([e or None for e in table.column("error").to_pylist()], pa.string())
        table = table.set_column(table.column_names.index("error"), pa.field("error", pa.string()), errors)
    configs = (
        [parse_config(t) for t in table.column("config_json").to_pylist()]
        if "config_json" in table.column_names
        else [{}] * len(table)
    )
    facts = [v1_eval_facts(c) for c in configs]
    for field in EVAL_FACT_FIELDS:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.array([f[field.name] for f in facts], field.type))
    return table


def _upgrade_curves(table: pa.Table, path: Path) -> pa.Table:
    """A v1 curves table gains ``sweep`` (its sweep folder's name) and ``attempt`` (from ``<trial>-a<N>``)."""
    if file_version(table.schema) >= 2:
        return table
    n = len(table)
    if "attempt" not in table.column_names:
        _, _, a = path.stem.rpartition("-a")
        attempt = pa.array([int(a) if a.isdigit() else None] * n, pa.int64())
        table = table.add_column(0, pa.field("attempt", pa.int64()), attempt)
    if "sweep" not in table.column_names:
        sweep = path.parent.parent.name if path.parent.name == "curves" else None
        table = table.add_column(0, pa.field("sweep", pa.string()), pa.array([sweep] * n, pa.string()))
    order = [c for c in CURVE_SCHEMA.names if c in table.column_names]
    return table.select(order + [c for c in table.column_names if c not in order])


def load_table(paths: str | Path | Iterable[str | Path]) -> pa.Table:
    """All trial rows as one Arrow table in the current schema (older files are upgraded on read)."""
    files = _parquet_files(paths, "trials")
    table = _read_all(files, _upgrade_trials)
    return table if table is not None else trial_schema([]).empty_table()


def load(paths: str | Path | Iterable[str | Path]):  # -> pandas.DataFrame
    """All trial-attempt rows under results dirs / sweep dirs / files, as one DataFrame."""
    return load_table(paths).to_pandas()


def load_curves(paths: str | Path | Iterable[str | Path]):  # -> pandas.DataFrame
    """All curve rows (sweep, trial_id, attempt, step, metric, value); v1 files gain sweep and attempt."""
    files = _parquet_files(paths, "curves")
    table = _read_all(files, _upgrade_curves)
    return (table if table is not None else CURVE_SCHEMA.empty_table()).to_pandas()


def latest_attempts(df):  # pandas.DataFrame -> pandas.DataFrame
    """One row per trial: its latest attempt (retries and resumes append attempts)."""
    if df.empty:
        return df
    return df.sort_values(["trial_id", "attempt"]).groupby("trial_id", as_index=False).tail(1)


def read_sweep_meta(sweep_path: Path) -> dict[str, Any]:
    path = Path(sweep_path) / "sweep.json"
    return json.loads(path.read_text()) if path.is_file() else {}
