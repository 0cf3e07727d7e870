"""cluster.yaml (Ray cluster launcher) and docs/kuberay-rayjob.yaml: valid, pinned, and locked down.

Offline checks: the launcher's own JSON schema (shipped in the ray wheel) and its
config validation, then the properties we rely on: token auth on every node with
the same token file, dashboard and MLflow on 127.0.0.1, current rayproject/ray
images of the installed Ray version (never the frozen ray-ml), the project's pins
in the install command, results on storage every node mounts.
"""

from __future__ import annotations

import json
import re
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster.yaml"
RAYJOB = REPO / "docs" / "kuberay-rayjob.yaml"


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER.read_text())


def all_commands(cfg: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")  # fmt: skip
    return [c for k in keys for c in cfg.get(k) or []]


def ray_starts(cmds: list[str]) -> list[str]:
    return [c for c in cmds if re.search(r"\bray start\b", c)]


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            out[name.lower()] = version
    return out


# --- validity --------------------------------------------------------------------------------------
def test_matches_the_launcher_schema_of_the_installed_ray(cfg: dict[str, Any]) -> None:
    schema = json.loads((resources.files("ray.autoscaler") / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)


def test_passes_the_launchers_own_validation(cfg: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(json.loads(json.dumps(cfg)))  # fills the AWS defaults, as `ray up` does
    validate_config(full)
    assert full["head_node_type"] in full["available_node_types"]


def test_file_mount_sources_exist(cfg: dict[str, Any]) -> None:
    for remote, local in cfg["file_mounts"].items():
        if local.startswith("~"):
            continue  # the user's token, made by `ray get-auth-token --generate`
        assert (REPO / local).exists(), f"file_mounts {remote}: {local} missing in the repo"
    assert ".venv" in cfg["rsync_exclude"]


# --- node types --------------------------------------------------------------------------------------
def test_node_types(cfg: dict[str, Any]) -> None:
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]["node_config"]
    assert "InstanceMarketOptions" not in head, "the head must be on-demand"
    spot = [
        t
        for t in types.values()
        if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    ]
    assert spot and all(t["node_config"]["InstanceType"].startswith("g5.") for t in spot)
    on_demand_gpu = [t for n, t in types.items() if n != cfg["head_node_type"] and t not in spot]
    assert any(t["node_config"]["InstanceType"] == "g5.12xlarge" for t in on_demand_gpu)


# --- security --------------------------------------------------------------------------------------
def test_token_auth_on_every_node_with_one_token_file(cfg: dict[str, Any]) -> None:
    run_options = " ".join(cfg["docker"]["run_options"])  # applies to head and workers
    assert "-e RAY_AUTH_MODE=token" in run_options
    starts = ray_starts(all_commands(cfg))
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts), starts
    token_path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", run_options).group(1)
    mounted = {remote.replace("~", "/home/ray", 1): local for remote, local in cfg["file_mounts"].items()}
    assert mounted.get(token_path) == "~/.ray/auth_token", "every node must get the same token file"
    assert not any("RAY_AUTH_MODE=disabled" in c for c in all_commands(cfg))


def test_dashboard_and_mlflow_listen_on_loopback_only(cfg: dict[str, Any]) -> None:
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in CLUSTER.read_text()
    mlflow = next(c for c in cfg["head_start_ray_commands"] if "mlflow server" in c)
    argv = shlex.split(mlflow[mlflow.index("mlflow server") :].split(">")[0])
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--workers") + 1] == "1"
    assert argv[argv.index("--backend-store-uri") + 1].startswith("sqlite:////")
    assert argv[argv.index("--artifacts-destination") + 1].startswith("s3://")
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in mlflow
    assert "pkill" not in head_start and "killall" not in head_start


def test_images_are_current_rayproject_ray(cfg: dict[str, Any]) -> None:
    docker = cfg["docker"]
    images = [docker[k] for k in ("image", "head_image", "worker_image") if k in docker]
    images += [t.get("docker", {}).get("worker_image") for t in cfg["available_node_types"].values()]
    images = [i for i in images if i]
    assert images
    for image in images:
        assert "ray-ml" not in image, f"{image}: rayproject/ray-ml is frozen at 2.30"
        repo, _, tag = image.partition(":")
        assert repo == "rayproject/ray"
        assert re.fullmatch(rf"{re.escape(ray.__version__)}-py311-(cpu|gpu|cu\d{{3}})", tag), image
    assert re.search(r"-cu\d{3}$", docker["worker_image"]), "GPU workers need a CUDA image"


def test_install_uses_the_project_pins(cfg: dict[str, Any]) -> None:
    install = next(c for c in cfg["setup_commands"] if "pip install" in c)
    assert "-c .ci/constraints.txt" in install and "-e ." in install
    p = pins()
    for pkg in ("torch", "torchvision", "ray"):
        assert re.search(rf"{pkg}(\[[^\]]*\])?=={re.escape(p[pkg])}\b", install), (pkg, install)
    assert p["torch"] == "2.14.1" and p["torchvision"] == "0.29.1" and p["ray"] == ray.__version__


def test_results_storage_is_shared_and_tracking_is_exported(cfg: dict[str, Any]) -> None:
    run_options = cfg["docker"]["run_options"]
    assert "-v /mnt/snsweep:/mnt/snsweep" in run_options
    assert any("/mnt/snsweep" in c and "mount" in c for c in cfg["initialization_commands"])
    assert "-e MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in cfg["docker"]["head_run_options"]


# --- KubeRay ---------------------------------------------------------------------------------------
def test_kuberay_rayjob_runs_the_same_entrypoint() -> None:
    from sweeper.spec import preset_names

    job = yaml.safe_load(RAYJOB.read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:5] == ["python", "-m", "sweeper.cli", "--address", "auto"]
    assert argv[argv.index("run") + 1] in preset_names() and "--resume-if-exists" in argv
    assert argv[argv.index("--results-dir") + 1].startswith("/mnt/snsweep/")
    cluster_spec = spec["rayClusterSpec"]
    assert cluster_spec["rayVersion"] == ray.__version__
    assert cluster_spec["authOptions"]["mode"] == "token"
    pods = [cluster_spec["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster_spec["workerGroupSpecs"]
    ]
    for pod in pods:
        for c in pod["spec"]["containers"]:
            assert "ray-ml" not in c["image"]
            assert any(m["mountPath"] == "/mnt/snsweep" for m in c["volumeMounts"])
