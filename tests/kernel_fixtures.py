"""The fixtures of the tests that drive real IPython kernels over the Jupyter protocol.

``kernel`` is one module-wide kernel (per kernelspec in ``KERNEL_NAMES``) pointed at the
test's own emulator and log; ``kernels`` starts more for one test (a restart, two writers)
and always shuts them down. After every test, ``token_never_shown_and_html_is_inert``
checks every message any of these kernels sent. A test module imports the ones it uses;
pytest finds them by name.
"""

from __future__ import annotations

import pytest

from .conftest import TOKEN
from .html_allowlist import violations
from .kernel_harness import KERNEL_NAMES, KernelSession, html_outputs, kernel_env

_sessions: list[KernelSession] = []  # every kernel this module started, for the checks after each test


@pytest.fixture(scope="module", params=KERNEL_NAMES)
def kernel_name(request):
    """Every test runs on each kernel; a kernelspec that is not installed fails, never skips."""
    from jupyter_client.kernelspec import find_kernel_specs

    if request.param not in find_kernel_specs():
        pytest.fail(f"kernelspec {request.param!r} is not installed: run the tests with bin/test, "
                    "or set REPLICATE_MAGIC_TEST_KERNELS to the kernels you have")
    return request.param


class Kernels:
    """Starts kernels for one test (each with the extension loaded) and always shuts them down."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, kernel_name: str) -> None:
        self._factory = tmp_path_factory
        self._kernel_name = kernel_name
        self.started: list[KernelSession] = []

    def start(self, **env: str) -> KernelSession:
        ipython_dir = self._factory.mktemp("ipython")
        session = KernelSession(kernel_env(ipython_dir, **env), cwd=str(ipython_dir), kernel_name=self._kernel_name)
        _sessions.append(session)
        self.started.append(session)
        session.start()
        session.ok("%load_ext replicate_magic")
        return session

    def close(self) -> None:
        for session in self.started:
            session.close()


@pytest.fixture
def kernels(tmp_path_factory, kernel_name):
    started = Kernels(tmp_path_factory, kernel_name)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def shared_kernel(tmp_path_factory, kernel_name):
    """One kernel for the tests that only need one; each points it at its own log and emulator."""
    started = Kernels(tmp_path_factory, kernel_name)
    unused = tmp_path_factory.mktemp("unused-log") / "log.db"  # no test may write here
    try:
        yield started.start(REPLICATE_API_TOKEN=TOKEN, REPLICATE_MAGIC_DB=str(unused))
    finally:
        started.close()
    assert not unused.exists()


@pytest.fixture
def kernel(shared_kernel, emu, own_log):
    shared_kernel.ok(f"import os; os.environ['REPLICATE_BASE_URL'] = {emu.base_url!r}")
    shared_kernel.ok(f"%config ReplicateMagics.log_path = {str(own_log)!r}")
    try:
        yield shared_kernel
    finally:
        shared_kernel.ok("%config ReplicateMagics.log_path = ''")


@pytest.fixture(autouse=True)
def token_never_shown_and_html_is_inert():
    """No IOPub message of any kernel carries the API token; every text/html any kernel sent
    (replies, replays, marker lines, listings) holds only what the allow-list lets through."""
    yield
    for session in _sessions:
        assert TOKEN not in session.iopub_text()
        for fragment in html_outputs(session.iopub):
            assert violations(fragment) == [], fragment[:500]
