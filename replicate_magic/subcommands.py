"""The ``%replicate`` line subcommands (history, chats, export, load, log, restore, ...) and
what they show: IPython glue.

Each ``_cmd_NAME`` handles ``%replicate NAME ...``. Conversations are the kernel's
(``conversation.kernel_store``); the local log is the one the magic's settings name. What is
shown is untrusted text: plain text without control characters in terminals, escaped HTML
from the one renderer in notebooks.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .catalog import KNOWN_MODELS, MODEL_ALIASES
from .conversation import CHAT_NAME, CHAT_NAME_RULE, kernel_store
from .environment import find_token
from .terminal import clean

if TYPE_CHECKING:
    from .magics import ReplicateMagics
    from .store import LogStore


class Subcommands:
    """``%replicate NAME ARGS``, for one ``ReplicateMagics`` (whose settings it reads)."""

    def __init__(self, magics: ReplicateMagics) -> None:
        self.magics = magics


    def run(self, line: str) -> Any:
        try:
            words = shlex.split(line)
        except ValueError as error:
            raise UsageError(f"cannot read the %replicate line: {error}") from None
        if not words:
            return _Text(_SUBCOMMAND_HELP)
        name, args = words[0], words[1:]
        handler: Callable[[list[str]], Any] | None = getattr(self, f"_cmd_{name}", None)
        if name.startswith("-") or handler is None:
            raise UsageError(
                f"Unknown %replicate subcommand {name!r}. Use one of: {', '.join(_SUBCOMMANDS)}; "
                "to ask a model, use %%replicate with the prompt in the cell."
            )
        return handler(args)

    def _cmd_history(self, args: list[str]) -> Any:
        usage = "history [NAME] [-n TURNS]"
        shown = _HISTORY_TURNS
        if "-n" in args:
            at = args.index("-n")
            try:
                shown = int(args[at + 1])
            except (IndexError, ValueError):
                raise UsageError(f"Usage: %replicate {usage} (TURNS: a whole number; 0 shows all)") from None
            if shown < 0:
                raise UsageError(f"Usage: %replicate {usage} (TURNS: a whole number; 0 shows all)")
            args = args[:at] + args[at + 2:]
        name = _one_name(args, usage)
        if name not in kernel_store:
            return _Transcript(name, [])
        conversation = kernel_store.get(name)
        note = ""
        if shown and len(conversation) > shown:  # a long conversation would be one huge output
            note = (f"The last {shown} of {len(conversation)} turns; %replicate history {name} -n 0 "
                    "shows all, replicate_magic.history() returns them.")
        return _Transcript(name, conversation.context(shown or None), note)

    def _cmd_reset(self, args: list[str]) -> None:
        name = _one_name(args, "reset [NAME]")
        from .chat import ChatSession

        for problem in ChatSession(kernel_store, log=self.magics.log_store()).reset(name):
            print(f"warning: {problem}")
        print(f"Conversation {name!r} is empty now.")

    def _cmd_chats(self, args: list[str]) -> Any:
        if args == ["--saved"]:
            saved = [c for c in self._required_log().saved_conversations() if c["name"]]
            rows = [f"{c['name']}: {_turns(c['turns'])}, the last {c['last'][:16].replace('T', ' ')} UTC"
                    for c in saved]
            return _Text("\n".join(rows) or "The log holds no conversation yet.")
        _one_name(args, "chats [--saved]", most=0)
        rows = [f"{name}: {_turns(len(kernel_store.get(name)))}" for name in kernel_store.names()]
        return _Text("\n".join(rows) or "No conversations yet.")

    def _cmd_restore(self, args: list[str]) -> None:
        replace = "--replace" in args
        name = _one_name([a for a in args if a != "--replace"], "restore [NAME] [--replace]")
        from .conversation import CHAT_NAME, CHAT_NAME_RULE, Turn

        if not CHAT_NAME.fullmatch(name):
            raise UsageError(f"Invalid conversation name {name!r} (allowed: {CHAT_NAME_RULE})")
        exchanges = self._required_log().conversation(name)
        if not exchanges:
            raise UsageError(f"The log holds no conversation {name!r}; %replicate chats --saved lists them.")
        conversation = kernel_store.get(name)
        if len(conversation) and not replace:
            raise UsageError(f"Conversation {name!r} has {_turns(len(conversation))} in the kernel; "
                             f"%replicate restore {name} --replace replaces them with the log's.")
        conversation.reset()
        conversation.set_system(exchanges[-1].system)
        for exchange in exchanges:
            conversation.record(Turn(exchange.prompt, exchange.reply, exchange.model, exchange.cell_id))
        print(f"Restored conversation {name!r} ({_turns(len(conversation))}) from {self._required_log().path}.")

    def _cmd_log(self, args: list[str]) -> Any:
        from .options import UsageParser

        parser = UsageParser(prog="%replicate log", add_help=False, allow_abbrev=False)
        parser.add_argument("-n", type=int, default=20)
        parser.add_argument("-m", "--model")
        parser.add_argument("--summary", action="store_true")
        parser.add_argument("text", nargs="*")
        parsed = parser.parse_args(args)
        if parsed.n < 1:
            raise UsageError("argument -n: invalid value (allowed: a whole number >= 1)")
        store = self._required_log()
        if parsed.summary:
            totals = store.summary(overrides=self.magics.prices)
            return _Table(["model", "exchanges", "replayed", "input tokens", "output tokens", "seconds", "cost"],
                          [[t["model"], t["exchanges"], t["replayed"], t["input_tokens"], t["output_tokens"],
                            _seconds(t["predict_seconds"]), _dollars(t["cost"])] for t in totals],
                          "The log is empty.")
        rows = store.recent(parsed.n, model=parsed.model, search=" ".join(parsed.text) or None)
        return _Table(["time", "chat", "model", "prompt", "reply", "status"],
                      [[r["time"][:19].replace("T", " "), r["chat"], r["model"], _short(r["prompt"]),
                        _short(r["reply"]), r["status"] + (" (replayed)" if r["replayed"] else "")]
                       for r in rows],
                      "No exchange in the log matches." if parsed.model or parsed.text else "The log is empty.")

    def _required_log(self) -> LogStore:
        store = self.magics.log_store()
        if store is None:
            raise UsageError("The log is off (%config ReplicateMagics.log = False); turn it on to use it.")
        return store

    def _cmd_export(self, args: list[str]) -> None:
        force = "--force" in args
        path, name = _path_and_name([a for a in args if a != "--force"], "export FILE [NAME] [--force]")
        path = self._expand_path(path)
        if name not in kernel_store:
            raise UsageError(f"There is no conversation {name!r} to export; %replicate chats lists them.")
        try:
            kernel_store.save(name, path, overwrite=force)
        except OSError as error:
            raise UsageError(f"Could not write {path}: {error.strerror or error}") from None
        print(f"Saved conversation {name!r} ({_turns(len(kernel_store.get(name)))}) to {path}.")

    def _cmd_load(self, args: list[str]) -> None:
        replace = "--replace" in args
        path, name = _path_and_name([a for a in args if a != "--replace"], "load FILE [NAME] [--replace]",
                                    default=None)
        path = self._expand_path(path)
        try:
            conversation = kernel_store.load(path, name, replace=replace)
        except (OSError, ValueError) as error:
            detail = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise UsageError(f"Could not load {path}: {detail}") from None
        print(f"Loaded conversation {conversation.name!r} ({_turns(len(conversation))}) from {path}.")

    def _expand_path(self, path: str) -> str:
        """``~``, ``$var`` and ``{var}`` in a path, as IPython expands other magics' lines."""
        return os.path.expanduser(self.magics.shell.var_expand(path) if self.magics.shell is not None else path)

    def _cmd_template(self, args: list[str]) -> Any:
        """``template`` lists them; ``template NAME`` saves the last %%replicate cell as NAME;
        ``--replace``, ``--show`` and ``--delete`` do what they say."""
        from .templates import Template

        usage = "template [NAME] [--replace | --show | --delete]"
        switches = [a for a in args if a.startswith("-")]
        names = [a for a in args if not a.startswith("-")]
        unknown = [a for a in switches if a not in ("--replace", "--show", "--delete")]
        if unknown or len(switches) > 1 or len(names) > 1 or (switches and not names):
            raise UsageError(f"Usage: %replicate {usage}" + (f" (unknown: {' '.join(unknown)})" if unknown else ""))
        store = self.magics.template_store()
        if not names:
            rows = [[t.name, t.line or "(no flags)", _short(t.prompt, 60), t.saved_at[:16].replace("T", " ")]
                    for t in map(Template.of, store.templates())]
            return _Table(["template", "flags", "prompt", "saved (UTC)"], rows,
                          "No templates yet: run a %%replicate cell, then %replicate template NAME saves it.")
        name, switch = names[0], (switches or [""])[0]
        if not CHAT_NAME.fullmatch(name):
            raise UsageError(f"Invalid template name {name!r} (allowed: {CHAT_NAME_RULE})")
        found = store.template(name)
        if switch in ("--show", "--delete") and found is None:
            raise UsageError(f"There is no template {name!r} in {store.path}; %replicate template lists them.")
        if switch == "--show":
            assert found is not None
            return _Text(f"%%replicate {found['line']}".rstrip() + "\n" + found["prompt"])
        if switch == "--delete":
            store.delete_template(name)
            print(f"Deleted template {name!r}.")
            return None
        if self.magics.last_cell is None:
            raise UsageError(f"No %%replicate cell has run in this kernel yet: run one, then %replicate template "
                             f"{name} saves its line and prompt.")
        if found is not None and switch != "--replace":
            raise UsageError(f"Template {name!r} exists (saved {found['saved_at'][:16].replace('T', ' ')} UTC); "
                             f"%replicate template {name} --replace replaces it with the last cell.")
        line, prompt = self.magics.last_cell
        token = find_token()
        if token and (token in line or token in prompt):
            raise UsageError("The last cell holds the API token, which is never stored: not saved.")
        store.save_template(name, line, prompt)
        saved = Template(name, line, prompt)
        slot = ("its {input} is the cell's text" if saved.takes_input else
                "it has no {input}: the cell's text follows its prompt")
        print(f"Saved template {name!r} ({saved.described()}) in {store.path}. "
              f"Run it with %%replicate -T {name}; {slot}.")
        return None

    def _cmd_models(self, args: list[str]) -> Any:
        _one_name(args, "models", most=0)
        aliases = {model: [a for a, m in MODEL_ALIASES.items() if m == model] for model in KNOWN_MODELS}
        rows = [f"{model}" + (f"  (also: {', '.join(names)})" if names else "") for model, names in aliases.items()]
        rows.append("Any other owner/name or owner/name:version on Replicate works too; "
                    "deployments/owner/name runs one of your deployments.")
        return _Text("\n".join(rows))

    def _cmd_panel(self, args: list[str]) -> Any:
        name = _one_name(args, "panel [NAME]")
        from .panel import ChatPanel  # ipywidgets loads here, not at %load_ext

        return ChatPanel(chat=name)  # it takes this magic's %config settings

    def _cmd_fix(self, args: list[str]) -> None:
        from .notebook_context import ask_fix

        ask_fix(self.magics, args)  # the reply is on screen (and -f code's cell below): no Out[]


