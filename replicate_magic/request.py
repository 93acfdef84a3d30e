"""One place builds a turn's request: what the caller asked, over the configured settings,
over the built-in defaults. Pure.

The magic passes its cell options and its ``%config`` traits, the CLI its own options and
the built-in defaults, the panel its controls and its traits; all three get the same
``TurnRequest`` for the same choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .catalog import resolve_model
from .inputs import Settings
from .options import CellOptions
from .settings import SETTINGS, Timeouts

__all__ = ["Configured", "TurnRequest", "build_request"]


@dataclass(frozen=True)
class TurnRequest:
    prompt: str
    chat: str = "default"
    model: str = SETTINGS["model"].default
    settings: Settings = field(default_factory=Settings)
    system: str | None = None  # becomes the conversation's system prompt when the turn succeeds
    new: bool = False  # start the conversation afresh (when the turn succeeds)
    use_history: bool = True  # False: send no history and record nothing
    record: bool = True  # False: send the history but record nothing (a side-by-side turn)
    max_history: int | None = SETTINGS["max_history"].default
    cell_id: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    # From the local log: "on" replays a logged reply for the same model and input, "only"
    # never asks Replicate, "refresh" asks even when the log holds one; "off" never looks.
    replay: Replay = "off"
    notebook: str | None = None  # the notebook's path, when the frontend tells it
    embed_limit: int = int(SETTINGS["embed_limit"].default * 1_000_000)  # bytes of an output file kept in memory
    save_dir: str | None = None  # also write each output file there
    create_rate: int = SETTINGS["create_rate"].default  # the kernel's creates a minute (limiter.py)


Replay = Literal["off", "on", "only", "refresh"]


def _default(name: str) -> Any:
    return SETTINGS[name].default


@dataclass(frozen=True)
class Configured:
    """What applies where the request itself says nothing: ``%config``, or the built-ins."""

    model: str = _default("model")
    max_history: int = _default("max_history")
    default_inputs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    timeout: float = _default("timeout")
    connect_timeout: float = _default("connect_timeout")
    cache: bool | str = _default("cache")
    embed_limit: float = _default("embed_limit")
    create_rate: int = _default("create_rate")

    @classmethod
    def of(cls, source: Any) -> Configured:
        """Read from anything with these attributes: the magic's or the panel's traits."""
        return cls(**{name: getattr(source, name) for name in cls.__dataclass_fields__
                      if hasattr(source, name)})


def build_request(prompt: str, options: CellOptions, configured: Configured,
                  cell_id: str | None = None, notebook: str | None = None) -> TurnRequest:
    """The request for one turn. ``options`` wins over ``configured``, which wins over the
    built-in defaults; ``-i`` inputs are sent over everything, configured inputs under it."""
    return TurnRequest(
        prompt=prompt,
        chat=options.chat,
        model=resolve_model(options.model or configured.model),
        settings=Settings(
            max_tokens=options.max_tokens, temperature=options.temperature, top_p=options.top_p,
            top_k=options.top_k, stop=options.stop, extra=options.inputs, images=options.images,
            defaults=configured.default_inputs,
        ),
        system=options.system,
        new=options.new,
        use_history=not options.no_history,
        max_history=configured.max_history,
        cell_id=cell_id,
        timeouts=Timeouts(connect=configured.connect_timeout, idle=options.timeout or configured.timeout),
        replay=_replay(options, configured),
        notebook=notebook,
        embed_limit=int(configured.embed_limit * 1_000_000),
        save_dir=options.save,
        create_rate=configured.create_rate,
    )


def _replay(options: CellOptions, configured: Configured) -> Replay:
    if options.refresh:  # asked on the cell: ask again, whatever the configuration says
        return "refresh"
    if configured.cache == "only":
        return "only"
    return "on" if options.cache or configured.cache else "off"
