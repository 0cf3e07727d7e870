"""`sweeper ui` as a new user meets it, in headless Chromium: what the pages render, and screenshots.

Used by the browser test (tests/test_e2e_sweep.py) and, to refresh the README's screenshots
from a real demo sweep, as a script:

    sweeper run --overwrite                       # README command 1, in some folder DIR
    python tests/ui_pages.py DIR --out docs/img  # runs-table.png, trial-curves.png

Everything binds to 127.0.0.1 on free ports; the UI server and Chromium are stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from browser import Page, chromium, find_chromium
from ray_fixtures import ProcessTree, free_ports, non_loopback, wait_http

REPO = Path(__file__).resolve().parents[1]

RUN_NAME = 'attributes.`Run Name`'
CLOSE_ASSISTANT = """(() => {
  const b = document.querySelector('[data-component-id="mlflow.assistant.chat_panel.close"]');
  if (b) { b.click(); return true } return false })()"""
ROWS = f"""[...document.querySelectorAll('[role=row]')].map(r => r.querySelector('[col-id="{RUN_NAME}"]'))
  .filter(c => c && c.querySelector('a[href*="/runs/"]'))
  .map(c => {{ const a = c.querySelector('a[href*="/runs/"]'), pad = c.querySelector('[style*="width"]');
    return {{name: a.innerText.trim(), href: a.getAttribute('href'), indent: pad ? parseInt(pad.style.width) : 0,
             expander: Boolean(c.querySelector('button'))}} }})"""
COL_ID = "h => h.getAttribute('col-id')"
IMAGES = "[...document.images].filter(i => i.complete && i.naturalWidth > 0)"


@dataclass
class UI:
    base: str
    """http://127.0.0.1:PORT/"""
    link: str
    """What `sweeper ui` printed for the sweep."""
    stdout: str
    pids: set[int]


@contextlib.contextmanager
def sweeper_ui(workdir: Path, timeout_s: float = 180) -> Iterator[UI]:
    """`sweeper ui --port P` in ``workdir`` (its ./mlflow.db), until its link is printed and /health answers."""
    (port,) = free_ports(1)
    home = Path(workdir) / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeper.cli", "ui", "--port", str(port)], cwd=workdir, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    tree = ProcessTree(proc.pid)
    lines: list[str] = []
    try:
        link = None
        deadline = time.monotonic() + timeout_s
        while link is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"(http://127\.0\.0\.1:\d+/#/experiments/\S+)", line):
                link = m.group(1)
        if link is None:
            raise RuntimeError("`sweeper ui` printed no link to a sweep:\n" + "".join(lines))
        base = f"http://127.0.0.1:{port}/"
        if not wait_http(base + "health", timeout_s, proc):
            raise RuntimeError("the MLflow UI did not answer /health:\n" + "".join(lines) + _drain(proc))
        yield UI(base=base, link=link, stdout="".join(lines), pids=tree.refresh())
    finally:
        survivors = tree.stop()
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)
        if survivors:
            raise RuntimeError(f"MLflow UI processes survived SIGKILL: {sorted(survivors)}")


def _drain(proc: subprocess.Popen) -> str:
    with contextlib.suppress(Exception):
        proc.terminate()
        return proc.stdout.read()[-3000:]
    return ""


def open_landing(page: Page, ui: UI) -> dict[str, Any]:
    """The printed link, as it renders: the URL it settles on, the table's rows, the run count."""
    page.goto(ui.link)
    page.wait_for("document.body.innerText.includes('matching runs')", 120, "the runs table")
    page.wait_for(f"({ROWS}).length > 0", 30, "a run in the table")
    time.sleep(1)  # the shared view applies its columns after the first render
    page.evaluate(CLOSE_ASSISTANT)  # MLflow 3.17 opens its GenAI assistant once per browser
    return {
        "href": page.evaluate("location.href"),
        "rows": page.evaluate(ROWS),
        "count": page.evaluate("(document.body.innerText.match(/(\\d+) matching runs/) || [])[1]"),
        "columns": table_columns(page),
        "text": page.evaluate("document.body.innerText"),
    }


