"""replicate_magic: stream replies from models hosted on Replicate into Jupyter.

``%load_ext replicate_magic`` registers the ``%%replicate`` magic. ``Replicate`` is the
provider class (a port of gpt4free's). Heavy modules (aiohttp, ipywidgets) are not imported
by ``%load_ext``, which stays cheap: ipywidgets loads on first use, and what the first
``%%replicate`` cell needs is imported by a background thread (``warm_up``) while the user types it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import MissingAuthError, ResponseError

__version__ = "0.1.0"
__all__ = ["ChatPanel", "MissingAuthError", "Replicate", "ResponseError", "__version__", "ask", "ask_async",
           "history", "log", "map", "map_async"]

# name -> module that defines it; imported on first attribute access (PEP 562).
_LAZY = {
    "Replicate": ".provider",
    "ChatPanel": ".panel",
    "ask": ".api",
    "ask_async": ".api",
    "map": ".api",
    "map_async": ".api",
}

if TYPE_CHECKING:
    from .api import ask, ask_async, map, map_async
    from .panel import ChatPanel
    from .provider import Replicate


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def history(name: str = "default") -> list[dict[str, str]]:
    """That conversation's messages as ``{"role", "content"}`` dicts (a copy)."""
    from .conversation import kernel_store

    return kernel_store.get(name).messages() if name in kernel_store else []


def log(n: int = 100, model: str | None = None, search: str | None = None) -> list[dict[str, Any]]:
    """The newest ``n`` exchanges in the local log, newest first, as dicts (time, chat, prompt,
    model, input, reply, metrics, status, ...); ``model`` and ``search`` (text in the prompt or
    the reply) narrow them. ``pandas.DataFrame(replicate_magic.log())`` makes a table of them.
    The log is the one ``%config ReplicateMagics.log_path`` names, else the default file."""
    from .journal import shared_log
    from .magics import loaded_magics

    magics = loaded_magics()
    return shared_log(magics.log_path if magics is not None else "").recent(n, model=model, search=search)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext replicate_magic``: registers the magic and returns; what the first cell needs
    is imported in a background thread meanwhile (``warm_up``)."""
    from IPython.core.error import UsageError
    from traitlets import TraitError

    from .magics import ReplicateMagics

    try:
        ipython.register_magics(ReplicateMagics)
    except TraitError as error:  # a bad value in ipython_config.py or an earlier %config
        # Magics.__init__ listed the half-built instance for later %config changes: unlist it.
        ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, ReplicateMagics)]
        raise UsageError(f"ReplicateMagics.{error}; fix it in the config and load again") from None
    from . import warm_up

    warm_up.start()


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext replicate_magic``: the magics and their cell hooks go; conversations stay."""
    manager = ipython.magics_manager
    magics = manager.registry.pop("ReplicateMagics", None)
    if magics is not None:
        ipython.events.unregister("pre_run_cell", magics._remember_cell_id)
        ipython.events.unregister("post_run_cell", magics._remember_error)
        if magics in ipython.configurables:  # else a later %config reaches the unloaded instance
            ipython.configurables.remove(magics)
    for kind in ("line", "cell"):
        if getattr(manager.magics[kind].get("replicate"), "__self__", None) is magics:
            del manager.magics[kind]["replicate"]