_HISTORY_TURNS = 20  # turns %replicate history shows unless -n says otherwise
_HISTORY_CHARS = 20_000  # of one message

_SUBCOMMANDS = ("history", "reset", "chats", "export", "load", "models", "panel", "log", "restore", "template", "fix")
_SUBCOMMAND_HELP = """\
%%replicate [options]   ask a model; the cell is the prompt (%%replicate? lists the options)
%replicate history [NAME] [-n TURNS]  show a conversation's last 20 turns (-n 0: all)
%replicate reset [NAME]        forget a conversation
%replicate chats [--saved]     list the conversations (--saved: those in the log)
%replicate log [-n N] [-m MODEL] [--summary] [TEXT]  recent exchanges in the log (--summary: totals)
%replicate restore [NAME] [--replace]  rebuild a conversation from the log, after a restart
%replicate export FILE [NAME] [--force]  save a conversation as JSON (--force: replace FILE)
%replicate load FILE [NAME] [--replace]  load a conversation from JSON (--replace: over a non-empty one)
%replicate models              models known by name
%replicate template [NAME]     list templates, or save the last %%replicate cell as NAME (then: %%replicate -T NAME)
%replicate template NAME --replace | --show | --delete  replace, print or forget a template
%replicate panel [NAME]        a chat panel on that conversation (shared with -c NAME)
%replicate fix [N] [-m MODEL] [-f code]  explain the last error (or cell N's), propose a fix (-f code: a new cell)"""


