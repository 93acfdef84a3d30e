"""A real IPython kernel driven over the Jupyter protocol, as a notebook frontend drives it.

``KernelSession`` starts ``python -m ipykernel_launcher`` (the venv's Python, found by
jupyter_client) with a clean environment, sends requests on the shell channel and sorts
every IOPub message by the request it answers, so a test can ask what the user saw for
one cell: its display messages in order, its errors, its reply. Several requests may be
in flight at once (Run All, a completion while a cell streams); ``wait`` collects them all.
Every IOPub message is also kept whole in ``iopub``, so a test can check the whole session
for something that must never be shown (the API token).
"""

from __future__ import annotations

import ast
import json
import os
import queue
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from replicate_magic.demo import send_execute

REPO = Path(__file__).resolve().parent.parent
# The kernelspecs to test on: "python3" is this venv's ipykernel (7.x); bin/test registers
# "ipykernel6", a venv with ipykernel 6.29, because the two differ where it matters.
KERNEL_NAMES = os.environ.get("REPLICATE_MAGIC_TEST_KERNELS", "python3 ipykernel6").split()
_SCRUB = ("REPLICATE_API_TOKEN", "REPLICATE_API_KEY", "REPLICATE_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY",
          "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NO_PROXY", "no_proxy", "PYTHONPATH",
          "PYTHONSTARTUP", "IPYTHONDIR")


