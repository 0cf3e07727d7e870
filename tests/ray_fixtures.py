"""Helpers for tests that start their own Ray processes on 127.0.0.1 (import them explicitly).

Rules these helpers enforce: every process binds to loopback only
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray use 127.0.0.1 as the node IP),
every port is a free one (no fixed defaults like 10001 or 52365 that collide
with other test runs), HOME and TMPDIR point into the test's tmp dir, and
everything is stopped by PID: the process tree of the ``ray start`` we launched
(Ray puts workers and job drivers in sessions of their own, so a process-group
kill is not enough), SIGTERM first, SIGKILL after a grace period. Never ``ray stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def isolated_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment for every Ray/MLflow process a test starts."""
    home = tmp / "home"
    (home / ".ray").mkdir(parents=True, exist_ok=True)
    tmpdir = tmp / "t"
    tmpdir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(
        HOME=str(home),
        TMPDIR=str(tmpdir),
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# --- processes ------------------------------------------------------------------------------------
def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it, whatever session or group they moved to."""
    kids = _children_map()
    seen, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(kids.get(p, []))
    return {p for p in seen if _start_time(p) is not None}


@dataclass
class ProcessTree:
    """Processes we started, tracked by (pid, start time) so a reused PID is never signalled."""

    root: int
    known: dict[int, int] = field(default_factory=dict)

    def refresh(self) -> set[int]:
        for p in descendants(self.root):
            st = _start_time(p)
            if st is not None:
                self.known.setdefault(p, st)
        return self.alive()

    def alive(self) -> set[int]:
        out = set()
        for p, st in self.known.items():
            if _start_time(p) == st:
                try:
                    state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
                except OSError:
                    continue
                if state != "Z":
                    out.add(p)
        return out

    def _signal(self, sig: int) -> None:
        for p in self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)

    def stop(self, grace_s: float = 5.0) -> set[int]:
        """SIGTERM the tree, SIGKILL what is left after ``grace_s``; returns survivors (should be empty)."""
        self.refresh()
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self.refresh()  # Ray may fork while shutting down: catch those too
            if not self.alive():
                return set()
            time.sleep(0.3)
        for _ in range(3):
            self.refresh()
            self._signal(signal.SIGKILL)
            time.sleep(0.5)
        return self.alive()


# --- sockets --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    pid: int
    name: str


def listeners(pids: set[int]) -> list[Listener]:
    """TCP listening sockets of ``pids`` from ``ss -ltnpH``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 6:
            continue
        local = cols[3]
        host, _, port = local.rpartition(":")
        host = host.strip("[]")
        for name, pid in re.findall(r'\("([^"]*)",pid=(\d+)', line):
            if int(pid) in pids:
                found.append(Listener(host, int(port), int(pid), name))
    return found


def non_loopback(pids: set[int]) -> list[Listener]:
    return [s for s in listeners(pids) if s.host not in LOOPBACK]


# --- a Ray head ------------------------------------------------------------------------------------
@dataclass
class RayHead:
    tree: ProcessTree
    proc: subprocess.Popen
    gcs_address: str
    dashboard_url: str
    env: dict[str, str]
    log: Path

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    """Until ``url`` answers any HTTP status (401 counts: the server is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.5)
    return False


@contextlib.contextmanager
def ray_head(
    tmp: Path, *, num_cpus: int = 2, token: str | None = None, timeout_s: float = 90
) -> Iterator[RayHead]:
    """``ray start --head --block`` on loopback with free ports; token auth on when ``token`` is given."""
    # Unix socket paths are limited to 107 bytes: Ray's session dir must live under a short path.
    short = Path(tempfile.mkdtemp(prefix="ray-"))
    env = isolated_env(tmp, TMPDIR=str(short))
    if token is not None:
        token_file = Path(env["HOME"]) / ".ray" / "auth_token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        env["RAY_AUTH_MODE"] = "token"
    else:
        env["RAY_AUTH_MODE"] = "disabled"
    (gcs, dash, client, agent_http, agent_grpc, metrics, rtenv, nm, om, m_auto, m_dash) = free_ports(11)
    # two metrics servers take fixed ports (44217, 44227) from the environment only
    env.update(AUTOSCALER_METRIC_PORT=str(m_auto), DASHBOARD_METRIC_PORT=str(m_dash))
    cmd = [
        str(VENV_BIN / "ray"), "start", "--head", "--block", f"--num-cpus={num_cpus}", "--num-gpus=0",
        f"--port={gcs}", "--node-ip-address=127.0.0.1",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={rtenv}", f"--node-manager-port={nm}", f"--object-manager-port={om}",
        f"--temp-dir={short / 'ray'}",
    ]  # fmt: skip
    log = tmp / "ray-head.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    tree = ProcessTree(proc.pid)
    head = RayHead(tree, proc, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", env, log)
    try:
        if not wait_http(f"{head.dashboard_url}/api/version", timeout_s, proc):
            raise RuntimeError(
                f"the Ray head did not serve its dashboard in {timeout_s:g} s:\n{head.log_tail()}"
            )
        deadline = time.monotonic() + timeout_s
        while not any(s.name == "raylet" for s in listeners(tree.refresh())):  # it binds after the dashboard
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the Ray head's raylet did not start:\n{head.log_tail()}")
            time.sleep(0.5)
        yield head
    finally:
        survivors = tree.stop()
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        shutil.rmtree(short, ignore_errors=True)
        if survivors:
            raise RuntimeError(f"Ray processes survived SIGKILL: {sorted(survivors)}")


# --- a multi-node cluster on one machine ------------------------------------------------------------
FAST_HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 2,
                      "health_check_timeout_ms": 1000}  # fmt: skip


@dataclass
class RayCluster:
    """A head and worker nodes (``ray.cluster_utils.Cluster``) run by one host process we started."""

    tree: ProcessTree
    proc: subprocess.Popen
    gcs_address: str
    nodes: list[dict]
    """Per node: ``role`` ("head"/"worker"), ``node_id``, ``pids`` ({process type: [pid]})."""
    env: dict[str, str]
    log: Path

    def node(self, role: str, index: int = 0) -> dict:
        return [n for n in self.nodes if n["role"] == role][index]

    def raylet_pid(self, role: str, index: int = 0) -> int:
        return self.node(role, index)["pids"]["raylet"][0]

    def log_tail(self, n: int = 40) -> str:
        return _tail(self.log, n)


@contextlib.contextmanager
def ray_cluster(
    tmp: Path,
    *,
    head_cpus: int = 1,
    workers: list[dict] | None = None,
    system_config: dict | None = None,
    timeout_s: float = 90,
) -> Iterator[RayCluster]:
    """A head (``head_cpus`` CPUs, no dashboard) plus one node per ``workers`` entry (``add_node`` kwargs).

    Everything runs in a host process of ours (``python ray_fixtures.py cluster``), so the
    cluster's processes are exactly that process's tree: loopback only, free ports (the
    fixed metrics/agent defaults 44217, 44227, 52365 are replaced), no token auth, HOME and
    TMPDIR private. ``RayCluster.env`` is the environment a driver must use to connect.
    """
    short = Path(tempfile.mkdtemp(prefix="ray-"))
    env = isolated_env(tmp, TMPDIR=str(short), RAY_AUTH_MODE="disabled")
    gcs, agent, m_auto, m_dash = free_ports(4)
    env.update(AUTOSCALER_METRIC_PORT=str(m_auto), DASHBOARD_METRIC_PORT=str(m_dash))
    config = {
        "head": {"num_cpus": head_cpus, "gcs_server_port": gcs, "dashboard_agent_listen_port": agent},
        "workers": [{"num_cpus": 1, **w} for w in (workers if workers is not None else [{}])],
        "system_config": system_config or {},
        "temp_dir": str(short / "ray"),
    }
    info = tmp / "ray-cluster.json"
    info.unlink(missing_ok=True)
    log = tmp / "ray-cluster.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "cluster", json.dumps(config), str(info)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    tree = ProcessTree(proc.pid)
    try:
        deadline = time.monotonic() + timeout_s
        while not info.exists():
            tree.refresh()
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the Ray cluster did not start in {timeout_s:g} s:\n{_tail(log)}")
            time.sleep(0.5)
        data = json.loads(info.read_text())
        tree.refresh()
        yield RayCluster(tree, proc, data["gcs_address"], data["nodes"], env, log)
    finally:
        survivors = tree.stop()
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        shutil.rmtree(short, ignore_errors=True)
        if survivors:
            raise RuntimeError(f"Ray processes survived SIGKILL: {sorted(survivors)}")


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _cluster_main(config: dict, info: Path) -> None:
    """The host process of ``ray_cluster``: start the nodes, publish their ids and PIDs, wait."""
    from ray.cluster_utils import Cluster

    common = {"node_ip_address": "127.0.0.1", "temp_dir": config["temp_dir"]}
    cluster = Cluster(
        initialize_head=True,
        shutdown_at_exit=False,  # the test stops our whole process tree by PID
        head_node_args={**common, "include_dashboard": False, **config["head"],
                        "_system_config": config["system_config"]},
    )  # fmt: skip
    nodes = [("head", cluster.head_node)]
    for w in config["workers"]:
        nodes.append(("worker", cluster.add_node(**common, **w)))
    cluster.wait_for_nodes()
    data = {
        "gcs_address": cluster.gcs_address,
        "nodes": [
            {"role": role, "node_id": n.node_id,
             "pids": {kind: [p.process.pid for p in procs] for kind, procs in n.all_processes.items()}}
            for role, n in nodes
        ],
    }  # fmt: skip
    tmp = info.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(info)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "cluster":
        _cluster_main(json.loads(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(f"usage: {sys.argv[0]} cluster CONFIG_JSON INFO_PATH")