def _short(text: str, most: int = 80) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= most else one_line[:most - 1] + "…"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _dollars(value: float | None) -> str:
    return "" if value is None else f"${value:.4f}"


class _Table:
    """Rows for display: an escaped HTML table in notebooks, aligned text elsewhere."""

    def __init__(self, headers: list[str], rows: list[list[Any]], empty: str) -> None:
        self.headers, self.rows, self.empty = headers, rows, empty

    def __repr__(self) -> str:
        if not self.rows:
            return self.empty
        cells = [self.headers] + [["" if v is None else str(v) for v in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        return clean("\n".join(lines))

    def _repr_html_(self) -> str:
        from .render import plain_html, table_html

        return table_html(self.headers, self.rows) if self.rows else plain_html(self.empty)


def _turns(count: int) -> str:
    return f"{count} turn" if count == 1 else f"{count} turns"


def _one_name(args: list[str], usage: str, most: int = 1) -> str:
    if len(args) > most:
        raise UsageError(f"Too many arguments: %replicate {usage}")
    return args[0] if args else "default"


def _path_and_name(args: list[str], usage: str, default: str | None = "default") -> tuple[str, Any]:
    if not 1 <= len(args) <= 2:
        raise UsageError(f"Usage: %replicate {usage}")
    return args[0], (args[1] if len(args) == 2 else default)


class _Text(str):
    """Plain text that shows without quotes as a magic's result."""

    def __repr__(self) -> str:
        # text/plain reaches terminals raw; conversation names may come from a loaded file.
        return clean(self)


class _Transcript:
    """A conversation for display: Markdown in notebooks, text elsewhere."""

    def __init__(self, name: str, messages: list[dict[str, str]], note: str = "") -> None:
        self.name = name
        self.messages = [{**m, "content": _shortened(m["content"])} for m in messages]
        self.note = note  # "The last 20 of 300 turns; ..."

    def __repr__(self) -> str:
        # text/plain reaches terminals raw: replies and loaded messages are untrusted.
        if not self.messages:
            return clean(f"Conversation {self.name!r} is empty.")
        parts = [self.note] if self.note else []
        return clean("\n\n".join(parts + [f"{m['role']}: {m['content']}" for m in self.messages]))

    def _repr_html_(self) -> str:
        from .render import markdown_html, plain_html

        if not self.messages:
            return plain_html(f"Conversation {self.name!r} is empty.")
        head = plain_html(self.note, css="rm-metrics", style="sub") if self.note else ""
        return head + "".join(plain_html(m["role"], css="rm-role", style="strong") + markdown_html(m["content"])
                              for m in self.messages)


def _shortened(text: str) -> str:
    if len(text) <= _HISTORY_CHARS:
        return text
    return f"{text[:_HISTORY_CHARS]}\n\n[… {len(text) - _HISTORY_CHARS:,} more characters not shown]"
