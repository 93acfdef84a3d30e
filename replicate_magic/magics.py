"""The ``%%replicate`` cell magic and the ``%replicate`` subcommands: IPython glue only.

Configure with ``%config ReplicateMagics.model = "owner/name"`` (or ``c.ReplicateMagics``
in ``ipython_config.py``). The API token is not a setting: ``%config`` prints settings, so
it is read from ``REPLICATE_API_TOKEN`` when a request starts, and shown nowhere.
"""

from __future__ import annotations

import logging
import os
from collections import ChainMap
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

from .environment import find_token
from .errors import ReplicateMagicError, ReplyInterrupted, UnexpectedError
from .options import CellOptions, parse_cell_options, replicate_arguments
from .prompt_template import Expansion, expand
from .traits import setting_trait

if TYPE_CHECKING:
    from .chat import Metrics, TurnResult
    from .display import LiveReply
    from .request import TurnRequest
    from .store import LogStore

log = logging.getLogger(__name__)
_CANCEL_REPORT_WAIT = 2.0  # seconds an interrupted cell waits to say what its cancel did


def loaded_magics() -> ReplicateMagics | None:
    """The ``ReplicateMagics`` of the running shell once ``%load_ext`` registered it, else None:
    whose ``%config`` settings the panel and ``replicate_magic.log()`` follow."""
    from IPython import get_ipython

    shell = get_ipython()
    magics = shell.magics_manager.registry.get("ReplicateMagics") if shell is not None else None
    return magics if isinstance(magics, ReplicateMagics) else None


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
    log = setting_trait("log").tag(config=True)
    log_path = setting_trait("log_path").tag(config=True)
    cache = setting_trait("cache").tag(config=True)
    prices = setting_trait("prices").tag(config=True)
    embed_limit = setting_trait("embed_limit").tag(config=True)

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

        A model that makes files (images, audio, video) shows its progress, then the files
        themselves, embedded in the output; ``-o`` gets them as file objects and ``--save DIR``
        writes them. ``-i KEY=@PATH`` (or ``@{name}``) sends a local file, ``--image PATH`` an
        image to a vision model. ``--cache`` replays from the local log.

        As a line magic: ``%replicate history [NAME] [-n TURNS]``, ``reset [NAME]``, ``chats``,
        ``export FILE [NAME] [--force]``, ``load FILE [NAME] [--replace]``, ``models``,
        ``panel [NAME]``, ``log``, ``restore [NAME]``.
        """
        try:
            return self._subcommand(line) if cell is None else self._cell(line, cell)
        except KeyboardInterrupt:  # before any request (a turn's own interrupt is handled in it)
            raise ReplyInterrupted("Interrupted before anything was sent; nothing was asked.") from None

    def _subcommand(self, line: str) -> Any:
        from .subcommands import Subcommands  # loaded on first use: %load_ext stays cheap

        return Subcommands(self).run(line)

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
        from .display import LiveReply  # not at %load_ext: warm_up imports these meanwhile
        from .request import Configured, build_request

        request = build_request(prompt, options, Configured.of(self), cell_id=self._turn_key(),
                                notebook=self._notebook())
        request = self._with_files(request)
        fmt = options.format or self.output_format
        reply = LiveReply(fmt, rich=self._rich())
        reply.start(status=f"asking {request.model}…")
        result, metrics = self._run_turn(request, reply)
        if options.out:
            self._shell().user_ns[options.out] = result.value
        self._show_result_line(result, metrics, expansion, reply)

    def _run_turn(self, request: TurnRequest, reply: LiveReply) -> tuple[TurnResult, Metrics | None]:
        """The turn on the private loop; any failure finishes the area and is one line."""
        from .cancels import StopReport
        from .chat import ChatSession
        from .loop import shared_loop

        session = ChatSession(log=self.log_store(), prices=self.prices)
        answered: list[TurnResult] = []  # set once the reply is complete and recorded
        stops = StopReport()  # what became of any cancel this turn needed: told, never assumed

        async def turn() -> Metrics | None:
            with stops.watching():
                result = await session.ask(request, on_token=reply.append, on_log=reply.status)
            answered.append(result)
            # The whole reply shows now; the metrics request is already under way.
            if result.files is not None:
                reply.text = ""  # the URLs a stream may have shown: the files themselves stand there now
                reply.finish("" if result.files else "the model made no files", files=result.files)
            else:
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

    def _with_files(self, request: TurnRequest) -> TurnRequest:
        """The request with its -i @ files and --image read now (variables as they are now);
        a missing file or variable fails the cell here, before anything is sent."""
        from dataclasses import replace

        from .uploads import load_files

        return replace(request, settings=load_files(request.settings, self._shell().user_ns))

    def log_store(self) -> LogStore | None:
        """The local log as configured (``log``, ``log_path``), or None when it is off."""
        from .journal import shared_log

        return shared_log(self.log_path) if self.log else None

    def _notebook(self) -> str | None:
        """The notebook's path where the frontend tells it (Jupyter sets JPY_SESSION_NAME)."""
        named = self._shell().user_ns.get("__session__") or os.environ.get("JPY_SESSION_NAME")
        return named if isinstance(named, str) and named else None

    def _shell(self) -> Any:
        """The shell the magics run in (IPython's own type leaves history_manager optional)."""
        if self.shell is None:
            raise UsageError("replicate_magic needs IPython: run %load_ext replicate_magic in a shell")
        return self.shell

    def _rich(self) -> bool:
        """Notebooks (a kernel) get a live Markdown area; terminal IPython gets streamed text."""
        return type(self.shell).__module__.startswith("ipykernel")
