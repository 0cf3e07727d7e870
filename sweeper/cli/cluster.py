"""Run a sweep on a Ray cluster as a Ray Job (``sweeper submit``).

The sweep's driver (``sweeper run``) runs on the cluster's head node as the
job's entrypoint; this machine only uploads code and the sweep file and can go
away. What travels is exactly the code that runs here: the ``sweeper``,
``trainers`` and ``search_spaces`` packages are staged into a temporary
``working_dir`` with the sweep file, so a job never runs a stale copy installed
on the cluster (the cluster provides the dependencies: torch, ray, mlflow).

Contracts with the cluster (see docs/CLUSTER.md):

* ``results_dir`` is an absolute path on the head node (the job runs in a
  temporary directory that Ray deletes); with worker nodes it must be storage
  every node mounts at the same path, because Tune persists trial checkpoints
  under it from the node that runs the trial.
* ``tracking_uri=None`` means the cluster's default: ``$MLFLOW_TRACKING_URI``
  of the head node (cluster.yaml points it at the MLflow server on the head),
  else a SQLite file in the results dir. The entrypoint is a shell command, so
  the variable is expanded on the head, not here.
* The entrypoint resumes the sweep when its Tune state exists (``sweeper run
  SPEC --resume-if-exists``), so submitting the same sweep again after a head
  restart continues it instead of failing.
* Token auth: the dashboard's REST API answers 401 without a token. The token
  comes from ``$RAY_AUTH_TOKEN``, the file ``$RAY_AUTH_TOKEN_PATH``, or
  ``~/.ray/auth_token`` (the order Ray itself uses) and is sent as
  ``Authorization: Bearer``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from sweeper.errors import SweepError

PACKAGES = ("sweeper", "trainers", "search_spaces")
"""Shipped in the job's working_dir: the code the job runs."""
EXCLUDES = [".venv", "results", "mlruns", "mlartifacts", "*.db", ".git", "__pycache__", "*.pyc"]
SPEC_DIR = "_snsweep_spec"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
DEFAULT_TIMEOUT_S = 10.0
_ENV_LOCK = threading.Lock()


# --- address and token ---------------------------------------------------------------------------
def normalize_address(address: str) -> str:
    """``http://HOST:PORT`` of the dashboard; a bare ``HOST:PORT`` gets ``http://``."""
    address = (address or "").strip().rstrip("/")
    if not address:
        raise SweepError(
            "no Ray dashboard address: pass --address http://HEAD:8265 (or set SNSWEEP_RAY_ADDRESS)"
        )
    if address.startswith("ray://"):
        raise SweepError(
            f"{address} is a Ray Client address; `sweeper submit` uses Ray Jobs on the dashboard port: "
            "--address http://HEAD:8265"
        )
    if "://" not in address:
        address = f"http://{address}"
    if not address.startswith(("http://", "https://")):
        raise SweepError(f"--address must be http://HOST:PORT of the Ray dashboard, got {address!r}")
    return address


