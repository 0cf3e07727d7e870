"""The built-in sweeps reproduce the paper's grids (PAPER.md §3) with the paper's run counts.

Counts are Tune trials = configurations x seeds. Paper totals for reference: the released
CNN config has 480 instances, 450 unique, because blocks 4-6 repeat the default setting at
scale 1.0 that blocks 1-3 already contain; here the *-optim presets likewise contain the
default setting at scale 1.0 that the *-scale presets contain (10 configurations per
dataset overlap), and within one preset a repeated point is run once.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest
from typer.testing import CliRunner

from sweeper import spec as specmod
from sweeper.cli import app
from sweeper.spec.space import fixed_params, grid_points

runner = CliRunner()

SN_SCALES_CIFAR = [0.7, 0.8, 0.9, 1.0, *[round(1.2 + 0.2 * i, 1) for i in range(15)],
                   4.5, 5.0, 5.5, 6.0, 7.0, 8.0, 9.0, 10.0]  # fmt: skip
BSN_SCALES_CIFAR = SN_SCALES_CIFAR[:19]
SMALL_SCALES = [0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.6]
SETTINGS = {  # (lr_g, lr_d, beta2, n_dis): the five optimizer settings of PAPER.md §3.2
    (1e-4, 1e-4, 0.999, 1), (2e-4, 2e-4, 0.999, 1), (1e-4, 1e-4, 0.9, 5), (1e-4, 2e-4, 0.999, 1),
    (2e-4, 1e-4, 0.999, 1),
}  # fmt: skip

EXPECTED_TRIALS = {
    "cifar10-scale": (27 + 19) * 5,  # 230: SSN 27 scales, BSSN 19 scales, 5 seeds
    "stl10-scale": 7 * 2 * 5,  # 70
    "celeba-scale": 7 * 2 * 5,  # 70
    "cifar10-optim": 5 * 2 * 5,  # 50: 5 settings x {sn, bsn} x 5 seeds
    "stl10-optim": 5 * 2 * 5,
    "celeba-optim": 5 * 2 * 5,
    "imagenet-resnet": 4 * 2 * 3,  # 24: 4 scales x {sn, bsn} x 3 seeds
    "gamma-variants": 4 * 5 * 3 * 5,  # 300: {sn,bsn}_gamma_{same,diff} x 5 settings x 3 datasets x 5 seeds
    "snconv-scale": 27 * 5,  # 135
    "lecun-scale": 13 * 5,  # 65
    "no-sn": 2 * 5,  # 10: {hinge, wgan_gp}
    "paper-table1": (27 + 19 + 14 + 14 + 8) * 5,  # 410: Table 1, ImageNet with 5 seeds
    "demo": (2 * 6 + 1) * 3,  # 39: {sn, bsn} x 6 scales + none, 3 seeds
    "demo-search": 10 * 2,
}


def test_every_preset_is_listed_and_counted() -> None:
    assert set(specmod.preset_names()) == set(EXPECTED_TRIALS)


@pytest.mark.parametrize("name", sorted(EXPECTED_TRIALS))
def test_preset_validates_with_the_paper_count(name: str) -> None:
    """cifar10-scale 230, stl10/celeba-scale 70, *-optim 50 (their default setting at scale 1
    overlaps the scale sweeps, as in the paper's 480 vs 450), imagenet-resnet 24, ..."""
    s = specmod.load(name)
    assert s.name == name
    assert s.n_trials == EXPECTED_TRIALS[name]
    assert specmod.SweepSpec.model_validate(s.model_dump(mode="json")) == s  # what `resume` re-reads
    if name != "demo-search":
        assert s.is_grid and s.n_configurations * len(s.seeds) == s.n_trials
        assert s.objective.metric in s.train_metrics


DEMOS = {"demo", "demo-search"}


@pytest.mark.parametrize("name", sorted(set(EXPECTED_TRIALS) - DEMOS))
def test_preset_header_names_what_it_reproduces(name: str) -> None:
    text = resources.files("search_spaces").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    assert text.startswith("# Reproduces paper ")
    s = specmod.parse(text, name)
    assert s.reproduces and s.description
    assert "data_root" in text and "absolute path" in text  # placeholders, and how to override them
    assert s.resources.gpus_per_trial == 1 and s.train["device"] == "cuda"
    assert s.train["inception_weights"].endswith("pt_inception-2015-12-05-6726825d.pth")
    assert s.train["eval_every"] == 10_000 and s.train["eval_real_samples"] == 5_000
    # every cell trains to the end unless its loss is NaN/Inf (the large-c runs of App. P.1)
    assert s.scheduler.stop_on_divergence is False and "divergence_threshold" not in s.train
    if "is" in s.train_metrics:  # the paper's IS protocol: 50k generated images, 10 splits of 5k
        assert (s.train["is_samples"], s.train["is_splits"], s.train["eval_samples"]) == (50_000, 10, 10_000)


def _points(name: str) -> list[dict]:
    s = specmod.load(name)
    fixed = fixed_params(s)
    return [{**fixed, **pt} for pt in grid_points(s)]


def test_cifar10_scale_grid() -> None:
    pts = _points("cifar10-scale")
    assert sorted(p["scale"] for p in pts if p["normalizer"] == "sn") == SN_SCALES_CIFAR
    assert sorted(p["scale"] for p in pts if p["normalizer"] == "bsn") == BSN_SCALES_CIFAR
    assert len(SN_SCALES_CIFAR) == 27 and BSN_SCALES_CIFAR[-1] == 4.0
    for p in pts:
        assert (p["dataset"], p["resolution"], p["model"], p["iterations"]) == (
            "cifar10",
            32,
            "sngan_cnn",
            400_000,
        )
        assert (p["lr_g"], p["lr_d"], p["beta1"], p["beta2"], p["n_dis"]) == (1e-4, 1e-4, 0.5, 0.999, 1)
        assert (p["batch_size"], p["latent_dim"], p["width"], p["loss"]) == (64, 128, 1.0, "hinge")
        assert p["metrics"] == ["is", "fid"]
    s = specmod.load("cifar10-scale")
    assert (s.objective.metric, s.metric_mode, s.objective.selection) == ("fid", "min", "final")
    assert s.seeds == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("name", "resolution", "iterations"), [("stl10", 48, 800_000), ("celeba", 64, 400_000)])
