"""What a model's ``openapi_schema`` tells the client, and a cache of it per model. Pure: no I/O.

``ModelSchema`` keeps the two parts the client uses: the Input properties (so inputs follow
the model's own keys and bounds, ``inputs.py``) and the kind of Output (text now; files are
the next kind to plug in here). ``SchemaCache`` holds them per (API base URL, model) for a
while: a model's latest version, and with it its schema, changes now and then, so an entry
is fetched again once old, and the old entry stays usable when that fetch fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ResponseError
from .inputs import input_properties

__all__ = ["SCHEMA_TTL", "ModelSchema", "OutputKind", "SchemaCache", "SchemaUnavailableError", "default_schemas"]

OutputKind = Literal["text", "files", "other"]
SCHEMA_TTL = 3600.0  # seconds an entry is used before it is fetched again


@dataclass(frozen=True)
class ModelSchema:
    properties: Mapping[str, Any] | None  # components.schemas.Input.properties; None when not declared
    output: OutputKind = "other"
    version: str | None = None  # the version id the schema belongs to, when Replicate named it
    hardware: str | None = None  # a deployment's hardware SKU (its release's configuration): prices it

    @classmethod
    def parse(cls, openapi_schema: Any, version: str | None = None) -> ModelSchema:
        """The parts of a Cog ``openapi_schema`` we use; whatever is missing reads as undeclared."""
        return cls(input_properties(openapi_schema), output_kind(openapi_schema), version)


def output_kind(openapi_schema: Any) -> OutputKind:
    """"text" for a string or an array of strings, "files" for URIs or an array of them, else "other"."""
    try:
        output = openapi_schema["components"]["schemas"]["Output"]
    except (TypeError, KeyError):
        return "other"
    if isinstance(output, Mapping) and output.get("type") == "array":
        output = output.get("items")
    if not isinstance(output, Mapping) or output.get("type") != "string":
        return "other"
    return "files" if output.get("format") == "uri" else "text"


class SchemaUnavailableError(ResponseError):
    """No schema could be fetched and none was known: nothing was sent, rather than guessed keys."""


Key = tuple[str, str]  # (API base URL, model reference)


class SchemaCache:
    """Schemas by (base URL, model), fresh for ``ttl`` seconds of ``clock`` and kept after that.

    The magic and the provider share ``default_schemas``; a caller that wants its own (a
    test, an application with several APIs) passes one to ``ReplicateClient.connect``.
    """

    def __init__(self, ttl: float = SCHEMA_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[Key, tuple[float, ModelSchema]] = {}

    def fresh(self, key: Key) -> ModelSchema | None:
        """The entry if it was fetched less than ``ttl`` ago."""
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[0] >= self.ttl:
            return None
        return entry[1]

    def last_known(self, key: Key) -> ModelSchema | None:
        """The entry however old: for when fetching it again failed."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, key: Key, schema: ModelSchema, age: float = 0.0) -> None:
        """Keep ``schema``, fetched ``age`` seconds ago (one read back from the local log is older)."""
        self._entries[key] = (self._clock() - age, schema)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


default_schemas = SchemaCache()  # the process's: every client that is given no other uses it