def read_token(env: dict[str, str] | None = None) -> tuple[str | None, str | None]:
    """(token, where it came from), looked up in Ray's own order; (None, None) when there is none."""
    env = dict(os.environ) if env is None else env
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return env["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    candidates = []
    if env.get("RAY_AUTH_TOKEN_PATH"):
        candidates.append(Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser())
    home = env.get("HOME")
    candidates.append((Path(home) if home else Path.home()) / ".ray" / "auth_token")
    for path in candidates:
        try:
            token = path.read_text().strip()
        except OSError:
            continue
        if token:
            return token, str(path)
    return None, None


def auth_headers(env: dict[str, str] | None = None) -> dict[str, str]:
    token, _ = read_token(env)
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.contextmanager
def _explicit_address() -> Iterator[None]:
    """JobSubmissionClient prefers $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS over its argument
    (inside a Ray job RAY_ADDRESS is the GCS address): hide them so --address wins."""
    with _ENV_LOCK:
        saved = {k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if k in os.environ}
        try:
            yield
        finally:
            os.environ.update(saved)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def check_dashboard(address: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """GET /api/version with a timeout (Ray's client has none); one clear SweepError per problem."""
    import requests

    url = normalize_address(address)
    try:
        r = requests.get(f"{url}/api/version", headers=auth_headers(), timeout=timeout_s)
    except requests.exceptions.RequestException as e:
        reason = type(e).__name__
        if isinstance(e, requests.exceptions.ConnectionError) and "refused" in str(e).lower():
            reason = "connection refused"
        elif isinstance(e, requests.exceptions.Timeout):
            reason = f"no answer in {timeout_s:g} s"
        raise SweepError(f"cannot reach the Ray dashboard at {url} ({reason}); check --address") from None
    if r.status_code in (401, 403):
        token, source = read_token()
        have = f"the token from {source} was rejected" if token else "no token found"
        raise SweepError(
            f"the Ray dashboard at {url} requires token auth ({r.status_code}: {have}); set "
            "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token to the cluster's token "
            "(`ray get-auth-token` on the head prints it)"
        )
    if r.status_code != 200:
        raise SweepError(
            f"cannot reach the Ray dashboard at {url} (HTTP {r.status_code} from /api/version); "
            "check --address"
        )
    try:
        return str(r.json()["ray_version"])
    except (ValueError, KeyError, TypeError):
        raise SweepError(
            f"cannot reach the Ray dashboard at {url} (/api/version is not Ray's answer); check --address"
        ) from None


def client(address: str) -> Any:
    """A JobSubmissionClient for ``address`` with the auth header; SweepError when unusable."""
    from ray.job_submission import JobSubmissionClient

    url = normalize_address(address)
    check_dashboard(url)
    try:
        with _explicit_address():
            return JobSubmissionClient(url, headers=auth_headers())
    except Exception as e:  # noqa: BLE001 - every failure here is "cannot use this address"
        raise SweepError(
            f"cannot reach the Ray dashboard at {url} ({_one_line(e)}); check --address"
        ) from None


# --- staging ---------------------------------------------------------------------------------------
def _package_dir(name: str) -> Path:
    found = importlib.util.find_spec(name)
    if found is None or not found.submodule_search_locations:
        raise SweepError(f"cannot find the {name!r} package to upload; is snsweep installed?")
    return Path(next(iter(found.submodule_search_locations)))


def stage(spec: str, dest: Path) -> str:
    """Copy the code and the sweep file into ``dest``; returns the spec argument for the job.

    The sweep file is validated here first, so a broken file fails before any upload.
    """
    from sweeper import spec as specmod

    loaded = specmod.load(spec)
    for name in PACKAGES:
        shutil.copytree(
            _package_dir(name), dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
        )
    if specmod.resolve_source(spec)[0].startswith("preset "):
        return spec
    target = dest / SPEC_DIR / f"{loaded.name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec, target)
    return str(PurePosixPath(SPEC_DIR, target.name))


def entrypoint(
    spec_arg: str,
    *,
    results_dir: str,
    tracking_uri: str | None,
    extra_args: list[str] | tuple[str, ...] = (),
    resume_if_exists: bool = True,
    optuna_storage: str | None = None,
) -> str:
    """The job's shell command: ``python -m sweeper.cli --address auto ... run SPEC``.

    ``--address auto`` connects the driver to the job's cluster ($RAY_ADDRESS): without it
    ``sweeper run`` would start a second, local Ray inside the job.
    """
    q = shlex.quote
    if tracking_uri is None:
        fallback = f"sqlite:///{PurePosixPath(results_dir, 'mlflow.db')}"
        tracking = f'"${{MLFLOW_TRACKING_URI:-{fallback}}}"'  # expanded by the head's shell
    else:
        tracking = q(tracking_uri)
    parts = [
        "python -m sweeper.cli --address auto",
        f"--results-dir {q(results_dir)}",
        f"--tracking-uri {tracking}",
        *([f"--optuna-storage {q(optuna_storage)}"] if optuna_storage else []),  # else the head decides
        f"run {q(spec_arg)}",
    ]
    if resume_if_exists and "--overwrite" not in extra_args:  # --overwrite asks for a fresh start
        parts.append("--resume-if-exists")
    parts += [q(a) for a in extra_args]
    return " ".join(parts)


def _check_results_dir(results_dir: str) -> str:
    if "://" in results_dir:
        raise SweepError(
            f"--results-dir {results_dir}: results are written by the job's driver to a filesystem path; "
            "use shared storage mounted on every node (e.g. /mnt/snsweep/results) and sync it to S3 yourself"
        )
    if not PurePosixPath(results_dir).is_absolute():
        raise SweepError(
            f"--results-dir must be an absolute path on the cluster's head node (the job runs in a temporary "
            f"directory), got {results_dir!r}; e.g. --results-dir /mnt/snsweep/results"
        )
    return results_dir


def _check_optuna_storage(url: str) -> str:
    from sweeper.spec.study_url import url_problem

    problem = url_problem(url)
    if problem:
        raise SweepError(f"--optuna-storage {problem}")
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        raise SweepError(
            f"--optuna-storage {url}: the job runs in a temporary directory; give the head's absolute path, "
            "e.g. sqlite:////mnt/snsweep/results/optuna.db"
        )
    return url


def _submission_id(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:40]
    return f"snsweep-{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


# --- the API ---------------------------------------------------------------------------------------
def submit(
    spec_path_or_preset: str,
    address: str,
    *,
    results_dir: str,
    tracking_uri: str | None,
    extra_args: list[str],
    resume_if_exists: bool = True,
    optuna_storage: str | None = None,
) -> str:
    """Submit the sweep as a Ray Job; returns the job (submission) id."""
    from sweeper import spec as specmod
    from sweeper.spec import preflight

    results_dir = _check_results_dir(str(results_dir))
    if optuna_storage:
        optuna_storage = _check_optuna_storage(optuna_storage)
    label, text = specmod.resolve_source(spec_path_or_preset)
    loaded = specmod.parse(text, label)  # user errors (SpecError) before any network call
    # Data roots and weights are paths on the cluster: only the rules without files run here; the
    # job's `sweeper run` checks the files on the head node before its sweep starts.
    preflight.check(loaded, label, files=False)
    name = loaded.name
    c = client(address)
    with tempfile.TemporaryDirectory(prefix="snsweep-job-") as tmp:
        spec_arg = stage(spec_path_or_preset, Path(tmp))
        command = entrypoint(
            spec_arg, results_dir=results_dir, tracking_uri=tracking_uri, extra_args=list(extra_args),
            resume_if_exists=resume_if_exists, optuna_storage=optuna_storage,
        )  # fmt: skip
        runtime_env = {
            "working_dir": tmp,
            "excludes": EXCLUDES,
            "env_vars": {"PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"},
        }
        try:
            return c.submit_job(
                entrypoint=command,
                runtime_env=runtime_env,
                submission_id=_submission_id(name),
                metadata={"snsweep.sweep": name, "snsweep.spec": str(spec_path_or_preset)},
            )
        except Exception as e:  # noqa: BLE001
            raise SweepError(
                f"the Ray cluster at {normalize_address(address)} refused the job: {_one_line(e)}"
            ) from None


def _job_call(address: str, job_id: str, what: str, fn: Any) -> Any:
    c = client(address)
    try:
        return fn(c)
    except Exception as e:  # noqa: BLE001
        msg = _one_line(e)
        if "404" in msg or "does not exist" in msg.lower():
            raise SweepError(
                f"no job {job_id!r} on the Ray cluster at {normalize_address(address)}"
            ) from None
        raise SweepError(f"cannot get the {what} of job {job_id!r}: {msg}") from None


def job_status(address: str, job_id: str) -> str:
    """PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED."""
    status = _job_call(address, job_id, "status", lambda c: c.get_job_status(job_id))
    return str(getattr(status, "value", status))


def job_logs(address: str, job_id: str) -> str:
    """The job's driver output so far (the sweep's progress lines)."""
    return str(_job_call(address, job_id, "logs", lambda c: c.get_job_logs(job_id)))


def job_message(address: str, job_id: str) -> str:
    """Ray's one-line reason for the job's state (e.g. why it failed), or ''."""
    info = _job_call(address, job_id, "info", lambda c: c.get_job_info(job_id))
    return str(getattr(info, "message", "") or "")


def wait(address: str, job_id: str, *, timeout_s: float, poll_s: float = 2.0) -> str:
    """Poll until the job ends or ``timeout_s`` passes; returns the last status."""
    deadline = time.monotonic() + timeout_s
    status = job_status(address, job_id)
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(poll_s)
        status = job_status(address, job_id)
    return status


def follow_hint(address: str, job_id: str) -> str:
    """The command that streams the job's output (Ray's CLI needs RAY_AUTH_MODE=token to send the token)."""
    token, _ = read_token()
    prefix = "RAY_AUTH_MODE=token " if token else ""
    url = shlex.quote(normalize_address(address))
    return f"{prefix}ray job logs --address {url} --follow {shlex.quote(job_id)}"


__all__ = [
    "submit",
    "job_status",
    "job_logs",
    "job_message",
    "wait",
    "follow_hint",
    "entrypoint",
    "read_token",
]
