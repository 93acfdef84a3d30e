"""Shared fixtures: a clean environment and a Replicate emulator on 127.0.0.1."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from replicate_magic.emulator import Emulator

# No test, and no kernel a test starts, writes to the developer's own log.
_SESSION_LOG = Path(tempfile.mkdtemp(prefix="replicate-magic-tests-")) / "log.db"
os.environ["REPLICATE_MAGIC_DB"] = str(_SESSION_LOG)

TOKEN = "test-token-5f2a"  # a fake; real tokens start with r8_ and never appear here

_ENV = ("REPLICATE_API_TOKEN", "REPLICATE_API_KEY", "REPLICATE_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY",
        "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Tests never see the developer's token, base URL or proxies."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def own_log(tmp_path_factory, monkeypatch):
    """Each test logs to a file of its own (beside, not in, its tmp_path): no reply of one test
    replays in another."""
    path = tmp_path_factory.mktemp("log") / "log.db"
    monkeypatch.setenv("REPLICATE_MAGIC_DB", str(path))
    return path


@pytest.fixture(autouse=True)
def fresh_schema_cache():
    """Schemas are cached per base URL; a new emulator may get an earlier one's port."""
    from replicate_magic.schemas import default_schemas

    default_schemas.clear()
    yield
    default_schemas.clear()


@pytest.fixture
def ip(env_emu):
    """An in-process IPython shell with the extension loaded, against the emulator; the
    kernel's conversations are empty before and after."""
    from IPython.core.interactiveshell import InteractiveShell

    from replicate_magic.conversation import kernel_store

    shell = InteractiveShell.instance()
    shell.history_manager.enabled = False
    shell.extension_manager.load_extension("replicate_magic")
    kernel_store.clear()
    yield shell
    shell.extension_manager.unload_extension("replicate_magic")
    kernel_store.clear()


@pytest.fixture
def emu():
    with Emulator(token=TOKEN, tokens_per_second=0.0) as emulator:
        yield emulator


@pytest.fixture
def env_emu(emu, monkeypatch):
    """The emulator, found through the environment as a user would configure it."""
    monkeypatch.setenv("REPLICATE_BASE_URL", emu.base_url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    return emu


# The kernel tests' fixtures (kernel, kernels, shared_kernel, kernel_name), for every module; a
# module that drives kernels also imports the check after each test,
# kernel_fixtures.token_never_shown_and_html_is_inert, which is autouse there.
from .kernel_fixtures import kernel, kernel_name, kernels, shared_kernel  # noqa: E402, F401 - they need TOKEN
