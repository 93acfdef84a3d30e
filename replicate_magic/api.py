"""The Python API (``ask``, ``map`` and their async twins) and ``%%replicate --each``: glue.

``ask`` is one turn, ``map`` one batch (batch.py) with the template filled per item
(each.py); both build their requests with ``request.build_request``, as the magic does, from
keyword settings named like the magic's flags (``temperature``, ``max_tokens``, ``system``,
``inputs``, ``cache``...). In a notebook they show the reply, or the batch's progress,
live; in terminal IPython as text; in a plain script nothing, unless ``show=True``. The
settings a call does not give follow ``%config ReplicateMagics`` when the extension is
loaded, else the built-in defaults.
"""

from __future__ import annotations

import dataclasses
from collections import ChainMap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .batch import BatchRun, ItemOutcome
from .batch_view import BatchView, summary_line
from .catalog import resolve_model
from .context import CHARS_PER_TOKEN
from .each import batch_items, results_like, table_like
from .environment import find_token
from .errors import InvalidRequestError, ReplyInterrupted
from .loop import shared_loop
from .options import CellOptions, options_of
from .prompt_template import withheld_note
from .request import Configured, build_request
from .structured import AnswerFormat, answer_format

if TYPE_CHECKING:
    from .magics import ReplicateMagics

__all__ = ["LARGE_BATCH", "ask", "ask_async", "map", "map_async", "run_each_cell"]

LARGE_BATCH = 1000  # items beyond which a batch runs only when told to (--yes, yes=True)


# -- the Python API -------------------------------------------------------------------------------


def ask(prompt: str, model: str | None = None, chat: str = "default", *, schema: Any = None,
        format: str | None = None, show: bool | None = None, **settings: Any) -> Any:
    """Ask ``model`` (default: the configured one) and return the reply's text (a model that
    makes files: its files). The turn continues conversation ``chat`` unless
    ``no_history=True``. Blocks until the reply is complete; in async code use ``ask_async``.

    ``schema`` (a JSON Schema dict, a pydantic model class or a compact string such as
    ``"name str, age int"``) or ``format="json"`` asks for a JSON answer, as ``--schema`` and
    ``-f json`` do: the object is returned (a pydantic model's instance), checked, asked again
    once when invalid, else ``InvalidAnswerError``."""
    answer = _answer(schema, format)
    options = _options(settings, model=model, chat=chat)
    magics = _magics()
    if _live(show):
        return magics.ask_shown(prompt, options, answer=answer)
    return shared_loop().run(_ask_quietly(prompt, options, magics, answer))


async def ask_async(prompt: str, model: str | None = None, chat: str = "default", *, schema: Any = None,
                    format: str | None = None, **settings: Any) -> Any:
    """``ask`` for code already on an event loop: runs on that loop, shows nothing."""
    answer = _answer(schema, format)
    return await _ask_quietly(prompt, _options(settings, model=model, chat=chat), _magics(), answer)


def map(template: str, items: Any, model: str | None = None, concurrency: int | None = None, *,
        schema: Any = None, format: str | None = None, yes: bool = False, show: bool | None = None,
        **settings: Any) -> Any:
    """Ask once per element of ``items``, with ``{item}``, ``{index}`` and ``{column}`` in the
    template filled for each; the replies in input order (``None`` where one failed, its
    reason in ``.errors``; a Series with the same index for a Series or DataFrame, its
    failures in ``.attrs["errors"]``). At most ``concurrency`` predictions run at once.
    ``schema`` or ``format="json"``: each reply is read as a JSON answer, as in ``ask``."""
    answer = _answer(schema, format)
    options = _options(settings, model=model, concurrency=concurrency, yes=yes)
    magics = _magics()
    batch = _prepare(magics, options, template, items, "items", {}, answer=answer)
    view = BatchView(rich=magics.rich_output()) if _live(show) else None
    return _run_blocking(magics, batch, view)


async def map_async(template: str, items: Any, model: str | None = None, concurrency: int | None = None, *,
                    schema: Any = None, format: str | None = None, yes: bool = False, **settings: Any) -> Any:
    """``map`` for code already on an event loop: runs on that loop, shows nothing."""
    answer = _answer(schema, format)
    options = _options(settings, model=model, concurrency=concurrency, yes=yes)
    batch = _prepare(_magics(), options, template, items, "items", {}, answer=answer)
    await batch.run.run()
    return batch.results()


# -- %%replicate --each ----------------------------------------------------------------------------


def run_each_cell(magics: ReplicateMagics, options: CellOptions, template: str, *,
                  extra: Mapping[str, Any] | None = None, context: str = "") -> None:
    """The cell as a template over the variable ``--each`` names; ``-o`` gets the results.
    ``extra`` names fill the template too (a saved template's ``{input}``); ``context``
    (``--context``) follows every item's prompt."""
    name = options.each or ""
    namespace = magics.user_namespace()
    if name not in namespace:
        raise InvalidRequestError(f"--each {name}: no variable {name!r} in the notebook; define it first")
    scope: Mapping[str, Any] = ChainMap(dict(extra), namespace) if extra else namespace
    batch = _prepare(magics, options, template, namespace[name], name, scope, context=context)
    results = _run_blocking(magics, batch, BatchView(rich=magics.rich_output()), out=options.out)
    del results  # already in the namespace (-o), and the summary is on screen: no Out[]