def kernel_env(ipython_dir: Path, **extra: str) -> dict[str, str]:
    """The test process's environment without Replicate settings, proxies or startup files."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(
        PYTHONPATH=str(REPO),  # the package is not installed in the venv
        IPYTHONDIR=str(ipython_dir),  # no user profile, startup files or shared history
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


@dataclass
class Message:
    """One IOPub message as received: type, content, metadata, kernel-side send time."""

    type: str
    content: dict[str, Any]
    metadata: dict[str, Any]
    sent: datetime  # the kernel's header date
    received: float  # time.monotonic() here


@dataclass
class Request:
    """One shell request and everything it produced."""

    msg_id: str
    type: str
    reply: dict[str, Any] | None = None
    replied: float | None = None  # time.monotonic() here when the reply arrived
    messages: list[Message] = field(default_factory=list)
    idle: bool = False

    @property
    def done(self) -> bool:
        # An execute request is over once the kernel went idle for it and replied.
        return self.reply is not None and (self.idle or self.type != "execute_request")

    @property
    def status(self) -> str | None:
        return None if self.reply is None else self.reply.get("status")

    def of_type(self, *types: str) -> list[Message]:
        return [m for m in self.messages if m.type in types]

    @property
    def outputs(self) -> list[Message]:
        """What a notebook renders under the cell, in order."""
        return self.of_type("stream", "display_data", "update_display_data", "execute_result", "error")

    @property
    def stderr(self) -> str:
        return "".join(m.content["text"] for m in self.of_type("stream") if m.content["name"] == "stderr")

    @property
    def stdout(self) -> str:
        return "".join(m.content["text"] for m in self.of_type("stream") if m.content["name"] == "stdout")

    def display_ids(self) -> set[str]:
        return {m.content["transient"]["display_id"]
                for m in self.of_type("display_data", "update_display_data")
                if m.content.get("transient", {}).get("display_id")}

    def seconds(self) -> float:
        """From the kernel's busy to its idle for this request, by the kernel's clock."""
        states = {m.content["execution_state"]: m.sent for m in reversed(self.of_type("status"))}
        busy, idle = states["busy"], states["idle"]
        return (idle - busy).total_seconds()


class KernelError(AssertionError):
    pass


class KernelSession:
    """A kernel plus a blocking client; use as a context manager (always shuts down)."""

    def __init__(self, env: dict[str, str], cwd: str | None = None, kernel_name: str = "python3") -> None:
        self.kernel_name = kernel_name
        self._env = env
        self._cwd = cwd
        self.km: KernelManager | None = None
        self.kc: Any = None
        self.requests: dict[str, Request] = {}
        self.iopub: list[dict[str, Any]] = []  # every IOPub message, whole

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 30, **launch: Any) -> KernelSession:
        """Start the kernel; ``launch`` goes to the process launch (e.g. ``stderr=``)."""
        self.km = KernelManager(kernel_name=self.kernel_name)  # "python" in argv -> this venv's Python
        self.km.start_kernel(env=self._env, cwd=self._cwd, **launch)
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=timeout)
        except BaseException:
            self.close()
            raise
        self._drain(0.2)  # the startup status messages
        return self

    def close(self) -> None:
        if self.kc is not None:
            try:
                self._drain(0.05)
            finally:
                self.kc.stop_channels()
                self.kc = None
        if self.km is not None:
            km, self.km = self.km, None
            if km.has_kernel:
                km.shutdown_kernel(now=False)
            km.cleanup_resources()
            km.context.term()

    def __enter__(self) -> KernelSession:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def interrupt(self) -> None:
        assert self.km is not None
        self.km.interrupt_kernel()  # SIGINT: the notebook's stop button

    def restart(self, timeout: float = 30) -> None:
        """The notebook's Restart Kernel: a new kernel process, started as the first was
        (same environment and working directory); this client stays connected to it."""
        assert self.km is not None
        self.km.restart_kernel(now=False)
        self.kc.wait_for_ready(timeout=timeout)
        self._drain(0.2)  # the new kernel's startup status messages

    # -- requests --------------------------------------------------------------------------------

    def send(self, code: str, *, cell_id: str | None = None, stop_on_error: bool = True,
             user_expressions: dict[str, str] | None = None, silent: bool = False) -> Request:
        """An execute_request as JupyterLab sends it (``cellId`` in the metadata)."""
        msg_id = send_execute(self.kc, code, cell_id, silent=silent, stop_on_error=stop_on_error,
                              user_expressions=user_expressions)
        return self._track(msg_id, "execute_request")

    def complete(self, code: str) -> Request:
        return self._send("complete_request", {"code": code, "cursor_pos": len(code)})

    def kernel_info(self) -> Request:
        return self._send("kernel_info_request", {})

    def _send(self, msg_type: str, content: dict[str, Any]) -> Request:
        msg = self.kc.session.msg(msg_type, content)
        self.kc.shell_channel.send(msg)
        return self._track(msg["header"]["msg_id"], msg_type)

    def _track(self, msg_id: str, msg_type: str) -> Request:
        request = Request(msg_id, msg_type)
        self.requests[msg_id] = request
        return request

    def wait(self, *requests: Request, timeout: float = 20) -> None:
        """Until each request has its reply (and, for cells, the kernel's idle)."""
        deadline = time.monotonic() + timeout
        while not all(r.done for r in requests):
            if time.monotonic() > deadline:
                pending = [(r.type, r.status, r.idle) for r in requests if not r.done]
                raise KernelError(f"no answer within {timeout} s for {pending}")
            self._drain(0.02)

    def run(self, code: str, *, timeout: float = 20, **kwargs: Any) -> Request:
        request = self.send(code, **kwargs)
        self.wait(request, timeout=timeout)
        return request

    def ok(self, code: str, **kwargs: Any) -> Request:
        """Run a cell that must succeed and write nothing to stderr."""
        request = self.run(code, **kwargs)
        if request.status != "ok":
            raise KernelError(f"cell failed: {code!r}: {request.reply}")
        if request.stderr:
            raise KernelError(f"cell wrote to stderr: {code!r}: {request.stderr}")
        return request

    def eval(self, expression: str) -> Any:
        """A Python literal computed in the kernel (through user_expressions, no output)."""
        request = self.run("", silent=True, user_expressions={"x": expression})
        result = request.reply["user_expressions"]["x"]
        if result["status"] != "ok":
            raise KernelError(f"{expression}: {result.get('ename')}: {result.get('evalue')}")
        return ast.literal_eval(result["data"]["text/plain"])

    # -- receiving -------------------------------------------------------------------------------

    def _drain(self, timeout: float) -> None:
        """Read whatever both channels hold; wait up to ``timeout`` for IOPub if nothing did."""
        got = False
        while self.kc.shell_channel.msg_ready():
            self._on_shell(self.kc.shell_channel.get_msg(timeout=0))
            got = True
        while self.kc.iopub_channel.msg_ready():
            self._on_iopub(self.kc.iopub_channel.get_msg(timeout=0))
            got = True
        if not got:
            try:
                self._on_iopub(self.kc.iopub_channel.get_msg(timeout=timeout))
            except queue.Empty:
                pass

    def _on_shell(self, msg: dict[str, Any]) -> None:
        request = self.requests.get(msg["parent_header"].get("msg_id"))
        if request is not None:
            request.reply = msg["content"]
            request.replied = time.monotonic()

    def _on_iopub(self, msg: dict[str, Any]) -> None:
        self.iopub.append(msg)
        request = self.requests.get(msg["parent_header"].get("msg_id"))
        if request is None:
            return
        message = Message(msg["header"]["msg_type"], msg["content"], msg.get("metadata", {}),
                          msg["header"]["date"], time.monotonic())
        request.messages.append(message)
        if message.type == "status" and message.content["execution_state"] == "idle":
            request.idle = True

    def iopub_text(self) -> str:
        """Every IOPub message's content and metadata as JSON text (for secrets checks)."""
        return "\n".join(json.dumps([m["content"], m.get("metadata", {})], default=str) for m in self.iopub)


def html(message: Message) -> str:
    return message.content["data"].get("text/html", "")


def html_outputs(iopub: list[dict[str, Any]]) -> list[str]:
    """The text/html of every output a kernel sent: displays, their updates and results."""
    kinds = ("display_data", "update_display_data", "execute_result")
    return [m["content"]["data"]["text/html"] for m in iopub
            if m["header"]["msg_type"] in kinds and "text/html" in m["content"].get("data", {})]


def plain(message: Message) -> str:
    return message.content["data"].get("text/plain", "")
