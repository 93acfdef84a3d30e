"""The ``%%replicate`` cell magic and the ``%replicate`` subcommands: IPython glue only.

Configure with ``%config ReplicateMagics.model = "owner/name"`` (or ``c.ReplicateMagics``
in ``ipython_config.py``). The API token is not a setting: ``%config`` prints settings, so
it is read from ``REPLICATE_API_TOKEN`` when a request starts, and shown nowhere.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections import ChainMap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

from .catalog import KNOWN_MODELS, MODEL_ALIASES
from .conversation import kernel_store
from .environment import find_token
from .errors import ReplicateMagicError, ReplyInterrupted, UnexpectedError
from .options import CellOptions, parse_cell_options, replicate_arguments
from .prompt_template import Expansion, expand
from .terminal import clean
from .traits import setting_trait

if TYPE_CHECKING:
    from .chat import Metrics, TurnResult
    from .display import LiveReply
    from .request import TurnRequest

log = logging.getLogger(__name__)
_CANCEL_REPORT_WAIT = 2.0  # seconds an interrupted cell waits to say what its cancel did


@magics_class
class ReplicateMagics(Magics):
    # The %config settings; their defaults, bounds and help are declared in settings.py.
    model = setting_trait("model").tag(config=True)
    max_history = setting_trait("max_history").tag(config=True)
    default_inputs = setting_trait("default_inputs").tag(config=True)
    output_format = setting_trait("output_format").tag(config=True)
    timeout = setting_trait("timeout").tag(config=True)
    connect_timeout = setting_trait("connect_timeout").tag(config=True)
    show_metrics = setting_trait("show_metrics").tag(config=True)
    expand_variables = setting_trait("expand_variables").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._cell_id: str | None = None
        self._asked = 0  # turns asked during the current execution
        if shell is not None:
            shell.events.register("pre_run_cell", self._remember_cell_id)

    def _remember_cell_id(self, info: Any) -> None:
        # Frontends send the cell's id; re-running a cell then replaces its earlier exchange.
        self._cell_id = getattr(info, "cell_id", None)
        self._asked = 0

    def _turn_key(self) -> str | None:
        """The key a turn is recorded under: the cell's id for its first turn, then one more
        per turn, so a loop in one cell appends its turns and a re-run replaces each of them."""
        self._asked += 1
        if self._cell_id is None:
            return None
        return self._cell_id if self._asked == 1 else f"{self._cell_id}#{self._asked}"

    @no_var_expand  # braces and $ on the line are ours (JSON in -i, "$5" in -s)
    @line_cell_magic
    @replicate_arguments
    def replicate(self, line: str, cell: str | None = None) -> Any:
        """Ask a model hosted on Replicate; the reply streams into the output.

        As a cell magic, the cell body is the prompt. Outside code, ``{name}`` is replaced by
        that variable's value (also ``{In[3]}`` and ``{Out[3]}``) and ``{{name}}`` gives the
        text ``{name}``; inside code (fenced or indented blocks, inline code spans) nothing
        changes, and other braces stay as typed. Undefined names stay as typed, a value
        holding the API token is never sent, and the line under the reply names what was
        expanded. ``--no-expand`` sends the cell as typed. The conversation is kept in the
        kernel, so the next cell continues it. Replies are rendered as Markdown by our own
        renderer, with raw HTML shown as text and images shown as links.

        As a line magic: ``%replicate history [NAME] [-n TURNS]``, ``reset [NAME]``, ``chats``,
        ``export FILE [NAME] [--force]``, ``load FILE [NAME] [--replace]``, ``models``,
        ``panel [NAME]``.
        """
        try:
            return self._subcommand(line) if cell is None else self._cell(line, cell)
        except KeyboardInterrupt:  # before any request (a turn's own interrupt is handled in it)
            raise ReplyInterrupted("Interrupted before anything was sent; nothing was asked.") from None

    def _cell(self, line: str, cell: str) -> None:
        options = parse_cell_options(line)
        if not cell.strip():
            raise UsageError("The cell is empty: write the prompt below the %%replicate line.")
        expansion = Expansion(cell)
        if self.expand_variables and not options.no_expand:
            # The cell as typed: stripping first would turn a leading indented code block into prose.
            # {In[n]} is what the user typed, not IPython's transformed source.
            shell = self._shell()
            namespace = ChainMap({"In": shell.history_manager.input_hist_raw}, shell.user_ns)
            expansion = expand(cell, namespace, token=find_token())
        prompt = expansion.text.strip()
        if not prompt:
            raise UsageError(f"The prompt is empty once {', '.join(expansion.names)} expanded: nothing to send.")
        self._ask(options, prompt, expansion)
        return None  # the reply is already on screen: no Out[]

    # -- one turn -----------------------------------------------------------------------------

    def _ask(self, options: CellOptions, prompt: str, expansion: Expansion) -> None:
        """Build the request, open the output area, run the turn, then publish its result."""
        from .display import LiveReply  # aiohttp loads here, not at %load_ext
        from .request import Configured, build_request

        request = build_request(prompt, options, Configured.of(self), cell_id=self._turn_key())
        fmt = options.format or self.output_format
        reply = LiveReply(fmt, rich=self._rich())
        reply.start(status=f"asking {request.model}…")
        result, metrics = self._run_turn(request, reply)
        if options.out:
            self._shell().user_ns[options.out] = result.text
        self._show_result_line(result, metrics, expansion, reply)

    def _run_turn(self, request: TurnRequest, reply: LiveReply) -> tuple[TurnResult, Metrics | None]:
        """The turn on the private loop; any failure finishes the area and is one line."""
        from .cancels import StopReport
        from .chat import ChatSession
        from .loop import shared_loop

        session = ChatSession()
        answered: list[TurnResult] = []  # set once the reply is complete and recorded
        stops = StopReport()  # what became of any cancel this turn needed: told, never assumed

        async def turn() -> Metrics | None:
            with stops.watching():
                result = await session.ask(request, on_token=reply.append, on_log=reply.status)
            answered.append(result)
            # The whole reply shows now; the metrics request is already under way.
            reply.finish("" if result.text else "empty reply: the model sent no text")
            return await session.reported_metrics(result) if self.show_metrics else None

        stopped = "stopped by the error below; this turn is not in the history"
        try:
            metrics = shared_loop().run(turn())
        except KeyboardInterrupt:
            if answered:  # the reply is complete and recorded: skip the nicety
                return answered[0], answered[0].metrics
            stops.wait(_CANCEL_REPORT_WAIT)
            what = stops.message()
            reply.finish(f"interrupted: {what}; this turn is not in the history")
            raise ReplyInterrupted(
                f"Interrupted: the reply stopped ({what}); "
                "the partial answer stays above, the conversation is unchanged."
            ) from None
        except ReplicateMagicError as error:
            stops.wait(_CANCEL_REPORT_WAIT)
            failed = [o.message() for o in stops.outcomes if not o.cancelled]
            reply.finish(stopped if reply.text else "no reply")
            if failed:  # a stall or a broken stream needed a cancel, and it did not go through
                error.args = (f"{error} Also: {'; '.join(failed)}.",)
            raise
        except Exception as error:  # a bug: the area still ends, the message is one line
            log.exception("a %%replicate turn failed unexpectedly")
            reply.finish(stopped if reply.text else "no reply")
            raise UnexpectedError(
                f"Unexpected {type(error).__name__}: {error}. The conversation is unchanged; "
                "this is a bug in replicate_magic (the traceback is in the kernel's log)."
            ) from None
        return answered[0], metrics

    def _show_result_line(self, result: TurnResult, metrics: Metrics | None, expansion: Expansion,
                          reply: LiveReply) -> None:
        from .display import result_notes, show_line

        notes = result_notes(result, metrics) if metrics is not None else list(result.adjusted)
        if expansion.names:  # so the user sees what was sent
            notes.append(f"expanded: {', '.join(expansion.names)}")
        if expansion.withheld:
            notes.append(f"not expanded, since the value holds the API token: {', '.join(expansion.withheld)}")
        if notes:
            show_line(" · ".join(notes), reply.fmt, rich=reply.rich)

    def _shell(self) -> Any:
        """The shell the magics run in (IPython's own type leaves history_manager optional)."""
        if self.shell is None:
            raise UsageError("replicate_magic needs IPython: run %load_ext replicate_magic in a shell")
        return self.shell

    def _rich(self) -> bool:
        """Notebooks (a kernel) get a live Markdown area; terminal IPython gets streamed text."""
        return type(self.shell).__module__.startswith("ipykernel")

    # -- %replicate subcommands -------------------------------------------------------------------

    def _subcommand(self, line: str) -> Any:
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
        kernel_store.reset(name)
        print(f"Conversation {name!r} is empty now.")

    def _cmd_chats(self, args: list[str]) -> Any:
        _one_name(args, "chats", most=0)
        rows = [f"{name}: {_turns(len(kernel_store.get(name)))}" for name in kernel_store.names()]
        return _Text("\n".join(rows) or "No conversations yet.")

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
        return os.path.expanduser(self.shell.var_expand(path) if self.shell is not None else path)

    def _cmd_models(self, args: list[str]) -> Any:
        _one_name(args, "models", most=0)
        aliases = {model: [a for a, m in MODEL_ALIASES.items() if m == model] for model in KNOWN_MODELS}
        rows = [f"{model}" + (f"  (also: {', '.join(names)})" if names else "") for model, names in aliases.items()]
        rows.append("Any other owner/name or owner/name:version on Replicate works too.")
        return _Text("\n".join(rows))

    def _cmd_panel(self, args: list[str]) -> Any:
        name = _one_name(args, "panel [NAME]")
        from .panel import ChatPanel  # ipywidgets loads here, not at %load_ext

        return ChatPanel(chat=name)  # it takes this magic's %config settings


_HISTORY_TURNS = 20  # turns %replicate history shows unless -n says otherwise
_HISTORY_CHARS = 20_000  # of one message

_SUBCOMMANDS = ("history", "reset", "chats", "export", "load", "models", "panel")
_SUBCOMMAND_HELP = """\
%%replicate [options]   ask a model; the cell is the prompt (%%replicate? lists the options)
%replicate history [NAME] [-n TURNS]  show a conversation's last 20 turns (-n 0: all)
%replicate reset [NAME]        forget a conversation
%replicate chats               list the conversations
%replicate export FILE [NAME] [--force]  save a conversation as JSON (--force: replace FILE)
%replicate load FILE [NAME] [--replace]  load a conversation from JSON (--replace: over a non-empty one)
%replicate models              models known by name
%replicate panel [NAME]        a chat panel on that conversation (shared with -c NAME)"""


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
