"""Layering: trainers/ is plain PyTorch; sweeper/ is stages that import one way; no cycles, no giant modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SERVICES = ("ray", "optuna", "mlflow", "pyarrow", "sweeper")

# What each sweeper stage may import of the others (sweeper/__init__.py draws the same picture).
# ``errors`` and ``about`` (versions, git commit) are leaves every stage may use.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "about": set(),
    "results": {"errors", "about"},
    "spec": {"errors", "about"},
    "analysis": {"errors", "about", "results"},
    "run": {"errors", "about", "spec", "results", "analysis"},
    "cli": {"errors", "about", "spec", "results", "analysis", "run"},
}
MAX_MODULE_LINES = 500


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    return set(out.stdout.split())


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of ``known`` that ``path`` imports anywhere (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t:
                found.add(t)
    return found


def test_trainers_imports_no_service_library():
    mods = _loaded(
        "import trainers, trainers.loop, trainers.normalizers, trainers.diagnostics, trainers.models.sngan_cnn,"
        " trainers.models.resnet, trainers.models.mlp, trainers.data, trainers.metrics, trainers.__main__,"
        " trainers.packed, trainers.packed_graph"
    )
    assert not mods & set(SERVICES), mods & set(SERVICES)


@pytest.mark.parametrize("module", ["sweeper.analysis", "sweeper.results"])
def test_analysis_needs_no_ray_and_no_torch(module: str):
    mods = _loaded(f"import {module}")
    assert not mods & {"ray", "torch", "mlflow", "optuna"}, mods


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


def test_sweeper_stages_import_one_way():
    mods = _modules("sweeper")
    stages = {m.split(".")[1] for m in mods if m.count(".") >= 1}
    assert stages == set(ALLOWED), f"every stage needs an ALLOWED entry: {stages ^ set(ALLOWED)}"
    bad = []
    for name, path in mods.items():
        if name == "sweeper":
            continue
        stage = name.split(".")[1]
        for target in _imports(path, mods):
            other = target.split(".")[1] if target != "sweeper" else None
            if other not in (None, stage) and other not in ALLOWED[stage]:
                bad.append(f"{name} imports {target} ({stage} may import {sorted(ALLOWED[stage]) or 'nothing'})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", ["sweeper", "trainers"])
def test_no_import_cycles(package: str):
    mods = _modules(package)
    edges = {
        m: {t for t in _imports(p, mods) if t != m and not m.startswith(t + ".") and not t.startswith(m + ".")}
        for m, p in mods.items()
    }
    # Tarjan's strongly connected components: any component of 2+ modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("package", ["sweeper", "trainers"])
def test_no_giant_modules(package: str):
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / package).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {long}"


@pytest.mark.parametrize(
    "command",
    [
        ["--help"],
        ["--version"],
        ["presets"],
        ["normalizers"],
        ["schema"],
        ["status"],
        ["validate", "demo", "--no-data"],
        ["validate", "demo"],
    ],
    ids=" ".join,
)
def test_commands_that_do_not_train_import_no_training_stack(command: list[str], tmp_path: Path):
    """They answer at once: no torch, Ray, MLflow or Optuna on the way (BENCHMARKS.md has their wall times)."""
    code = (  # the command's own output goes to /dev/null: only the module list is printed
        f"import contextlib, os\nos.chdir({str(tmp_path)!r})\nfrom sweeper.cli.app import app\n"
        "with open(os.devnull, 'w') as out, contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        f"    app(args={command!r}, standalone_mode=False)\n"
    )
    mods = _loaded(code)
    assert not mods & {"torch", "ray", "mlflow", "optuna"}, mods & {"torch", "ray", "mlflow", "optuna"}
