"""Fuzz ``sweeper validate`` with malformed sweep files: always exit 2 with ``error: `` lines only.

The second half fuzzes valid sweep files whose inputs are broken on the file system (the corpus
of ``tests/bad_inputs.py``: missing roots, empty folders, wrong layouts and splits, wrong or
unreadable weights, a folder where a file is expected, resolutions a model cannot take), one to
four of them at once: ``validate`` and ``run`` each end in exactly one line per broken input,
exit 2, nothing written, no Ray started.

Every generated file is malformed by construction: a valid spec (the demo preset) with
1-3 mutations that each break a rule (a required key deleted, an unknown key injected,
a wrong type, a bad range, junk nested deep), or raw bytes that cannot be a sweep file
(YAML garbage, non-UTF-8 bytes, an empty file, a top-level list). The CLI runs
in-process; a crash (traceback, exit code 1) or a blank or unprefixed line fails.
"""

from __future__ import annotations

import copy
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from bad_inputs import BY_NAME, CASES, Case, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sweeper import spec as specmod
from sweeper.cli import app
from sweeper.spec.fields import catalogues
from trainers.config import TrainConfig
from trainers.metrics import METRICS

runner = CliRunner()
BASE: dict[str, Any] = yaml.safe_load(specmod.preset_text("demo"))
TOP_KEYS = set(specmod.SweepSpec.model_fields)
SECTIONS = {name: set(model.model_fields) for name, model in specmod.SECTIONS.items()}
FIELDS = set(TrainConfig.field_names())
_TMP = Path(tempfile.mkdtemp(prefix="snsweep-fuzz-"))

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
junk = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=12,
)
not_a_number = st.one_of(
    st.text(min_size=1, max_size=8).filter(lambda t: _not_number(t)),
    st.lists(st.integers(), max_size=2),
    st.none(),
    st.dictionaries(st.sampled_from(["a", "lo"]), st.integers(), min_size=1, max_size=2),
)
non_positive = st.one_of(st.integers(max_value=0), st.floats(max_value=0.0, allow_nan=False))


def _not_number(t: str) -> bool:
    try:
        v = yaml.safe_load(t)
    except yaml.YAMLError:
        return True
    return not specmod.is_finite_number(v)


def _unknown(known: set[str]) -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=10).filter(lambda k: k not in known and k != "seed")


# --- mutations: each returns a strategy of functions that break a copy of the spec ------------
def _set(path: tuple[str, ...], value: Any):  # noqa: ANN202
    def apply(d: dict[str, Any]) -> None:
        for key in path[:-1]:
            if not isinstance(d.get(key), dict):
                d[key] = {}
            d = d[key]
        d[path[-1]] = value

    return apply


def _delete_name(d: dict[str, Any]) -> None:
    d.pop("name", None)