def table_columns(page: Page) -> list[str]:
    """Every column id of the runs table (``params.`scale```), scrolling it sideways: AG Grid renders
    only the columns in view."""
    seen: list[str] = []
    scroller = "document.querySelector('.ag-body-horizontal-scroll-viewport')"
    for _ in range(50):
        ids = page.evaluate(f"[...document.querySelectorAll('.ag-header-cell[col-id]')].map({COL_ID})")
        for col in ids:
            if col not in seen:
                seen.append(col)
        moved = page.evaluate(f"""(s => {{ if (!s) return false; const before = s.scrollLeft;
            s.scrollLeft = before + s.clientWidth * 0.8; s.dispatchEvent(new Event('scroll'));
            return s.scrollLeft > before }})({scroller})""")
        if not moved:
            break
        time.sleep(0.3)
    page.evaluate(f"(s => {{ if (s) {{ s.scrollLeft = 0; s.dispatchEvent(new Event('scroll')) }} }})({scroller})")
    time.sleep(0.3)
    return seen


def expand_parent(page: Page, parent: str, children: int) -> list[dict[str, Any]]:
    """Click the parent row's expander; the rows once its ``children`` nested trials show."""
    page.evaluate(f"""(() => {{ const a = [...document.querySelectorAll('[col-id="{RUN_NAME}"] a[href*="/runs/"]')]
        .find(a => a.innerText.trim() === {parent!r});
        a.closest('[col-id="{RUN_NAME}"]').querySelector('button').click(); return true }})()""")
    page.wait_for(f"({ROWS}).length >= {children + 1}", 30, f"{children} nested trials")
    time.sleep(0.5)
    return page.evaluate(ROWS)


def open_run(page: Page, ui: UI, href: str, tab: str = "") -> None:
    page.goto(ui.base + href + (f"/{tab}" if tab else "") + "?workflowType=machine_learning")


def run_params(page: Page) -> dict[str, str]:
    """The run page's Parameters table as name -> shown value."""
    page.wait_for("document.body.innerText.includes('Parameters (')", 60, "the run's parameters")
    page.evaluate(CLOSE_ASSISTANT)
    text = page.evaluate("document.body.innerText")
    block = text.split("Parameters (", 1)[1].split("\n", 1)[1]
    for end in ("Logged models (", "About this run"):
        block = block.split(end, 1)[0]
    lines = [ln.strip() for ln in block.split("\n") if ln.strip()]
    lines = lines[lines.index("Value") + 1 :] if "Value" in lines else lines
    return dict(zip(lines[0::2], lines[1::2], strict=False))


def show_curves(page: Page, metric: str) -> dict[str, Any]:
    """The run's Model metrics tab filtered to ``metric``: chart titles and the sample-grid card."""
    page.wait_for("!!document.querySelector('input[placeholder*=\"Search metric\"]')", 60, "the metric charts")
    page.evaluate(CLOSE_ASSISTANT)
    page.evaluate("document.querySelector('input[placeholder*=\"Search metric\"]').focus()")
    page.call("Input.insertText", {"text": metric})
    page.wait_for(f"document.body.innerText.includes('({metric})')", 30, f"a {metric} chart")
    # MLflow's image cards open at step 0, before any evaluation: move the step slider to the last one
    page.wait_for("!!document.querySelector('[role=slider]')", 30, "the sample grid's step slider")
    page.evaluate("document.querySelector('[role=slider]').focus()")
    at = "(s => s.getAttribute('aria-valuenow') === s.getAttribute('aria-valuemax'))"
    at += "(document.querySelector('[role=slider]'))"
    for _ in range(100):  # one logged step per key press (End is not bound)
        if page.evaluate(at):
            break
        for kind in ("keyDown", "keyUp"):
            page.call("Input.dispatchKeyEvent", {"type": kind, "key": "ArrowRight", "code": "ArrowRight",
                                                 "windowsVirtualKeyCode": 39, "nativeVirtualKeyCode": 39})  # fmt: skip
    grids = f"{IMAGES}.filter(i => i.src.includes('get-artifact'))"
    page.wait_for(f"{grids}.length > 0", 30, "the last sample grid")
    page.evaluate(f"{grids}[0].scrollIntoView({{block: 'end'}})")  # below the card's list of params
    time.sleep(1)
    return {
        "text": page.evaluate("document.body.innerText"),
        "images": page.evaluate(f"{grids}.map(i => [i.naturalWidth, i.naturalHeight])"),
    }


