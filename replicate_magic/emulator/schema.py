"""`EmulatedModel`: one model's name, version and Cog schema, rendered as the API renders them (pure data)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EmulatedModel", "OUTPUT_SCHEMA", "COG_VERSION", "prop", "enum_ref"]

# Streaming text models declare this exact Output schema (Cog ConcatenateIterator).
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string"},
    "title": "Output",
    "x-cog-array-type": "iterator",
    "x-cog-array-display": "concatenate",
}

COG_VERSION = "0.9.4"


def prop(order: int, type_: str, description: str, **extra: Any) -> dict[str, Any]:
    """One Input property the way Cog renders it (title derived from the name later)."""
    out: dict[str, Any] = {"type": type_, "description": description, "x-order": order}
    out.update(extra)
    return out


def enum_ref(order: int, name: str, description: str, default: Any) -> dict[str, Any]:
    """A choices Input as Cog (pydantic 1) renders it: no type or title of its own, an ``allOf``
    pointing at ``components.schemas.<name>`` (stability-ai/sdxl's ``refine`` and ``scheduler`` in
    replicate-python tests/cassettes/models-get.yaml)."""
    return {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "default": default,
            "x-order": order, "description": description}


@dataclass(frozen=True)
class EmulatedModel:
    """A model: ``owner/name``, a fixed version id, its Input and Output schemas and how it runs.

    `kind` picks the emulated run: ``text`` (the deterministic responder, streamed), ``vision``
    (text that describes the image it was sent), ``image`` (files on the file host), ``audio``.
    `streams` False means predictions have no ``urls.stream`` (as for stability-ai/sdxl).
    `enums` are the component schemas that ``allOf`` inputs refer to.
    """

    owner: str
    name: str
    description: str
    properties: dict[str, dict[str, Any]]
    required: tuple[str, ...] = ()
    version_created_at: str = "2024-04-17T21:44:13.346404Z"
    output: dict[str, Any] = field(default_factory=lambda: dict(OUTPUT_SCHEMA))
    enums: dict[str, list[str]] = field(default_factory=dict)
    kind: str = "text"
    streams: bool = True
    real_version: str | None = None  # the version id Replicate gives it, where one was recorded
    cog_version: str = COG_VERSION

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def version_id(self) -> str:
        # Stable across runs so tests and notebooks can pin it.
        return self.real_version or hashlib.sha256(self.ref.encode()).hexdigest()

    def input_schema(self) -> dict[str, Any]:
        props = {}
        for key, value in self.properties.items():
            # Cog gives every property a title, except the allOf ones (their enum schema has it).
            props[key] = value if "allOf" in value else {"title": key.replace("_", " ").title(), **value}
        schema: dict[str, Any] = {"type": "object", "title": "Input", "properties": props}
        if self.required:
            schema["required"] = list(self.required)
        return schema

    def components(self) -> dict[str, Any]:
        """``components.schemas``: Input, Output and the enums (``"An enumeration."``, as Cog says)."""
        schemas: dict[str, Any] = {"Input": self.input_schema(), "Output": dict(self.output)}
        for name, values in self.enums.items():
            schemas[name] = {"enum": list(values), "type": "string", "title": name,
                             "description": "An enumeration."}
        return schemas

    def openapi_schema(self) -> dict[str, Any]:
        return {
            "openapi": "3.0.2",
            "info": {"title": "Cog", "version": "0.1.0"},
            "paths": {},
            "components": {"schemas": self.components()},
        }

    def version_object(self) -> dict[str, Any]:
        return {
            "id": self.version_id,
            "created_at": self.version_created_at,
            "cog_version": self.cog_version,
            "openapi_schema": self.openapi_schema(),
        }

    def model_object(self) -> dict[str, Any]:
        # The keys of GET /v1/models/stability-ai/sdxl in replicate-python's cassettes; the
        # newest (predictions-cancel.yaml, 2024-04) adds created_at. One version only here,
        # so the model is as old as it.
        return {
            "url": f"https://replicate.com/{self.ref}",
            "owner": self.owner,
            "name": self.name,
            "description": self.description,
            "visibility": "public",
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "run_count": 0,
            "cover_image_url": None,
            "default_example": None,
            "latest_version": self.version_object(),
            "created_at": self.version_created_at,
        }