MUTATIONS = st.one_of(
    st.just(_delete_name),
    _unknown(TOP_KEYS).flatmap(lambda k: junk.map(lambda v: _set((k,), v))),
    st.sampled_from(sorted(SECTIONS)).flatmap(
        lambda s: _unknown(SECTIONS[s]).flatmap(lambda k: junk.map(lambda v: _set((s, k), v)))
    ),
    _unknown(FIELDS).flatmap(lambda k: scalars.map(lambda v: _set(("train", k), v))),
    _unknown(FIELDS).flatmap(lambda k: scalars.map(lambda v: _set(("space", k), {"choice": [v]}))),
    # wrong types
    not_a_number.map(
        lambda v: _set(("space", "scale"), v if not isinstance(v, (str, type(None))) else {"uniform": v})
    ),
    not_a_number.map(lambda v: _set(("train", "batch_size"), v)),
    not_a_number.map(lambda v: _set(("search", "trials"), v)),
    st.one_of(
        st.text(max_size=6), st.integers(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    ).map(lambda v: _set(("seeds",), v)),
    st.text(max_size=10).filter(lambda m: m not in METRICS).map(lambda m: _set(("objective", "metric"), m)),
    st.text(max_size=10)
    .filter(lambda m: m not in specmod.SAMPLERS)
    .map(lambda m: _set(("search", "sampler"), m)),
    st.integers().map(lambda v: _set(("objective", "selection"), v)),
    st.sampled_from([[], 5, "x", None]).map(lambda v: _set(("space", "normalizer"), {"choice": v})),
    st.text(min_size=1, max_size=8)
    .filter(lambda t: t not in catalogues()["normalizer"])
    .map(lambda t: _set(("space", "normalizer"), {"choice": ["sn", t]})),
    st.text(min_size=1, max_size=8)
    .filter(lambda t: t not in catalogues()["dataset"])
    .map(lambda t: _set(("train", "dataset"), t)),
    # bad ranges and values
    st.tuples(st.floats(0.1, 10), st.floats(0.01, 5)).map(
        lambda t: _set(("space", "scale"), {"uniform": [t[0] + t[1], t[0]]})
    ),
    st.tuples(non_positive, st.floats(0.1, 10)).map(
        lambda t: _set(("space", "lr_d"), {"loguniform": list(t)})
    ),
    non_positive.map(lambda v: _set(("space", "scale"), v)),
    non_positive.map(lambda v: _set(("space", "scale"), {"choice": [1.0, v]})),
    st.integers(max_value=0).map(lambda v: _set(("space", "n_dis"), {"int": [v, 5]})),
    st.integers(max_value=0).map(lambda v: _set(("space", "n_dis"), v)),
    st.sampled_from(["choice", "grid"]).map(lambda f: _set(("space", "scale"), {f: []})),
    st.integers(0, 3).map(lambda i: _set(("space", "seed"), {"choice": list(range(i + 1))})),
    st.just(_set(("train", "scale"), 1.0)),  # also in space
    # deeply nested junk anywhere a value goes
    st.integers(30, 80).flatmap(
        lambda depth: st.sampled_from([("train", "scale"), ("space", "scale"), ("search",), ("space",)]).map(
            lambda path: _set(path, _nest(depth))
        )
    ),
)


def _nest(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    spec = copy.deepcopy(BASE)
    for mutate in draw(st.lists(MUTATIONS, min_size=1, max_size=3)):
        mutate(spec)
    text = yaml.safe_dump(spec, allow_unicode=True, sort_keys=draw(st.booleans()), default_flow_style=None)
    return text.encode("utf-8")


raw_files = st.one_of(
    st.just(b""),
    st.sampled_from([b"\n", b"   \n", b"# just a comment\n", b"---\n", b"...\n", b"~\n", b"null\n"]),
    # YAML garbage: "[" makes it a syntax error, or a flow sequence (a top-level list)
    st.text(max_size=60).map(lambda t: ("[" + t).encode("utf-8")),
    st.text(max_size=60).map(lambda t: ("name: t\nspace: {scale: [" + t + "\n  - :").encode("utf-8")),
    st.binary(max_size=80).map(lambda b: b"\xff" + b),  # never UTF-8
    st.text(min_size=1, max_size=30).map(
        lambda t: (
            ("name: caf\u00e9 " + t + "\n").encode("latin-1", "replace").replace(b"caf\xe9", b"caf\xe9\xff")
        )
    ),
    st.lists(junk, max_size=4).map(lambda v: yaml.safe_dump(v, allow_unicode=True).encode("utf-8")),
    st.integers(100, 3000).map(lambda n: b"name: t\ntrain: " + b"[" * n + b"]" * n + b"\n"),
    st.integers(2, 6).map(
        lambda n: b"name: t\ntrain: {a: " + b"{b: " * 200 * n + b"1" + b"}" * (200 * n + 1) + b"\n"
    ),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.one_of(mutated(), mutated(), raw_files))
def test_malformed_files_fail_cleanly(content: bytes) -> None:
    path = _TMP / "sweep.yaml"
    path.write_bytes(content)
    result = runner.invoke(app, ["validate", str(path)])
    output = result.output
    assert result.exit_code == 2, (content[:300], output, result.exception)
    assert "Traceback" not in output
    lines = output.splitlines()
    assert lines, content[:300]
    assert all(line.startswith("error: ") for line in lines), output
    assert all(len(line) > len("error: ") for line in lines), output


def test_fuzz_generator_makes_invalid_specs_only() -> None:
    """The mutated base is valid before mutation: the fuzzer tests mutations, not a broken base."""
    assert specmod.SweepSpec.model_validate(copy.deepcopy(BASE)).name == "demo"


# --- inputs broken on the file system -------------------------------------------------------------
SLOTS = {slot: [c for c in CASES if c.slot == slot] for slot in ("data", "weights", "cache")}
RESOLUTION = [BY_NAME["resolution_some_searched_values"], BY_NAME["resolution_int_range"]]
"""Shape cases that only touch ``space.resolution``, so they combine with any file case."""
NORMALIZERS = ["sn", "bsn", "none", "lecun"]


@st.composite
def broken_inputs(draw: st.DrawFn) -> tuple[list[Case], dict[str, Any]]:
    chosen = [draw(st.sampled_from(cases)) for cases in SLOTS.values() if draw(st.booleans())]
    if draw(st.booleans()):
        chosen.append(draw(st.sampled_from(RESOLUTION)))
    if not chosen:
        chosen.append(draw(st.sampled_from(CASES)))
    noise = {
        "seeds": draw(st.lists(st.integers(0, 1000), min_size=1, max_size=3, unique=True)),
        "search": {"sampler": draw(st.sampled_from(["tpe", "random"])), "trials": draw(st.integers(1, 50))},
        "normalizer": draw(st.lists(st.sampled_from(NORMALIZERS), min_size=1, max_size=3, unique=True)),
    }  # fmt: skip
    return chosen, noise


def _cli(tmp: Path, *args: str):  # noqa: ANN202
    return runner.invoke(
        app, ["--results-dir", str(tmp / "results"), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", *args]
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken=broken_inputs())
def test_broken_inputs_on_disk_fail_cleanly(broken: tuple[list[Case], dict[str, Any]]) -> None:
    cases, noise = broken
    tmp = Path(tempfile.mkdtemp(dir=_TMP))
    try:
        train: dict[str, Any] = {}
        space: dict[str, Any] = {"normalizer": {"choice": noise["normalizer"]}}
        for case in cases:
            (tmp / case.name).mkdir()
            t, sp = case.build(tmp / case.name)
            train.update(t)
            space.update(sp)
        data = {**spec(tmp, train, space), "seeds": noise["seeds"], "search": noise["search"]}
        path = tmp / "sweep.yaml"
        path.write_text(yaml.safe_dump(data))
        for command in ("validate", "run"):
            result = _cli(tmp, command, str(path))
            lines = result.output.splitlines()
            assert result.exit_code == 2, (command, result.output, result.exception)
            assert "Traceback" not in result.output
            assert len(lines) == len(cases), (cases, result.output)
            assert all(line.startswith(f"error: {path}: ") for line in lines), result.output
            assert sorted(line.split(": ")[2] for line in lines) == sorted(c.path for c in cases), result.output
            for case in cases:
                assert any(case.says in line for line in lines), (case.name, result.output)
            assert not (tmp / "results").exists() and not (tmp / "mlflow.db").exists()
            assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
        relaxed = _cli(tmp, "validate", str(path), "--no-data")
        without_files = [c for c in cases if not c.files]
        assert relaxed.exit_code == (2 if without_files else 0), relaxed.output
        if without_files:
            assert len(relaxed.output.splitlines()) == len(without_files), relaxed.output
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