# -- shared ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Batch:
    data: Any
    run: BatchRun
    what: str
    models: tuple[str, ...] = ()  # several: each item asked of each, a table of items by models
    notes: tuple[str, ...] = ()  # for the summary: placeholders withheld

    def results(self) -> Any:
        outcomes = self.run.outcomes
        errors = {o.key: o.error for o in outcomes if o.error is not None}
        if len(self.models) > 1:
            return table_like(self.data, self.models, {o.key: _value(o) for o in outcomes}, errors)
        return results_like(self.data, [_value(o) for o in outcomes], [o.key for o in outcomes], errors)


def _value(outcome: ItemOutcome) -> Any:
    """An item's result: its reply's text, or the object of a JSON answer (-f json, --schema)."""
    return outcome.result.data if outcome.result is not None and outcome.result.parsed else outcome.text


def _prepare(magics: ReplicateMagics, options: CellOptions, template: str, data: Any, name: str,
             namespace: Mapping[str, Any], context: str = "", answer: AnswerFormat | None = None) -> _Batch:
    """Every item's request, checked, before anything is sent."""
    expand = magics.expand_variables and not options.no_expand
    scope = ChainMap({"In": magics.input_history(), "Err": magics.error_lookup()}, dict(namespace)) if namespace else {}
    items = batch_items(template, data, name, scope, token=find_token(), expand_names=expand,
                        limit=None if options.yes else LARGE_BATCH,
                        describe_limit=magics.context_budget * CHARS_PER_TOKEN)
    concurrency = options.concurrency or magics.concurrency
    base = magics.with_files(build_request("", dataclasses.replace(options, no_history=True),
                                           Configured.of(magics), notebook=magics.notebook_path()))
    base = magics.with_answer(base, options, answer)  # -f json, --schema: each item's answer read as JSON
    models = options.models if len(options.models) > 1 else (base.model,)
    bases = {model: dataclasses.replace(base, model=resolve_model(model)) for model in models}
    requests = [dataclasses.replace(bases[model], prompt=f"{item.prompt}\n\n{context}" if context else item.prompt)
                for item in items for model in models]
    keys = [(item.key, model) if len(models) > 1 else item.key for item in items for model in models]
    run = BatchRun(magics.chat_session(), requests, keys, concurrency=concurrency)
    what = base.model if len(models) == 1 else f"{len(models)} models"
    withheld = dict.fromkeys(name for item in items for name in item.withheld)
    kept = sum(bool(item.withheld) for item in items)
    notes = (withheld_note(list(withheld), f" in {kept} of {len(items)} items"),) if withheld else ()
    return _Batch(data, run, what, models if len(models) > 1 else (), notes)


def _run_blocking(magics: ReplicateMagics, batch: _Batch, view: BatchView | None, out: str | None = None) -> Any:
    from .cancels import REPORT_WAIT, StopReport

    stops = StopReport()
    run = batch.run
    if view is not None:
        run._on_change = view.changed
        view.start(len(run.requests), batch.what)

    async def go() -> None:
        with stops.watching():
            await run.run()

    interrupted = ""
    try:
        shared_loop().run(go())
    except KeyboardInterrupt:
        stops.wait(REPORT_WAIT)
        interrupted = f"the {run.progress.in_flight or 'running'} in flight stopped ({stops.message()})"
    results = batch.results()
    if out:
        magics.user_namespace()[out] = results
    summary = summary_line(run.progress, run.outcomes, interrupted, batch.notes)
    if view is not None:
        view.finish(summary)
    if interrupted:
        raise ReplyInterrupted(f"Interrupted: {summary}. What finished is kept" +
                               (f" in {out}" if out else "") + " and in the log.")
    return results


async def _ask_quietly(prompt: str, options: CellOptions, magics: ReplicateMagics,
                       answer: AnswerFormat | None = None) -> Any:
    request = magics.with_answer(magics.with_files(build_request(prompt, options, Configured.of(magics))),
                                 options, answer)
    session = magics.chat_session()
    result = await session.ask(request, on_token=lambda _: None)
    await session.reported_metrics(result)  # the exchange is logged once Replicate's metrics are in
    return result.value


def _answer(schema: Any, format: str | None) -> AnswerFormat | None:
    """The JSON answer ``schema=`` or ``format="json"`` asks for; a bad one is a ValueError
    naming it, raised before anything is sent."""
    if format not in (None, "json"):
        raise ValueError(f"format: {format!r} is not a format a call returns; format='json' (or schema=...) asks "
                         "for a JSON answer, and the reply's text is returned otherwise")
    if schema is None:
        return None if format is None else AnswerFormat()
    name = schema.__name__ if isinstance(schema, type) else "answer"
    try:
        return answer_format(schema, name)
    except ValueError as error:
        raise ValueError(f"schema: {error}; nothing was sent") from None


def _options(settings: Mapping[str, Any], **given: Any) -> CellOptions:
    return options_of({**settings, **{k: v for k, v in given.items() if v is not None}})


def _magics() -> ReplicateMagics:
    """The loaded magic (its %config), else one of defaults that shows in plain text."""
    from .magics import ReplicateMagics, loaded_magics

    return loaded_magics() or ReplicateMagics(shell=None)


def _live(show: bool | None) -> bool:
    """Shown where the extension is loaded (a notebook, terminal IPython), else as asked."""
    from .magics import loaded_magics

    return show if show is not None else loaded_magics() is not None

