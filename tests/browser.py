"""A headless Chromium driven over the DevTools protocol: enough to check what a page renders.

No browser automation package: Chromium (Debian's ``chromium``) is started with
``--remote-debugging-port`` on 127.0.0.1, a fresh profile and everything that phones home turned
off, and spoken to over its WebSocket with aiohttp (already installed: Ray's dashboard needs it).
The process is stopped by PID (its whole tree), never by name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--mute-audio",
    "--disable-dev-shm-usage", "--disable-site-isolation-trials",
    # sandboxed frames (MLflow shows HTML artifacts in one) stay in the page's process, so the
    # DevTools DOM can read them
    "--disable-features=Translate,MediaRouter,OptimizationHints,site-per-process,IsolateOrigins",
    "--metrics-recording-only", "--remote-debugging-address=127.0.0.1",
]  # fmt: skip


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class Page:
    """One browser tab: navigate, evaluate JavaScript, wait for a condition, take screenshots."""

    def __init__(self, ws_url: str, loop: asyncio.AbstractEventLoop):
        import aiohttp

        async def connect() -> tuple[Any, Any]:
            session = aiohttp.ClientSession()  # needs the running loop
            return session, await session.ws_connect(ws_url, max_msg_size=0)

        self._loop = loop
        self._session, self._ws = self._run(connect())
        self._next = 0
        self.console: list[str] = []

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    async def _call(self, method: str, params: dict[str, Any] | None, timeout_s: float) -> dict[str, Any]:
        self._next += 1
        mid = self._next
        await self._ws.send_str(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout_s
        while True:
            msg = await self._ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            data = json.loads(msg.data)
            if data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            if data.get("id") == mid:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})

    def call(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 60) -> dict[str, Any]:
        return self._run(self._call(method, params, timeout_s))

    def evaluate(self, expression: str, timeout_s: float = 30) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        out = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout_s,
        )
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression[:80]}: {out['exceptionDetails'].get('text')}")
        return out.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        """Load ``url`` afresh: a new hash on the same page would only be a same-document navigation,
        which single-page apps may answer from stale state."""
        self.call("Page.navigate", {"url": "about:blank"})
        self.call("Page.navigate", {"url": url})

    def wait_for(self, expression: str, timeout_s: float = 60, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy; its value. Fails with the page's text."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                value = self.evaluate(expression)
                if value:
                    return value
            time.sleep(0.25)
        text = self.evaluate("document.body ? document.body.innerText.slice(0, 1500) : ''")
        raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what or expression}; page:\n{text}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._ws.close())
        with contextlib.suppress(Exception):
            self._run(self._session.close())


@contextlib.contextmanager
def chromium(binary: str, port: int, size: tuple[int, int] = (1440, 900)) -> Iterator[Page]:
    """A headless Chromium on 127.0.0.1:``port`` with a throwaway profile; yields its one page."""
    from ray_fixtures import ProcessTree

    profile = Path(tempfile.mkdtemp(prefix="sns-chromium-"))
    cmd = [binary, *FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
           f"--window-size={size[0]},{size[1]}", "about:blank"]  # fmt: skip
    log = open(profile.with_suffix(".log"), "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    tree = ProcessTree(proc.pid)
    loop = asyncio.new_event_loop()
    page = None
    try:
        ws_url = _page_socket(port, proc, timeout_s=60)
        page = Page(ws_url, loop)
        tree.refresh()  # Chromium's helpers (zygote, renderer, network): known by PID from now on
        page.call("Page.enable")
        page.call("Runtime.enable")
        page.call("Emulation.setDeviceMetricsOverride",
                  {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
        yield page
    finally:
        if page is not None:
            page.close()
        loop.close()
        survivors = tree.stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
        profile.with_suffix(".log").unlink(missing_ok=True)
        if survivors:
            raise RuntimeError(f"chromium processes survived SIGKILL: {sorted(survivors)}")


def _page_socket(port: int, proc: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode} before serving DevTools")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"chromium did not serve DevTools on 127.0.0.1:{port} in {timeout_s:g} s")
