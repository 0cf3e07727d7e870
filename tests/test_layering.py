"""Layering: trainers/ is plain PyTorch; analysis code needs neither Ray nor torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

SERVICES = ("ray", "optuna", "mlflow", "pyarrow", "sweeper")


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    return set(out.stdout.split())


def test_trainers_imports_no_service_library():
    mods = _loaded(
        "import trainers, trainers.loop, trainers.normalizers, trainers.diagnostics, trainers.models.sngan_cnn,"
        " trainers.models.resnet, trainers.models.mlp, trainers.data, trainers.metrics, trainers.__main__"
    )
    assert not mods & set(SERVICES), mods & set(SERVICES)


@pytest.mark.parametrize("module", ["sweeper.analysis", "sweeper.report", "sweeper.results"])
def test_analysis_needs_no_ray_and_no_torch(module: str):
    mods = _loaded(f"import {module}")
    assert "ray" not in mods and "torch" not in mods


def test_cli_help_is_light():
    mods = _loaded("import sweeper.cli")
    assert not mods & {"ray", "torch", "mlflow", "optuna"}


def test_no_service_import_statement_in_trainers_sources():
    bad = []
    for path in (REPO / "trainers").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            s = line.strip()
            if s.startswith(("import ", "from ")) and s.split()[1].split(".")[0] in SERVICES:
                bad.append(f"{path.relative_to(REPO)}:{n}: {s}")
    assert not bad