def test_stl10_celeba_scale_grids(name: str, resolution: int, iterations: int) -> None:
    pts = _points(f"{name}-scale")
    assert {(p["normalizer"], p["scale"]) for p in pts} == {(n, c) for n in ("sn", "bsn") for c in SMALL_SCALES}
    assert {(p["dataset"], p["resolution"], p["iterations"]) for p in pts} == {(name, resolution, iterations)}
    assert {tuple(p["metrics"]) for p in pts} == {("fid",) if name == "celeba" else ("is", "fid")}


@pytest.mark.parametrize("dataset", ["cifar10", "stl10", "celeba"])
def test_optim_presets_have_the_five_settings(dataset: str) -> None:
    pts = _points(f"{dataset}-optim")
    assert len(pts) == 10
    assert {(p["lr_g"], p["lr_d"], p["beta2"], p["n_dis"]) for p in pts} == SETTINGS
    assert {p["normalizer"] for p in pts} == {"sn", "bsn"}
    assert {(p["scale"], p["beta1"]) for p in pts} == {(1.0, 0.5)}
    for p in pts:  # STL10: n_dis 1 runs 800k, n_dis 5 runs 400k; everything else 400k (App. Q.1)
        assert p["iterations"] == (800_000 if dataset == "stl10" and p["n_dis"] == 1 else 400_000)


def test_imagenet_resnet() -> None:
    pts = _points("imagenet-resnet")
    assert {(p["normalizer"], p["scale"]) for p in pts} == {(n, c) for n in ("sn", "bsn") for c in (1.0, 1.2, 1.4, 1.6)}
    p = pts[0]
    assert (p["model"], p["dataset"], p["resolution"], p["iterations"]) == (
        "sngan_resnet",
        "imagenet",
        128,
        500_000,
    )
    assert (p["lr_g"], p["lr_d"], p["beta1"], p["beta2"], p["n_dis"]) == (2e-4, 2e-4, 0.0, 0.9, 5)
    assert p["batch_size"] == 16  # the D batch; the paper's G batch is 32 (one field here)
    assert specmod.load("imagenet-resnet").seeds == [0, 1, 2]


def test_gamma_variants_span_datasets_settings_and_normalizers() -> None:
    pts = _points("gamma-variants")
    assert len(pts) == 60
    resolution = {"cifar10": 32, "stl10": 48, "celeba": 64}
    for p in pts:
        assert p["resolution"] == resolution[p["dataset"]] and p["data_root"].endswith(p["dataset"])
        assert p["loss"] == "wgan_gp" and p["gp_weight"] == 10.0 and p["scale"] == 1.0
        assert p["iterations"] == (800_000 if p["dataset"] == "stl10" and p["n_dis"] == 1 else 400_000)
    for ds in resolution:
        sub = [p for p in pts if p["dataset"] == ds]
        assert {(p["lr_g"], p["lr_d"], p["beta2"], p["n_dis"]) for p in sub} == SETTINGS
    normalizers = {p["normalizer"] for p in pts}
    assert normalizers == {"sn_gamma_same", "sn_gamma_diff", "bsn_gamma_same", "bsn_gamma_diff"}
    official = [p for p in pts if p["normalizer"].startswith("sn_")]
    assert len(official) * 5 == 150  # the released same_gamma + diff_gamma configs: 75 runs each


