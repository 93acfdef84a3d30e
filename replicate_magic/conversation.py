"""Kernel-held conversations: turns, the context sent with a request, JSON files. Pure.

A ``Turn`` is one finished exchange. A ``Conversation`` keeps its turns in order; a turn that
carries a notebook cell id is replaced in place when that cell runs again, so re-running a
cell never duplicates history. ``ConversationStore`` holds the conversations by name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_LOAD_BYTES = 50_000_000  # a conversation file larger than this is not one
CHAT_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # a conversation's name: -c, load, the panel
CHAT_NAME_RULE = "letters, digits, '_', '.', '-'"

__all__ = ["Conversation", "ConversationStore", "Turn"]

Message = dict[str, str]
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    """One finished exchange: the prompt, the whole reply, and the model that wrote it."""

    prompt: str
    reply: str
    model: str
    cell_id: str | None = None


class Conversation:
    """A named, ordered list of turns plus an optional system prompt."""

    def __init__(
        self, name: str = "default", system: str | None = None, turns: Iterable[Turn] = ()
    ) -> None:
        self.name = name
        self.system = system
        self._turns: list[Turn] = list(turns)

    @property
    def turns(self) -> tuple[Turn, ...]:
        return tuple(self._turns)

    def __len__(self) -> int:
        return len(self._turns)

    def __repr__(self) -> str:
        # Never the text: prompts can be long, and repr shows up in tracebacks and logs.
        count = len(self._turns)
        turns = f"{count} turn" if count == 1 else f"{count} turns"
        system = ", system prompt" if self.system is not None else ""
        return f"<Conversation {self.name!r}: {turns}{system}>"

    def context(self, max_turns: int | None, *, cell_id: str | None = None) -> list[Message]:
        """The messages to send before a new prompt: system, then the last ``max_turns`` turns.

        ``max_turns=None`` sends every turn, ``0`` none. When ``cell_id`` names a recorded turn
        (the cell is being re-run), only the turns before it count: the new answer replaces it.
        """
        if max_turns is not None and max_turns < 0:
            raise ValueError(f"max_turns must be None or >= 0, not {max_turns}")
        turns = self._turns
        index = self._index_of(cell_id)
        if index is not None:
            turns = turns[:index]
        if max_turns is not None:
            turns = turns[-max_turns:] if max_turns else []
        return _as_messages(self.system, turns)

    def record(self, turn: Turn) -> None:
        """Append a finished turn, or replace the earlier turn of the same cell in place."""
        index = self._index_of(turn.cell_id)
        if index is None:
            self._turns.append(turn)
        else:
            self._turns[index] = turn

    def messages(self) -> list[Message]:
        """The whole conversation as ``{"role", "content"}`` dicts; a fresh copy each call."""
        return _as_messages(self.system, self._turns)

    def reset(self) -> None:
        """Forget the turns and the system prompt."""
        self._turns.clear()
        self.system = None

    def set_system(self, text: str | None) -> None:
        self.system = text

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "system": self.system,
            "turns": [
                {"prompt": t.prompt, "reply": t.reply, "model": t.model, "cell_id": t.cell_id}
                for t in self._turns
            ],
        }

    @classmethod
    def from_json(cls, data: Any, name: str | None = None) -> Conversation:
        """Read ``to_json`` output, or a plain list of ``{"role", "content"}`` messages.

        ``name`` overrides the stored name; the fallback is "default". Bad data raises a
        one-line ``ValueError`` (turns and messages are counted from 1).
        """
        if isinstance(data, dict):
            stored = _optional_str(data, "name", "the conversation")
            system = _optional_str(data, "system", "the conversation")
            turns = _turns_from_json(data.get("turns", []))
        elif isinstance(data, list):
            stored = None
            system, turns = _turns_from_messages(data)
        else:
            raise ValueError(
                f"expected a conversation object or a list of messages, not {type(data).__name__}"
            )
        chosen = name or stored or "default"
        if not CHAT_NAME.fullmatch(chosen):
            raise ValueError(f"the conversation name {chosen!r} is not allowed ({CHAT_NAME_RULE})")
        return cls(chosen, system, turns)

    def _index_of(self, cell_id: str | None) -> int | None:
        if cell_id is None:
            return None
        return next((i for i, t in enumerate(self._turns) if t.cell_id == cell_id), None)


def _as_messages(system: str | None, turns: Sequence[Turn]) -> list[Message]:
    # An empty system prompt is no prompt: some models reject an empty system message.
    messages = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        messages.append({"role": "user", "content": turn.prompt})
        messages.append({"role": "assistant", "content": turn.reply})
    return messages


# -- reading JSON: every check names the item that is wrong ------------------------------------


def _optional_str(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where} has a {key!r} that is not text")
    return value


def _required_str(data: dict[str, Any], key: str, where: str) -> str:
    if key not in data:
        raise ValueError(f"{where} has no {key!r}")
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"{where} has a {key!r} that is not text")
    return value


def _turns_from_json(items: Any) -> list[Turn]:
    if not isinstance(items, list):
        raise ValueError("'turns' is not a list")
    return [_turn_from_json(item, f"turn {n}") for n, item in enumerate(items, start=1)]


def _turn_from_json(item: Any, where: str) -> Turn:
    if not isinstance(item, dict):
        raise ValueError(f"{where} is not an object")
    return Turn(
        prompt=_required_str(item, "prompt", where),
        reply=_required_str(item, "reply", where),
        model=_optional_str(item, "model", where) or "",
        cell_id=_optional_str(item, "cell_id", where),
    )


def _turns_from_messages(items: list[Any]) -> tuple[str | None, list[Turn]]:
    """OpenAI-style messages: system messages set the system prompt, user/assistant pairs turn."""
    systems: list[str] = []
    turns: list[Turn] = []
    prompt: str | None = None  # a user message waiting for its reply
    prompt_at = 0
    for n, item in enumerate(items, start=1):
        role, content = _message(item, f"message {n}")
        if role == "system":
            systems.append(content)
        elif role == "user" and prompt is None:
            prompt, prompt_at = content, n
        elif role == "assistant" and prompt is not None:
            turns.append(Turn(prompt, content, ""))
            prompt = None
        else:
            expected = "an assistant reply" if prompt is not None else "a user message"
            raise ValueError(f"message {n} ({role}) comes where {expected} was expected")
    if prompt is not None:
        raise ValueError(f"message {prompt_at} (user) has no assistant reply after it")
    # Several system messages are kept, in order, as one prompt.
    return ("\n\n".join(systems) if systems else None), turns


def _message(item: Any, where: str) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise ValueError(f"{where} is not an object")
    role = _required_str(item, "role", where)
    if role not in _ROLES:
        raise ValueError(f"{where} has role {role!r}; expected one of {', '.join(_ROLES)}")
    return role, _required_str(item, "content", where)


class ConversationStore:
    """The kernel's conversations, by name; ``get`` creates one on first use."""

    def __init__(self) -> None:
        self._conversations: dict[str, Conversation] = {}

    def clear(self) -> None:
        """Forget every conversation."""
        self._conversations.clear()

    def __contains__(self, name: object) -> bool:
        return name in self._conversations

    def get(self, name: str = "default") -> Conversation:
        if name not in self._conversations:
            self._conversations[name] = Conversation(name)
        return self._conversations[name]

    def names(self) -> list[str]:
        return sorted(self._conversations)

    def reset(self, name: str = "default") -> None:
        """Empty that conversation in place (holders of it see the reset); unknown: no-op."""
        if name in self._conversations:
            self._conversations[name].reset()

    def replace(self, name: str, conversation: Conversation) -> None:
        conversation.name = name  # the store's key and the conversation's name never disagree
        self._conversations[name] = conversation

    def save(self, name: str, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write conversation ``name`` to a JSON file; ``KeyError`` if there is none.

        An existing file is kept (``FileExistsError``) unless ``overwrite``. The text goes to
        a temporary file beside it first and then takes its place, so a full disk or a crash
        leaves the old file whole; a symlink is replaced, never written through.
        """
        data = self._conversations[name].to_json()
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        target = Path(path)
        if not overwrite and (target.exists() or target.is_symlink()):
            raise FileExistsError(errno.EEXIST, "the file exists (add --force to replace it)", os.fspath(path))
        import tempfile  # here, not at import: %load_ext stays cheap (random, shutil...)

        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def load(self, path: str | os.PathLike[str], name: str | None = None, *, replace: bool = False) -> Conversation:
        """Read a JSON file into conversation ``name`` (default: the name in the file).

        Every failure to read or parse is a ``ValueError`` (or the ``OSError`` of opening it)
        naming the file; at most ``MAX_LOAD_BYTES`` are read, so ``/dev/zero`` cannot fill memory.
        A conversation that has turns or a system prompt is replaced only with ``replace``.
        """
        where = os.fspath(path)
        with open(path, "rb") as source:
            raw = source.read(MAX_LOAD_BYTES + 1)
        if len(raw) > MAX_LOAD_BYTES:
            raise ValueError(f"{where}: larger than {MAX_LOAD_BYTES // 1_000_000} MB; not a conversation file")
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{where}: not UTF-8 text") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})") from None
        except RecursionError:
            raise ValueError(f"{where}: JSON nested too deeply") from None
        try:
            conversation = Conversation.from_json(data, name)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
            raise ValueError(f"{where}: not a conversation ({err})") from None
        existing = self._conversations.get(conversation.name)
        if existing is not None and (len(existing) or existing.system) and not replace:
            raise ValueError(
                f"conversation {conversation.name!r} already has {len(existing)} turn(s); "
                "add --replace to replace it, or load it under another NAME")
        self.replace(conversation.name, conversation)
        return conversation


# The kernel's conversations: the magic, the panel and ``replicate_magic.history()`` share it.
kernel_store = ConversationStore()
