"""One prompt per element of the data: the items of ``--each`` and ``map``, and their results. Pure.

The data is a list, tuple, dict, pandas Series or DataFrame, or any other iterable (read
once, into a list). Each element is one item with a key (its position, dict key or index
label) and fields: a mapping's keys, a DataFrame row's columns. The template is a prompt in
which ``{item}`` is the element, ``{index}`` its key and ``{column}`` each field, by the same
rules as a single cell's ``{name}`` (prompt_template.py: outside code only, the API token
never sent). Every prompt is built, and every field checked, before anything is sent.

pandas is never imported: its objects are recognised by their type's module, and the
results go back into one of the input's own types (``Series(values, index=...)``).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .context import Describer, is_pandas
from .errors import InvalidRequestError
from .prompt_template import Expansion, expand, names_used

__all__ = ["BatchItem", "Results", "batch_items", "results_like", "table_like"]

_ITEM_NAMES = ("item", "index")


@dataclass(frozen=True)
class BatchItem:
    key: Any  # where the result goes: a position, a dict key, an index label
    prompt: str
    expanded: tuple[str, ...] = ()  # placeholders expanded, for the line under the results
    withheld: tuple[str, ...] = ()  # placeholders kept as typed: their value holds the API token


class Results(list[Any]):
    """The replies in input order (``None`` where an item failed); ``errors`` maps each failed
    item's key to its one-line reason, ``keys`` the key of each position."""

    def __init__(self, values: Iterable[Any] = (), keys: Sequence[Any] = (), errors: Mapping[Any, str] | None = None):
        super().__init__(values)
        self.keys = list(keys)
        self.errors: dict[Any, str] = dict(errors or {})


@dataclass(frozen=True)
class _Element:
    key: Any
    value: Any
    fields: Mapping[str, Any] = field(default_factory=dict)


def _elements(data: Any, name: str) -> list[_Element]:
    if isinstance(data, (str, bytes, bytearray)):
        raise InvalidRequestError(f"--each {name}: a {type(data).__name__} is one prompt's text, not a list of "
                                  "items; put it in a list, or use a plain %%replicate cell")
    if is_pandas(data, "DataFrame"):
        columns = [str(c) for c in data.columns]
        rows = (dict(zip(columns, row, strict=True)) for row in data.itertuples(index=False, name=None))
        return [_Element(key, row, row) for key, row in zip(data.index, rows, strict=True)]  # {item} is the row
    if is_pandas(data, "Series"):
        return [_Element(key, value, _fields(value)) for key, value in data.items()]
    if isinstance(data, Mapping):
        return [_Element(key, value, _fields(value)) for key, value in data.items()]
    try:
        values = list(data)
    except TypeError:
        raise InvalidRequestError(f"--each {name}: a {type(data).__name__} is not a list, tuple, dict, pandas "
                                  "Series or DataFrame, nor anything iterable") from None
    return [_Element(index, value, _fields(value)) for index, value in enumerate(values)]


def _fields(value: Any) -> Mapping[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}


def batch_items(template: str, data: Any, name: str, namespace: Mapping[str, Any], *,
                token: str | None = None, expand_names: bool = True, limit: int | None = None,
                describe_limit: int | None = None) -> list[BatchItem]:
    """One item per element of ``data``, its prompt the template expanded for it.

    A field the template uses that an element lacks (and no variable of that name exists)
    is one error naming the element and the field; an empty ``data`` is one error too, and
    so is one of more than ``limit`` elements (counted before any prompt is built). With
    ``describe_limit`` (characters), a DataFrame is described and a long value cut, as in a
    single cell (``context.Describer``).
    """
    elements = _elements(data, name)
    if not elements:
        raise InvalidRequestError(f"--each {name}: it is empty; there is nothing to ask")
    if limit is not None and len(elements) > limit:
        raise InvalidRequestError(
            f"{len(elements):,} items would create {len(elements):,} predictions, each billed as usual; nothing "
            "was sent. Next: add --yes (yes=True) to run them, or try a slice first.")
    used = names_used(template) if expand_names else ()
    items = []
    for element in elements:
        missing = [n for n in used if n not in element.fields and n not in _ITEM_NAMES and n not in namespace]
        if missing:
            raise InvalidRequestError(
                f"--each {name}: item {element.key!r} has no field {missing[0]!r} (the template uses "
                f"{{{missing[0]}}}); nothing was sent")
        if not expand_names:
            items.append(BatchItem(element.key, template.strip()))
            continue
        scope: Mapping[str, Any] = ChainMap({"item": element.value, "index": element.key}, dict(element.fields),
                                            namespace)  # type: ignore[arg-type]  # only read
        describer = Describer(describe_limit) if describe_limit is not None else None
        expansion: Expansion = expand(template, scope, token=token, describe=describer)
        if describer is not None:
            describer.check()
        prompt = expansion.text.strip()
        if not prompt:
            raise InvalidRequestError(f"--each {name}: the prompt of item {element.key!r} is empty once expanded")
        items.append(BatchItem(element.key, prompt, expansion.names, expansion.withheld))
    return items


def results_like(data: Any, values: Sequence[Any], keys: Sequence[Any], errors: Mapping[Any, str]) -> Any:
    """The results in the input's shape: a Series with the same index for a Series or a
    DataFrame (its ``attrs["errors"]`` holding the failures), else ``Results``."""
    if is_pandas(data, "Series") or is_pandas(data, "DataFrame"):
        series_type = type(data.index.to_series())  # pandas' Series, without importing pandas
        series = series_type(list(values), index=data.index, dtype=object)
        series.attrs["errors"] = dict(errors)
        return series
    return Results(values, keys, errors)


def table_like(data: Any, models: Sequence[str], values: Mapping[tuple[Any, str], Any],
               errors: Mapping[Any, str]) -> Any:
    """Items by models (``--each`` with several ``-m``): a DataFrame with the input's index and a
    column per model for a Series or DataFrame input (failures in ``attrs["errors"]``, keyed
    by ``(index, model)``), else ``Results`` of one dict (model -> reply) per item."""
    keys = list(dict.fromkeys(key for key, _ in values))
    rows = [{model: values.get((key, model)) for model in models} for key in keys]
    if is_pandas(data, "Series") or is_pandas(data, "DataFrame"):
        frame_type = type(data.index.to_frame())  # pandas' DataFrame, without importing pandas
        frame = frame_type(rows, index=data.index, columns=list(models), dtype=object)
        frame.attrs["errors"] = dict(errors)
        return frame
    return Results(rows, keys, errors)
