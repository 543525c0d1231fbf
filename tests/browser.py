"""A real JupyterLab in a real browser for the tests: a token-less server on a free localhost port and Chromium
driven by Playwright (Debian's ``chromium``, or one ``playwright install chromium`` fetched). Both stop on every exit
path. Used by tests/test_browser.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BROWSER_FIX = (
    "no Chromium for the browser tests. Fix: `sudo apt-get install chromium` (or `playwright install chromium`), "
    "or set POISONDIFF_CHROMIUM to a Chromium binary"
)


def find_chromium() -> str | None:
    """A Chromium binary: $POISONDIFF_CHROMIUM, the system's, or the one `playwright install chromium` fetched."""
    system = (shutil.which("chromium"), shutil.which("chromium-browser"))
    for candidate in (os.environ.get("POISONDIFF_CHROMIUM"), *system):
        if candidate and Path(candidate).exists():
            return candidate
    with contextlib.suppress(Exception):
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            path = p.chromium.executable_path
            if Path(path).exists():
                return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(args: list[str], port: int, log: Path, env: dict[str, str], cwd: Path) -> Iterator[str]:
    """Run a web server process until the block ends (terminated, then killed, on every exit path); yields its URL
    once its port accepts connections."""
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{args[2]} exited with {process.returncode}; its log: {log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[2]} did not answer within 120 s; its log: {log}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def lab_server(root: Path, log: Path, env: dict[str, str], workspaces: Path):
    """JupyterLab serving `root` without a token on a free port (a context manager yielding its URL). The app is
    exposed to the page (``window.jupyterapp``) so a test can run commands and read the notebook model;
    `workspaces` keeps JupyterLab's layout (open tabs) away from the user's own."""
    port = free_port()
    args = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
        "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", f"--LabApp.workspaces_dir={workspaces}",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # CI runs as root; only these tests allow it
    return server(args, port, log, env, root)


def explore_server(log: Path, env: dict[str, str], cwd: Path):
    """`poisondiff explore` (Voilà) on a free port, without opening a browser (a context manager yielding its URL)."""
    port = free_port()
    args = [sys.executable, "-m", "poisondiff_lite.cli", "explore", "--no-browser", f"--port={port}"]
    return server(args, port, log, env, cwd)


# JavaScript run in the page: the current notebook's state through JupyterLab's own API
NOTEBOOK_STATE = """(name) => {
  const app = window.jupyterapp;
  if (!app) return null;
  const panel = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === name);
  if (!panel || !panel.content || !panel.sessionContext || !panel.sessionContext.session) return null;
  const kernel = panel.sessionContext.session.kernel;
  const cells = panel.content.model.cells;
  const out = {kernel: kernel ? kernel.status : null, pending: 0, errors: [], stderr: []};
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    if (cell.executionCount === null || cell.executionCount === undefined) out.pending += 1;
    for (const o of cell.outputs.toJSON()) {
      if (o.output_type === 'error') out.errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
      if (o.output_type === 'stream' && o.name === 'stderr') {
        out.stderr.push(`cell ${i}: ${String(o.text).slice(0, 300)}`);
      }
    }
  }
  return out;
}"""


def open_notebook(page, url: str, name: str, timeout: float = 120) -> None:
    """Open a notebook in a JupyterLab workspace of its own (no tab of another test restored beside it) and wait
    until its kernel is idle."""
    page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?reset")
    wait_for(page, name, lambda s: s is not None and s["kernel"] == "idle", timeout, f"{name}: kernel ready")


RUN_ALL = """(name) => {
  const app = window.jupyterapp;
  const panel = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === name);
  app.shell.activateById(panel.id);
  return app.commands.execute('notebook:run-all-cells');
}"""


def run_all(page, name: str, timeout: float) -> dict:
    """Run All through JupyterLab's own command on notebook `name`; wait until every code cell ran and the kernel
    is idle."""
    page.evaluate(RUN_ALL, name)
    time.sleep(1.0)
    done = lambda s: s and s["kernel"] == "idle" and s["pending"] == 0  # noqa: E731
    return wait_for(page, name, done, timeout, f"{name}: Run All")


def wait_for(page, name: str, done, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = page.evaluate(NOTEBOOK_STATE, name)
        if done(state):
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s (last state {state})")
        time.sleep(0.5)
