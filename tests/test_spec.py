"""Sweep-file validation: one ``error: FILE: field.path: what is allowed`` line per problem, exit code 2.

Each malformed file is run through the real CLI in-process (``typer.testing.CliRunner``),
so the test sees exactly what a user sees. Nothing may start: ``sweeper run`` on a bad
file must not reach ``run_sweep`` nor create the results directory.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeper import spec as specmod
from sweeper.cli import app

runner = CliRunner()

DEMO = """\
name: t
train: {dataset: blobs, metrics: [mode_coverage]}
"""
VALID_SN = ", ".join(["none", "sn", "snconv", "bsn"])
"""The start of the normalizer catalogue, as the message lists it."""


def _write(tmp_path: Path, text: str | bytes, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _errors(path: Path, *args: str) -> list[str]:
    result = runner.invoke(app, ["validate", str(path), *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines and all(line.startswith(f"error: {path}: ") for line in lines), result.output
    return [line.removeprefix(f"error: {path}: ") for line in lines]


def C(case_id: str, text: str, *expected: tuple[str, str]) -> object:  # noqa: N802
    """One table row: a malformed file and, per expected line, (field path, a fragment of the message)."""
    return pytest.param(text, list(expected), id=case_id)


CASES = [
    C("yaml-syntax", "name: t\n  train: [\n", ("invalid YAML at line 2, column 8", "")),
    C("yaml-unclosed", "name: t\nspace: {scale: [1, 2\n", ("invalid YAML", "")),
    C(
        "yaml-duplicate-key",
        "name: t\nseeds: [0]\nseeds: [1]\n",
        ("invalid YAML at line 3", "duplicate key 'seeds'"),
    ),
    C(
        "unknown-top",
        DEMO + "sedes: [0, 1]\n",
        ("sedes", "unknown key (did you mean 'seeds'?); valid: name, description"),
    ),
    C(
        "unknown-nested-search",
        DEMO + "search: {sampler: tpe, trails: 3}\n",
        ("search.trails", "valid: sampler, seed"),
    ),
    C(
        "unknown-nested-objective",
        DEMO + "objective: {metric: fid, direction: min}\n",
        ("train.inception_weights", "use the real Inception network"),  # found in the same pass
        ("objective.direction", "unknown key (did you mean 'selection'?); valid: metric, mode, selection"),
    ),
    C(
        "unknown-in-form",
        DEMO + "space: {scale: {uniform: [1, 2], step: 0.1}}\n",
        ("space.scale.step", "valid: uniform"),
    ),
    C(
        "unknown-train-key",
        "name: t\ntrain: {lr: 1.0e-4}\n",
        ("train.lr", "unknown config key (did you mean 'lr_g'?); valid:"),
    ),
    C(
        "unknown-param",
        DEMO + "space: {learning_rate: {choice: [1, 2]}}\n",
        ("space.learning_rate", "unknown param"),
    ),
    C("type-seeds", DEMO + "seeds: five\n", ("seeds", "must be a list, got 'five'")),
    C("type-trials", DEMO + "search: {trials: many}\n", ("search.trials", "must be an integer, got 'many'")),
    C("type-section", DEMO + "resources: 4\n", ("resources", "must be a mapping, got 4")),
    C(
        "type-train-scale",
        "name: t\ntrain: {scale: big}\n",
        ("train.scale", "must be a finite number, got 'big'"),
    ),
    C("type-quoted-number", "name: t\ntrain: {lr_d: '2e-4'}\n", ("train.lr_d", "(remove the quotes)")),
    C(
        "type-int-field",
        DEMO + "space: {batch_size: {choice: [32, 64.5]}}\n",
        ("space.batch_size", "an integer"),
    ),
    C("type-bool-as-int", DEMO + "space: {n_dis: true}\n", ("space.n_dis", "must be an integer, got true")),
    C(
        "type-metrics",
        "name: t\ntrain: {metrics: fid}\n",
        ("train.metrics", "must be a list of metric names"),
    ),
    C("type-space", DEMO + "space: scale\n", ("space", "expected a mapping of parameters, or a list")),
    C(
        "form-list",
        DEMO + "space: {scale: [1, 2]}\n",
        ("space.scale", "expected a value or one of {choice|grid|uniform|loguniform|int}"),
    ),
    C("form-null", DEMO + "space: {scale: null}\n", ("space.scale", "got null")),
    C(
        "form-typo",
        DEMO + "space: {scale: {unifrom: [1, 2]}}\n",
        ("space.scale", "got a mapping with keys 'unifrom'"),
    ),
    C(
        "form-two",
        DEMO + "space: {scale: {choice: [1], grid: [2]}}\n",
        ("space.scale", "got both choice and grid"),
    ),
    C(
        "empty-choice",
        DEMO + "space: {scale: {choice: []}}\n",
        ("space.scale.choice", "needs at least 1 item"),
    ),
    C("empty-grid", DEMO + "space: {lr_g: {grid: []}}\n", ("space.lr_g.grid", "needs at least 1 item")),
    C("empty-seeds", DEMO + "seeds: []\n", ("seeds", "needs at least 1 item")),
    C(
        "low-gt-high",
        DEMO + "space: {scale: {uniform: [3.0, 2.0]}}\n",
        ("space.scale.uniform", "low must be <= high"),
    ),
    C(
        "int-low-gt-high",
        DEMO + "space: {n_dis: {int: [5, 1]}}\n",
        ("space.n_dis.int", "low must be <= high"),
    ),
    C("range-arity", DEMO + "space: {scale: {uniform: [1.0]}}\n", ("space.scale.uniform", "[low, high]")),
    C(
        "range-inf",
        DEMO + "space: {scale: {uniform: [1.0, .inf]}}\n",
        ("space.scale.uniform", "two finite numbers"),
    ),
    C(
        "loguniform-zero",
        DEMO + "space: {lr_d: {loguniform: [0, 1.0e-3]}}\n",
        ("space.lr_d.loguniform", "low > 0"),
    ),
    C(
        "loguniform-neg",
        DEMO + "space: {lr_d: {loguniform: [-1.0, 1.0]}}\n",
        ("space.lr_d.loguniform", "low > 0"),
    ),
    C("int-log-zero", DEMO + "space: {n_dis: {int: [0, 4], log: true}}\n", ("space.n_dis", "needs low >= 1")),
    C("scale-fixed-neg", DEMO + "space: {scale: -1.0}\n", ("space.scale", "`scale` must be > 0, got -1.0")),
    C("scale-fixed-zero", "name: t\ntrain: {scale: 0}\n", ("train.scale", "`scale` must be > 0, got 0")),
    C(
        "scale-choice-zero",
        DEMO + "space: {scale: {choice: [0, 1.0]}}\n",
        ("space.scale", "`scale` must be > 0"),
    ),
    C(
        "scale-grid-neg",
        DEMO + "space: {scale: {grid: [-0.5, 1.0]}}\n",
        ("space.scale", "`scale` must be > 0"),
    ),
    C(
        "scale-range-neg",
        DEMO + "space: {scale: {uniform: [-1.0, 2.0]}}\n",
        ("space.scale", "`scale` must be > 0"),
    ),
    C("scale-int-zero", DEMO + "space: {scale: {int: [0, 3]}}\n", ("space.scale", "`scale` must be > 0")),
    C("n_dis-fixed", DEMO + "space: {n_dis: 0}\n", ("space.n_dis", "`n_dis` must be an integer >= 1, got 0")),
    C("n_dis-train", "name: t\ntrain: {n_dis: -2}\n", ("train.n_dis", "`n_dis` must be an integer >= 1")),
    C(
        "n_dis-choice",
        DEMO + "space: {n_dis: {choice: [0, 1, 5]}}\n",
        ("space.n_dis", "must be an integer >= 1"),
    ),
    C("n_dis-int", DEMO + "space: {n_dis: {int: [0, 5]}}\n", ("space.n_dis", "must be an integer >= 1")),
    C(
        "n_dis-uniform",
        DEMO + "space: {n_dis: {uniform: [1, 5]}}\n",
        ("space.n_dis", "use `int: [low, high]`"),
    ),
    C(
        "normalizer",
        DEMO + "space: {normalizer: {choice: [sn, ssn]}}\n",
        ("space.normalizer", "valid: none, sn, snconv, bsn"),
    ),
    C(
        "normalizer-train",
        "name: t\ntrain: {normalizer: SN}\n",
        ("train.normalizer", "unknown normalizer 'SN'"),
    ),
    C(
        "dataset",
        "name: t\ntrain: {dataset: cifar100}\n",
        ("train.dataset", "valid: blobs, ring, grid, cifar10"),
    ),
    C("model", "name: t\ntrain: {model: dcgan}\n", ("train.model", "valid: sngan_cnn, sngan_resnet, mlp")),
    C("sampler", DEMO + "search: {sampler: bohb}\n", ("search.sampler", "valid: tpe, random, grid, cmaes")),
    C("loss", "name: t\ntrain: {loss: wgan}\n", ("train.loss", "must be one of auto, hinge, wgan_gp, ns")),
    C(
        "range-on-name",
        DEMO + "space: {normalizer: {uniform: [0, 1]}}\n",
        ("space.normalizer", "not a range"),
    ),
    C("search-list", DEMO + "space: {metrics: {choice: [fid]}}\n", ("space.metrics", "cannot be searched")),
    C(
        "seed-in-space",
        DEMO + "space: {seed: {choice: [1, 2]}}\n",
        ("space.seed", "use the top-level `seeds` list"),
    ),
    C("seed-in-train", "name: t\ntrain: {seed: 3}\n", ("train.seed", "use the top-level `seeds` list")),
    C("seeds-dupe", DEMO + "seeds: [1, 1]\n", ("seeds", "seeds must be distinct")),
    C("seeds-negative", DEMO + "seeds: [-1]\n", ("seeds[0]", "greater than or equal to 0")),
    C("both", DEMO + "space: {dataset: {choice: [blobs]}}\n", ("space.dataset", "also fixed in `train`")),
    C(
        "both-block",
        DEMO + "search: {sampler: grid}\nspace: [{scale: 1.0}, {dataset: blobs}]\n",
        ("space[1].dataset", "also fixed in `train`"),
    ),
    C(
        "objective-metric",
        DEMO + "objective: {metric: FID}\n",
        ("objective.metric", "unknown metric 'FID' (did you mean 'fid'?); valid:"),
    ),
    C("objective-mode", DEMO + "objective: {mode: lower}\n", ("objective.mode", "must be 'max' or 'min'")),
    C(
        "objective-selection",
        DEMO + "objective: {selection: peak}\n",
        ("objective.selection", "'final' or 'best'"),
    ),
    C(
        "train-metric",
        "name: t\ntrain: {metrics: [fid, psnr]}\n",
        ("train.metrics", "unknown metric 'psnr'; valid:"),
    ),
    C("name-missing", "train: {}\n", ("name", "required field is missing")),
    C("name-bad", "name: my sweep\n", ("name", "must be 1-80 letters, digits")),
    C(
        "grid-continuous",
        DEMO + "search: {sampler: grid}\nspace: {scale: {uniform: [1, 2]}}\n",
        ("space.scale", "the grid sampler needs finite values"),
    ),
    C(
        "cmaes-categorical",
        DEMO + "search: {sampler: cmaes}\nspace: {normalizer: {choice: [sn, bsn]}}\n",
        ("space.normalizer", "the cmaes sampler handles continuous parameters only"),
    ),
    C(
        "union-needs-grid",
        DEMO + "space: [{scale: 1.0}, {scale: 2.0}]\n",
        ("search.sampler", "use `grid`, not 'tpe'"),
    ),
    C(
        "union-continuous",
        DEMO + "search: {sampler: grid}\nspace: [{scale: 1.0}, {scale: {uniform: [1, 2]}}]\n",
        ("space[1].scale", "the grid sampler needs finite values"),
    ),
    C("space-empty-list", DEMO + "space: []\n", ("space", "needs at least 1 item")),
    C(
        "mode-metric-on-images",
        "name: t\ntrain: {dataset: cifar10, data_root: /d}\nobjective: {metric: mode_coverage}\n",
        ("objective.metric", "need a dataset with known modes"),
    ),
    C(
        "inception-weights",
        "name: t\ntrain: {dataset: blobs, metrics: [fid]}\nobjective: {metric: fid}\n",
        ("train.inception_weights", "set `inception_weights`"),
    ),
    C(
        "cuda-without-gpu",
        "name: t\ntrain: {dataset: blobs, device: cuda, metrics: [mode_coverage]}\n",
        ("resources.gpus_per_trial", "must be > 0"),
    ),
    C(
        "resolution-model",
        "name: t\ntrain: {resolution: 20}\n",
        ("train.resolution", "must be a multiple of 8"),
    ),
    C(
        "data-root",
        "name: t\ntrain: {dataset: cifar10, metrics: [fid_small]}\nobjective: {metric: fid_small}\n",
        ("train.dataset", "needs `data_root`"),
    ),
    C(
        "negative-resources",
        DEMO + "resources: {cpus_per_trial: 0, workers: 0}\n",
        ("resources.cpus_per_trial", "greater than 0"),
        ("resources.workers", "greater than or equal to 1"),
    ),
    C(
        "three-problems",
        "name: t\nfoo: 1\ntrain: {scale: -2.0}\nsearch: {sampler: x}\n",
        ("foo", "unknown key"),
        ("train.scale", "must be > 0"),
        ("search.sampler", "unknown sampler"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_malformed_file_one_line_per_problem(tmp_path: Path, text: str, expected: list[tuple[str, str]]) -> None:
    lines = _errors(_write(tmp_path, text))
    assert len(lines) == len(expected), lines
    for line, (path, fragment) in zip(lines, expected, strict=True):
        assert line.startswith(f"{path}: ") or line.startswith(path), (line, path)
        assert fragment in line, (line, fragment)


def test_structural_errors_do_not_hide_value_checks(tmp_path: Path) -> None:
    """One pass reports everything: a block that is not a mapping, and a bad value in another block."""
    text = DEMO + "search: {sampler: grid}\nspace:\n  - {scale: -1.0}\n  - 7\n"
    assert _errors(_write(tmp_path, text)) == [
        "space[1]: must be a mapping, got 7",
        "space[0].scale: `scale` must be > 0, got -1.0",
    ]


def test_block_errors_are_all_reported(tmp_path: Path) -> None:
    text = DEMO + "search: {sampler: grid}\nspace:\n  - {scale: -1.0}\n  - {normalizer: ssn}\n"
    assert [line.split(":")[0] for line in _errors(_write(tmp_path, text))] == [
        "space[0].scale",
        "space[1].normalizer",
    ]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "the file is empty"),
        (b"# only a comment\n", "the file is empty"),
        (b"- name: t\n- seeds: [0]\n", "expected a YAML mapping with at least `name`, got a list of 2"),
        (b"just text\n", "expected a YAML mapping with at least `name`, got 'just text'"),
        (b"name: t\ndescription: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 24); save it as UTF-8"),
        (b"\xff\xfe\x00n\x00a\x00m\x00e", "not UTF-8 text"),
        (b"name: t\x00\n", "invalid YAML"),
        (b"name: t\nspace: " + b"[" * 200 + b"]" * 200 + b"\n", "nested more than"),
        (b"name: t\ntrain: {a: &a [1, 2], b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a], "
         b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c], "
         b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d], f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]}\n",
         "too large"),
    ],
    ids=["empty", "comment", "list", "scalar", "latin1", "utf16", "nul", "deep", "alias-bomb"],
)  # fmt: skip
def test_unreadable_files(tmp_path: Path, content: bytes, fragment: str) -> None:
    lines = _errors(_write(tmp_path, content))
    assert len(lines) == 1 and fragment in lines[0], lines


def test_missing_file_and_unknown_preset(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no such sweep file" in result.output
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 2 and "a folder, not a sweep file" in result.output
    result = runner.invoke(app, ["validate", "cifar-scale"])
    assert result.exit_code == 2 and result.output.startswith(
        "error: unknown preset 'cifar-scale' (did you mean 'cifar10-scale'?); valid presets: "
    )


def test_control_characters_never_split_a_line(tmp_path: Path) -> None:
    text = 'name: t\ntrain: {"bad\\nkey\\u2028x": 1, dataset: "a\\rb"}\n'
    lines = _errors(_write(tmp_path, text))
    assert len(lines) == 2
    assert "'bad\\nkey\\u2028x'" in lines[0]


def test_run_on_a_bad_file_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sweeper.run.sweep

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("run_sweep must not be reached")

    monkeypatch.setattr(sweeper.run.sweep, "run_sweep", boom)
    bad = _write(tmp_path, DEMO + "space: {scale: {choice: []}}\n")
    results = tmp_path / "results"
    result = runner.invoke(app, ["--results-dir", str(results), "--tracking-uri", "none", "run", str(bad)])
    assert result.exit_code == 2, result.output
    assert result.output == f"error: {bad}: space.scale.choice: needs at least 1 item, got an empty list\n"
    assert not results.exists()


def test_yaml_1_2_floats_and_int_coercion() -> None:
    s = specmod.parse("name: t\ntrain: {lr_d: 2e-4}\nspace: {scale: {grid: [1, 1.0, 2]}, lr_g: 1e-4}\n", "x")
    assert s.train["lr_d"] == 2e-4
    assert s.space["scale"].grid == [1.0, 1.0, 2.0]  # type: ignore[union-attr]
    assert all(isinstance(v, float) for v in s.space["scale"].grid)  # type: ignore[union-attr]
    assert s.space["lr_g"] == 1e-4


def test_validate_ok_text_and_json() -> None:
    result = runner.invoke(app, ["validate", "demo"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("demo: ok\n  trials: 39 (13 configurations x 3 seeds)")
    result = runner.invoke(app, ["validate", "demo", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert {"name", "trials", "parameters"} <= set(summary)
    assert summary["name"] == "demo"
    assert isinstance(summary["trials"], int) and summary["trials"] == 39
    assert summary["parameters"] == ["normalizer", "scale"]


def test_validate_json_of_a_union(tmp_path: Path) -> None:
    blocks = "[{normalizer: sn, scale: {grid: [1.0, 2.0]}}, {normalizer: bsn, n_dis: {grid: [1, 5]}}]"
    path = _write(tmp_path, DEMO + f"search: {{sampler: grid}}\nseeds: [0, 1, 2]\nspace: {blocks}\n")
    result = runner.invoke(app, ["validate", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["trials"] == 4 * 3 and summary["configurations"] == 4
    assert summary["parameters"] == ["normalizer", "scale", "n_dis"]


def test_validate_json_on_error_is_plain_error_lines(tmp_path: Path) -> None:
    lines = _errors(_write(tmp_path, "name: t\nseeds: x\n"), "--json")
    assert lines == ["seeds: must be a list, got 'x'"]


def test_schema_command_is_json_schema() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert set(schema["properties"]) >= {"name", "train", "space", "seeds", "objective", "search"}
    assert {"Choice", "Grid", "Uniform", "LogUniform", "IntRange"} <= set(schema["$defs"])


def test_model_validate_still_raises_for_python_callers() -> None:
    """``resume`` re-validates the stored spec with ``SweepSpec.model_validate``: same rules."""
    with pytest.raises(ValueError, match="scale"):
        specmod.SweepSpec.model_validate({"name": "t", "space": {"scale": -1}})
    s = specmod.SweepSpec.model_validate({"name": "t", "space": {"scale": {"loguniform": [0.5, 2]}}})
    assert specmod.SweepSpec.model_validate(s.model_dump(mode="json")) == s


def test_spec_error_lines_are_single_lines() -> None:
    err = specmod.SpecError(["a\nb", "c\u2029d"])
    assert err.lines == ["a\\x0ab", "c\\u2029d"]
    assert all(len(line.splitlines()) == 1 for line in err.lines)


def test_docs_example_validates() -> None:
    """The annotated example in docs/SWEEP_FILES.md is a valid sweep with the counts it claims."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "SWEEP_FILES.md").read_text(encoding="utf-8")
    example = doc.split("## A complete annotated example")[1].split("```yaml")[1].split("```")[0]
    s = specmod.parse(example, "docs example")
    assert (s.name, s.n_trials, s.n_configurations, s.parameters) == (
        "bssn-lr-study",
        48,
        16,
        ["scale", "lr_d", "lr_g"],
    )