def test_figure_presets() -> None:
    snconv = _points("snconv-scale")
    assert {p["normalizer"] for p in snconv} == {"snconv"}
    assert sorted(p["scale"] for p in snconv) == SN_SCALES_CIFAR  # the same x axis as the SNw curve
    lecun = specmod.load("lecun-scale")
    assert lecun.objective.selection == "best" and lecun.objective.metric == "is"  # App. M.1
    scales = sorted(p["scale"] for p in _points("lecun-scale"))
    assert scales[0] == 0.1 and scales[-1] == 2.0 and 1.2 in scales and len(scales) == 13
    ratios = [b / a for a, b in zip(scales, scales[1:], strict=False)]
    assert all(1.2 < r < 1.4 for r in ratios)  # log-spaced
    no_sn = _points("no-sn")
    assert {(p["normalizer"], p["loss"]) for p in no_sn} == {("none", "hinge"), ("none", "wgan_gp")}


def test_paper_table1_is_the_union_of_the_scale_presets() -> None:
    table = {_key(p) for p in _points("paper-table1")}
    parts = set()
    for name in ("cifar10-scale", "stl10-scale", "celeba-scale", "imagenet-resnet"):
        parts |= {_key(p) for p in _points(name)}
    assert table == parts and len(table) == 82


def _key(p: dict) -> tuple:
    fields = ("dataset", "model", "resolution", "iterations", "batch_size", "lr_g", "lr_d", "beta1", "beta2",
              "n_dis", "normalizer", "scale", "loss")  # fmt: skip
    return tuple(p[f] for f in fields)


def test_presets_command_lists_them_all() -> None:
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == specmod.preset_names()
    for line in lines:
        name, trials = line.split()[:2]
        assert int(trials) == EXPECTED_TRIALS[name], line


def test_validate_json_for_a_preset() -> None:
    result = runner.invoke(app, ["validate", "cifar10-scale", "--json", "--no-data"])  # no CIFAR-10 here
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["name"] == "cifar10-scale" and summary["trials"] == 230
    assert summary["parameters"] == ["normalizer", "scale"]
    assert summary["inputs"]["files_checked"] is False
    # with the file checks (the default), the missing data and weights are named in one pass
    result = runner.invoke(app, ["validate", "cifar10-scale"])
    assert result.exit_code == 2
    named = [line.split(": ")[2] for line in result.output.splitlines()]
    assert named[:2] == ["train.data_root", "train.inception_weights"], result.output
    assert set(named[2:]) <= {"resources.gpus_per_trial", "resources.cpus_per_trial"}  # this machine's capacity


def test_iteration_totals() -> None:
    """``n_iterations`` counts each trial's own length (STL10 n_dis 1 blocks run 800k)."""
    assert specmod.load("stl10-optim").n_iterations == (8 * 800_000 + 2 * 400_000) * 5
    assert specmod.load("cifar10-scale").n_iterations == 230 * 400_000
    assert specmod.load("demo").n_iterations == 39 * 1000


def test_validate_checks_this_machine_unless_no_data(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU, whatever machine runs the test
    result = runner.invoke(app, ["validate", "cifar10-scale"])
    assert result.exit_code == 2
    assert "'cifar10-scale': resources.gpus_per_trial: 1 GPU(s) per trial but this machine has 0" in result.output
    assert "train.data_root" in result.output  # the inputs and the machine in one pass
    assert runner.invoke(app, ["validate", "cifar10-scale", "--no-data"]).exit_code == 0


def test_paper_presets_leave_large_scales_running() -> None:
    """The sweep hands trials an infinite threshold: only NaN/Inf stop a c = 10 run (|loss| ~ 3e6 at step 2)."""
    from sweeper.run.sweep import fixed_and_context

    for name in sorted(set(EXPECTED_TRIALS) - DEMOS):
        fixed, _ = fixed_and_context(specmod.load(name), 1)
        assert fixed["divergence_threshold"] == float("inf"), name


def test_a_finite_threshold_needs_stop_on_divergence() -> None:
    stop = "  device: cuda\n  divergence_threshold: 1.0e+4\n"
    text = specmod.preset_text("cifar10-scale").replace("  device: cuda\n", stop)
    with pytest.raises(specmod.SpecError, match=r"train.divergence_threshold: has no effect while `scheduler"):
        specmod.parse(text, "t")
    on = specmod.parse(text.replace("stop_on_divergence: false", "stop_on_divergence: true"), "t")
    from sweeper.run.sweep import fixed_and_context

    assert fixed_and_context(on, 1)[0]["divergence_threshold"] == 1e4  # the explicit option still works
