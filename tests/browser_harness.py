"""JupyterLab or Notebook 7 in a subprocess, and Debian's Chromium driven by Playwright.

The recipe of research/runtime.md, Experiment 4: throw-away config, runtime, workspace and
settings dirs; news and update checks off (their toast covers the page); notebook windowing
off (else off-screen cells leave the DOM); ``--allow-root``; ``--IdentityProvider.token``;
a tall viewport (JupyterLab scrolls inside the page, so full-page shots show no more);
``executable_path`` so Playwright downloads no browser. Kernels inherit the server's
environment, which is how they find the emulator.

Notebook 7 is the JupyterLab stack with another shell: the same settings dirs and the same
``.jp-Notebook .jp-Cell`` DOM, a notebook at ``/notebooks/<path>`` instead of
``/lab/tree/<path>``. It has no status bar, but Notebook 7.6 shows the same
``.jp-Notebook-ExecutionIndicator[data-status]`` in the notebook's toolbar (JupyterLab 4.6
in its status bar), so a notebook counts as ready, in both, when that indicator says idle
and the server's REST API (``/api/sessions``, asked from the page) says its kernel is idle.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

CHROMIUM = Path("/usr/bin/chromium")
SERVER_TOKEN = "browser-test-token"  # the Jupyter server's, not Replicate's
REPO = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO / "artifacts" / "screenshots"
_CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
_SERVER_CONFIG = "c.LabApp.news_url = None\nc.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'\n"


IN_CI = os.environ.get("CI", "").lower() == "true"


def skip_without_a_browser(*packages: str) -> None:
    """At a browser test module's top: skip it, saying why, when Chromium or a package is
    missing; in CI (CI=true) never skip: a missing browser must fail there, not hide."""
    import pytest

    if IN_CI:
        return
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser tests need Debian's Chromium",
                    allow_module_level=True)
    for package in ("playwright.sync_api", "jupyterlab", *packages):
        pytest.importorskip(package, reason=f"browser tests need {package.split('.')[0]} (the test extra)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


FRONTENDS = {"lab": "jupyterlab", "notebook": "notebook"}  # frontend -> the module that starts it


class JupyterServer:
    """``jupyter lab`` or ``jupyter notebook`` serving ``root`` on 127.0.0.1, with throw-away settings."""

    def __init__(self, root: Path, home: Path, env: dict[str, str], frontend: str = "lab") -> None:
        if frontend not in FRONTENDS:
            raise ValueError(f"frontend must be one of {', '.join(FRONTENDS)}")
        self.root = root
        self.home = home
        self.frontend = frontend
        self.port = free_port()
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?token={SERVER_TOKEN}"

    def notebook_url(self, path: str) -> str:
        """The page of the notebook at ``path`` (relative to ``root``) in this frontend."""
        return self.url(("lab/tree/" if self.frontend == "lab" else "notebooks/") + path)

    def start(self, timeout: float = 60) -> JupyterServer:
        dirs = {name: self.home / name for name in ("config", "runtime", "workspaces", "settings", "ipython")}
        for folder in dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        for name, value in _LAB_SETTINGS.items():
            target = dirs["settings"] / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(value))
        (dirs["config"] / "jupyter_server_config.py").write_text(_SERVER_CONFIG)
        env = {
            **self._env,
            "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]), "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
            "IPYTHONDIR": str(dirs["ipython"]),
        }
        self._log = (self.home / "jupyter.log").open("wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", FRONTENDS[self.frontend], "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={SERVER_TOKEN}", f"--ServerApp.root_dir={self.root}"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jupyter {self.frontend} did not start; its log:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("api/status"), timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        path = self.home / "jupyter.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM: the server shuts its kernels down; kill it if it takes too long."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(self._process.pid, signal.SIGKILL)
                    self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None


# What a developer's shell may hold that the notebook's kernels must not see.
_SCRUB = ("REPLICATE_API_TOKEN", "REPLICATE_API_KEY", "REPLICATE_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY",
          "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "PYTHONSTARTUP", "IPYTHONDIR")


def serve_notebook(home: Path, name: str, cells: list[str], base_url: str, token: str,
                   frontend: str = "lab") -> JupyterServer:
    """A started server whose root holds ``name`` (a notebook of these code cells); its
    kernels find the emulator at ``base_url`` through the environment they inherit."""
    import nbformat

    root = home / "notebooks"
    root.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, root / name)
    env = {key: value for key, value in os.environ.items() if key not in _SCRUB}
    env.update(
        REPLICATE_BASE_URL=base_url, REPLICATE_API_TOKEN=token,
        PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
    )
    return JupyterServer(root, home, env, frontend=frontend).start()


def launch_chromium(playwright: Any, profile: Path) -> Any:
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=_CHROMIUM_ARGS,
        viewport={"width": 1200, "height": 2400},
    )


class Notebook:
    """One open notebook in JupyterLab or Notebook 7, driven with the keyboard like a user would."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def open(self, url: str) -> Notebook:
        self.page.goto(url)
        self.page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        # The kernel is ready when the page says so (JupyterLab's status bar, Notebook 7's
        # toolbar) and so does the server.
        self.page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=60_000)
        wait_for(self._kernel_idle, 60, "the notebook's kernel to be idle on the server")
        return self

    def _kernel_idle(self) -> bool:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.page.url).path)
        sessions = self.page.evaluate("() => fetch('/api/sessions').then(answer => answer.json())")
        return any(path.endswith("/" + session["path"]) and session["kernel"]["execution_state"] == "idle"
                   for session in sessions)

    def cell(self, index: int) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def run(self, index: int) -> None:
        """Shift+Enter in that cell; returns once it is queued or running, not finished."""
        for _ in range(3):
            self.cell(index).locator(".jp-InputArea-editor").click()
            self.page.keyboard.press("Shift+Enter")
            try:
                # A cell sent to the kernel shows [*] at once; a key press that came while
                # the kernel connection was still settling leaves [ ] and is safe to repeat.
                wait_for(lambda: self.prompt(index) != "", 3, f"cell {index} to start")
                return
            except AssertionError:
                continue
        raise AssertionError(f"cell {index} did not start after three tries")

    def prompt(self, index: int) -> str:
        """What the execution count shows: "" (never run), "*" (queued or running) or a number."""
        return self.cell(index).locator(".jp-InputArea-prompt").inner_text().strip("[]: \n\xa0")

    def busy(self, index: int) -> bool:
        return self.prompt(index) == "*"

    def wait_done(self, index: int, timeout: float = 30) -> None:
        wait_for(lambda: self.prompt(index) not in ("", "*"), timeout, f"cell {index} to finish")

    def output_text(self, index: int) -> str:
        return self.cell(index).locator(".jp-Cell-outputArea").inner_text()

    def save(self) -> None:
        self.page.keyboard.press("Control+s")
        wait_for(lambda: not self.page.locator(".jp-mod-dirty").count(), 10, "the notebook to be saved")

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


def squash(text: str) -> str:
    """Text with its whitespace runs as single spaces: what a reader compares."""
    return " ".join(text.split())


class PanelOnPage:
    """The chat panel as a user finds it on ``self.page``, by its stable CSS hooks."""

    page: Any

    @property
    def panel(self) -> Any:
        return self.page.locator(".replicate-chat-panel").first

    def conversation(self) -> str:
        return squash(self.panel.locator(".replicate-chat-conversation").inner_text())

    def status(self) -> str:
        return squash(self.panel.locator(".replicate-chat-status").inner_text())


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``condition`` until it is truthy; its value. Raises naming ``what`` it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)