def artifact_image(page: Page, ui: UI, href: str, path: str) -> list[int]:
    """An image artifact opened in the run's Artifacts tab: its decoded size in the page."""
    page.goto(f"{ui.base}{href}/artifacts/{path}?workflowType=machine_learning")
    blobs = f"{IMAGES}.filter(i => i.src.startsWith('blob:'))"
    page.wait_for(f"{blobs}.length > 0", 60, f"the image {path}")
    return page.evaluate(f"{blobs}.map(i => [i.naturalWidth, i.naturalHeight])[0]")


def artifact_html(page: Page, ui: UI, href: str, path: str) -> str:
    """An HTML artifact opened in the Artifacts tab: the text of the (sandboxed) frame it renders in.

    The frame is sandboxed, so the page's scripts cannot read it; the DevTools DOM, which pierces
    frames, can."""
    page.goto(f"{ui.base}{href}/artifacts/{path}?workflowType=machine_learning")
    page.wait_for("!!document.querySelector('iframe')", 60, f"the frame of {path}")
    deadline = time.monotonic() + 30
    while True:
        text = _frame_text(page.call("DOM.getDocument", {"depth": -1, "pierce": True})["root"])
        if text.strip() or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def _frame_text(node: dict[str, Any], inside: bool = False) -> str:
    """The text of every document inside an iframe under ``node`` (the DevTools DOM tree)."""
    parts = []
    if inside and node.get("nodeType") == 3:
        parts.append(node.get("nodeValue", ""))
    for child in node.get("children", []):
        parts.append(_frame_text(child, inside))
    if node.get("nodeName") == "IFRAME" and "contentDocument" in node:
        parts.append(_frame_text(node["contentDocument"], True))
    return " ".join(p for p in parts if p.strip())


def fetch(ui: UI, run_id: str, path: str) -> tuple[int, bytes]:
    """GET an artifact the way the UI does (the server's get-artifact endpoint)."""
    from urllib.parse import urlencode

    url = f"{ui.base}get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


def _best_trial(workdir: Path, metric: str) -> str:
    """The run id of the trial with the highest final ``metric``: its curve is worth a picture."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`snsweep.role` = 'trial'", order_by=[f"metrics.`{metric}` DESC"], max_results=1,
    )  # fmt: skip
    return runs[0].info.run_id


def main() -> None:
    """Screenshots of a finished sweep's UI for the README (runs table, a trial's curves)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, help="where `sweeper run` ran (holds mlflow.db)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--metric", default="mode_coverage")
    args = parser.parse_args()
    binary = find_chromium()
    if binary is None:
        raise SystemExit("error: no chromium on PATH; apt-get install -y chromium")
    (cdp,) = free_ports(1)
    with sweeper_ui(args.workdir.resolve()) as ui, chromium(binary, cdp, size=(1440, 860)) as page:
        print(ui.stdout.strip())
        bad = non_loopback(ui.pids)
        assert not bad, f"the UI listens beyond loopback: {bad}"
        landing = open_landing(page, ui)
        parent = landing["rows"][0]
        rows = expand_parent(page, parent["name"], int(landing["count"]) - 1)
        page.screenshot(args.out / "runs-table.png")
        best = next(r for r in rows if r["href"].endswith(_best_trial(args.workdir.resolve(), args.metric)))
        open_run(page, ui, best["href"], "model-metrics")
        show_curves(page, args.metric)
        page.screenshot(args.out / "trial-curves.png")
        print(f"wrote {args.out / 'runs-table.png'} and {args.out / 'trial-curves.png'} ({best['name']})")


if __name__ == "__main__":
    main()
