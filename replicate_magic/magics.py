"""The ``%%replicate`` cell magic and the ``%replicate`` subcommands: IPython glue only.

Configure with ``%config ReplicateMagics.model = "owner/name"`` (or ``c.ReplicateMagics``
in ``ipython_config.py``). The API token is not a setting: ``%config`` prints settings, so
it is read from ``REPLICATE_API_TOKEN`` when a request starts, and shown nowhere.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import ChainMap
from collections.abc import Mapping, MutableMapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

from .environment import find_token
from .errors import InvalidAnswerError, InvalidRequestError, ReplyInterrupted
from .errors_context import CellErrors, ErrorLookup
from .options import CellOptions, line_over, parse_cell_options, replicate_arguments
from .prompt_template import Expansion, expand
from .templates import INPUT, Template, joined
from .traits import setting_trait

if TYPE_CHECKING:
    from .chat import ChatSession
    from .request import TurnRequest
    from .store import LogStore
    from .structured import AnswerFormat

log = logging.getLogger(__name__)


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
    context_budget = setting_trait("context_budget").tag(config=True)
    log = setting_trait("log").tag(config=True)
    log_path = setting_trait("log_path").tag(config=True)
    cache = setting_trait("cache").tag(config=True)
    prices = setting_trait("prices").tag(config=True)
    embed_limit = setting_trait("embed_limit").tag(config=True)
    concurrency = setting_trait("concurrency").tag(config=True)
    create_rate = setting_trait("create_rate").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._cell_id: str | None = None
        self._asked = 0  # turns asked during the current execution
        self.last_cell: tuple[str, str] | None = None  # the last %%replicate line and prompt, for templates
        self.errors = CellErrors()  # the last failing cells, for {Err}, {Err[N]} and %replicate fix
        if shell is not None:
            shell.events.register("pre_run_cell", self._remember_cell_id)
            shell.events.register("post_run_cell", self._remember_error)
            if getattr(sys, "last_value", None) is not None:  # an error shown before %load_ext
                self._remember_error(None, last_shown=True)

    def _remember_cell_id(self, info: Any) -> None:
        # Frontends send the cell's id; re-running a cell then replaces its earlier exchange.
        self._cell_id = getattr(info, "cell_id", None)
        self._asked = 0

    def _remember_error(self, result: Any, last_shown: bool = False) -> None:
        # IPython keeps the last error only, and not per cell: each failing cell is kept here.
        if not last_shown and (result is None or result.success):
            return
        try:
            from . import notebook_context

            if last_shown:
                notebook_context.record_last_shown(self.errors, self.shell)
            else:
                notebook_context.record_error(self.errors, result, self.shell)
        except Exception:  # never a traceback under a cell (or a failed %load_ext) for this
            log.exception("could not record a cell's error for {Err}")

    def running_count(self) -> int | None:
        """The execution count of the cell being run (In[N]), None outside a shell."""
        count = getattr(self.shell, "execution_count", None)
        return count - 1 if isinstance(count, int) else None

    def error_lookup(self) -> ErrorLookup:
        """``Err`` for a prompt's placeholders: ``{Err}``, ``{Err[N]}``."""
        return ErrorLookup(self.errors, self.running_count())

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

        A DataFrame or Series in ``{name}`` becomes a description (shape, columns and dtypes,
        first rows as a table, a numeric summary), and any value is cut to ``context_budget``
        tokens; ``--context NAME`` adds a variable after the prompt, described the same way.
        ``%replicate template NAME`` saves the last cell's line and prompt as a template, and
        ``-T NAME`` runs it with this cell's text as its ``{input}``.

        The notebook's errors: ``{Err}`` is the most recent error (its type, message and
        traceback, without colours, its middle cut to fit), ``{Err[3]}`` that of cell In[3];
        when there is none, the cell fails in one line and nothing is sent. ``%replicate fix [N]``
        asks the model to explain the most recent (or cell N's) error, given that cell's source
        and the traceback, and to propose a fix (one-shot: no history). ``-f code`` shows the
        reply as Markdown and puts its first fenced code block (the whole reply when it has
        none) into a new cell below (in terminal IPython, at the next prompt).

        ``-f json`` reads the reply as JSON (a fenced ```json block, else the JSON value in it) and
        ``-o`` gets the Python object; ``--schema NAME`` asks for JSON that follows the schema in
        that variable (a JSON Schema dict, a pydantic model class, or ``"name str, age int"``), sent
        in the model's own structured-output input where it has one, else in the prompt, checks the
        answer and asks again once when it is invalid.

        As a line magic: ``%replicate history [NAME] [-n TURNS]``, ``reset [NAME]``, ``chats``,
        ``export FILE [NAME] [--force]``, ``load FILE [NAME] [--replace]``, ``models``,
        ``panel [NAME]``, ``log``, ``restore [NAME]``, ``template [NAME] [--replace|--show|--delete]``.
        """
        try:
            if cell is None and line.lstrip().startswith(("-T", "--template")):
                return self._cell(line, "")  # %replicate -T NAME [flags]: a template that needs no {input}
            return self._subcommand(line) if cell is None else self._cell(line, cell)
        except KeyboardInterrupt:  # before any request (a turn's own interrupt is handled in it)
            raise ReplyInterrupted("Interrupted before anything was sent; nothing was asked.") from None

    def _subcommand(self, line: str) -> Any:
        from .subcommands import Subcommands  # loaded on first use: %load_ext stays cheap

        return Subcommands(self).run(line)

    def _cell(self, line: str, cell: str) -> None:
        options = parse_cell_options(line)
        template = self._saved_template(options.template) if options.template else None
        if template is not None:  # its flags under this line's; the cell fills its {input}
            line = line_over(template.line, line)
            options = parse_cell_options(line)
        if not cell.strip() and (template is None or template.takes_input):
            raise UsageError("The cell is empty: write the prompt below the %%replicate line." if template is None
                             else f"Template {template.name!r} takes the cell's text as {{input}}: write it below "
                             f"%%replicate -T {template.name}.")
        self.last_cell = (line, cell if template is None else template.prompt)  # what %replicate template saves
        # What is expanded first: the cell, or a template's prompt with the cell after it (no {input}).
        source = cell if template is None or template.takes_input else template.source(cell)
        if options.format == "code" and (options.each or len(options.models) > 1):
            raise UsageError("-f code puts one reply's code into a new cell: not with --each or several -m")
        if options.each:  # the cell is a template, filled per item
            from .api import run_each_cell

            # With a template, the cell's text (as typed) fills its {input} in each item's prompt.
            return run_each_cell(self, options, template.source(cell) if template else cell,
                                 extra={INPUT: cell} if template else None,
                                 context=self._context(options))
        expansion = Expansion(source)
        namespace: MutableMapping[str, Any] = {}
        if self.expand_variables and not options.no_expand:
            # The cell as typed: stripping first would turn a leading indented code block into prose.
            # {In[n]} is what the user typed, not IPython's transformed source.
            shell = self._shell()
            namespace = ChainMap({"In": shell.history_manager.input_hist_raw, "Err": self.error_lookup()},
                                 shell.user_ns)
            expansion = self._expanded(source, namespace)
        if template is not None:  # the cell's text, expanded, fills the template's {input}
            filled = self._expanded(template.prompt, ChainMap({INPUT: expansion.text.strip()}, namespace),
                                    verbatim=("{input}",)) if template.takes_input else expansion
            expansion = joined(expansion, filled, note=f"template: {template.name}")
        prompt = expansion.text.strip()
        if not prompt:
            raise UsageError(f"The prompt is empty once {', '.join(expansion.names)} expanded: nothing to send.")
        if options.context:  # after the prompt, each variable under its name
            prompt = f"{prompt}\n\n{self._context(options)}"
            expansion = joined(expansion, note=f"context: {', '.join(options.context)}")
        if len(options.models) > 1:  # -m A -m B: every model at once, side by side
            from .compare_view import compare

            compare(self, options, prompt, expansion)
        else:
            self._ask(options, prompt, expansion)
        return None  # the reply is already on screen: no Out[]

    def _expanded(self, text: str, namespace: Mapping[str, Any], verbatim: tuple[str, ...] = ()) -> Expansion:
        """``text`` expanded, a DataFrame described and a long value cut to ``context_budget``; a
        value that cannot be written out fails the cell here, in one line, before anything is sent."""
        from .context import CHARS_PER_TOKEN, Describer

        describer = Describer(self.context_budget * CHARS_PER_TOKEN, verbatim=verbatim)
        expansion = expand(text, namespace, token=find_token(), describe=describer)
        describer.check()
        return replace(expansion, notes=expansion.notes + describer.notes())

    def _context(self, options: CellOptions) -> str:
        """What ``--context`` adds after the prompt ("" without it)."""
        if not options.context:
            return ""
        from .context import CHARS_PER_TOKEN, context_block

        return context_block(options.context, self.user_namespace(), self.context_budget * CHARS_PER_TOKEN,
                             token=find_token())

    def _saved_template(self, name: str) -> Template:
        store = self.template_store()
        found = store.template(name)  # a StoreError is one line already
        if found is None:
            raise UsageError(f"There is no template {name!r} in {store.path}; %replicate template lists them, "
                             f"%replicate template {name} saves the last %%replicate cell as {name}.")
        return Template.of(found)

    def template_store(self) -> LogStore:
        """Where templates live: the local log's file (``log_path``), also when logging is off."""
        from .journal import shared_log

        return shared_log(self.log_path)

    # -- one turn -----------------------------------------------------------------------------

    def ask_shown(self, prompt: str, options: CellOptions, expansion: Expansion | None = None,
                  answer: AnswerFormat | None = None) -> Any:
        """One turn shown as a cell's is (``replicate_magic.ask``, ``%replicate fix``); what ``-o``
        would get. ``expansion`` names what the line under the reply says was expanded;
        ``answer`` is a JSON answer asked for from Python (``ask(schema=...)``)."""
        return self._ask(options, prompt, expansion or Expansion(prompt), answer)

    def _ask(self, options: CellOptions, prompt: str, expansion: Expansion, answer: AnswerFormat | None = None) -> Any:
        """Build the request, open the output area, run the turn, then publish its result."""
        from .cell_turn import run_turn, show_result_line
        from .display import LiveReply  # not at %load_ext: warm_up imports these meanwhile
        from .request import Configured, build_request

        request = build_request(prompt, options, Configured.of(self), cell_id=self._turn_key(),
                                notebook=self.notebook_path())
        request = self.with_answer(self.with_files(request), options, answer)
        fmt = "json" if answer is not None else options.format or self.output_format  # as -f json shows it
        # -f code: the reply shows as Markdown, then its code goes into a new cell.
        reply = LiveReply("markdown" if fmt == "code" else fmt, rich=self._rich())
        reply.start(status=f"asking {request.model}…")
        try:
            result, metrics = run_turn(self, request, reply)
        except InvalidAnswerError as error:  # -o keeps what the model said, to look at or fix by hand
            if options.out:
                self._shell().user_ns[options.out] = error.raw
                error.args = (f"{error} {options.out} holds the reply's text.",)
            raise
        if options.out:
            self._shell().user_ns[options.out] = result.value
        said = []
        if fmt == "code":
            from .notebook_context import code_into_new_cell

            said.append(code_into_new_cell(self._shell(), result.text))
        show_result_line(result, metrics, expansion, reply, said)
        return result.value

    # -- what the Python API and --each use -----------------------------------------------------

    def chat_session(self) -> ChatSession:
        """A session that logs and prices as this magic's %config says."""
        from .chat import ChatSession

        return ChatSession(log=self.log_store(), prices=self.prices)

    def user_namespace(self) -> dict[str, Any]:
        return self._shell().user_ns if self.shell is not None else {}

    def input_history(self) -> list[str]:
        """What the user typed in each cell, for ``{In[n]}``."""
        history = getattr(self.shell, "history_manager", None)
        return list(history.input_hist_raw) if history is not None else []

    def rich_output(self) -> bool:
        return self._rich()

    def notebook_path(self) -> str | None:
        return self._notebook() if self.shell is not None else None

    def with_files(self, request: TurnRequest) -> TurnRequest:
        """The request with its -i @ files and --image read now (variables as they are now);
        a missing file or variable fails the cell here, before anything is sent."""
        from dataclasses import replace

        from .uploads import load_files

        return replace(request, settings=load_files(request.settings, self.user_namespace() or None))

    def with_answer(self, request: TurnRequest, options: CellOptions,
                    answer: AnswerFormat | None = None) -> TurnRequest:
        """The request with the JSON answer ``-f json`` or ``--schema NAME`` asks for, the schema
        read from the variable now (or ``answer``, given from Python); one that cannot be right
        fails the cell here, before anything is sent."""
        from dataclasses import replace

        if answer is not None:
            return replace(request, settings=replace(request.settings, answer=answer))
        if options.format != "json" and options.schema is None:
            return request
        from .structured import AnswerFormat, answer_format

        answer = AnswerFormat()
        name = options.schema
        if name is not None:
            namespace = self.user_namespace()
            if name not in namespace:
                raise InvalidRequestError(
                    f"--schema {name}: no variable {name!r} in the notebook; define it first (a JSON Schema dict, "
                    "a pydantic model class, or a compact string such as 'name str, age int, tags list[str]')")
            try:
                answer = answer_format(namespace[name], name)
            except ValueError as error:
                raise InvalidRequestError(f"--schema {name}: {error}. Nothing was sent.") from None
        return replace(request, settings=replace(request.settings, answer=answer))

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