def test_every_problem_in_one_pass(tmp_path: Path) -> None:
    """A bad form, an unknown name in another parameter, an unknown section key, a cross-field rule
    and a point rule: all reported at once, so a user fixes the file in one go."""
    text = (
        "name: t\n"
        "train: {resolution: 12}\n"
        "space: {scale: {uniform: [3, 2]}, normalizer: {choice: [sn, bssn]}}\n"
        "search: {trails: 4}\n"
        "pack: 2\n"
        "scheduler: {type: asha}\n"
    )
    paths = sorted(line.split(":")[0] for line in _errors(_write(tmp_path, text)))
    assert paths == ["pack", "search.trails", "space.normalizer", "space.scale.uniform", "train.resolution"], paths


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: t\nsedes: [0]\n", "(did you mean 'seeds'?)"),
        ("name: t\nsearch: {sampler: tpee}\n", "unknown sampler 'tpee' (did you mean 'tpe'?)"),
        ("name: t\ntrain: {normalizer: BSSN}\n", "unknown normalizer 'BSSN' (did you mean 'bsn'?)"),
        ("name: t\ntrain: {model: sngan_cn}\n", "unknown model 'sngan_cn' (did you mean 'sngan_cnn'?)"),
        ("name: t\ntrain: {dataset: cifar}\n", "unknown dataset 'cifar' (did you mean 'cifar10'?)"),
        (
            "name: t\nobjective: {metric: mode_coverag}\n",
            "unknown metric 'mode_coverag' (did you mean 'mode_coverage'?)",
        ),
        ("name: t\ntrain: {n_dsi: 2}\n", "unknown config key (did you mean 'n_dis'?)"),
        ("name: t\nspace: {scael: {grid: [1.0]}}\n", "unknown parameter (did you mean 'scale'?)"),
        ("name: t\nresources: {gpus: 1}\n", "unknown key (did you mean 'gpus_per_trial'?)"),
    ],
)
def test_unknown_names_suggest_the_nearest(tmp_path: Path, text: str, fragment: str) -> None:
    lines = _errors(_write(tmp_path, text))
    assert len(lines) == 1 and fragment in lines[0] and "valid:" in lines[0], lines


def test_unknown_preset_suggests_the_nearest() -> None:
    result = runner.invoke(app, ["validate", "demoo"])
    assert result.exit_code == 2 and "unknown preset 'demoo' (did you mean 'demo'?)" in result.output
