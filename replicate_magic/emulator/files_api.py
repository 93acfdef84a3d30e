"""The Files API on the API server: ``POST/GET /v1/files``, ``GET/DELETE /v1/files/{id}``.

Shapes as recorded in replicate-python tests/cassettes/file-operations.yaml (2024-08): a create
answers 201 with id, name, content_type, size, etag (the MD5), checksums {sha256, md5},
metadata, created_at, expires_at (a day later), urls {get}; the list is
``{"next": null, "previous": null, "results": [...]}``; a delete answers 204 with no body.
The multipart fields are documented in replicate-python-beta's files resource: ``content``
(required), ``filename``, ``type`` (default application/octet-stream), ``metadata`` (JSON).
Bodies over 100 MiB are refused before this, in state.py, with Cloudflare's 413 page.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .files import StoredFile, new_file_id
from .multipart import Part, parse_multipart
from .prediction import iso
from .problems import not_found, problem
from .state import STATE_KEY, EmulatorState

__all__ = ["add_file_routes", "file_json"]

_MAX_FILENAME_BYTES = 255  # "required, ≤ 255 bytes, valid UTF-8" (replicate-python-beta)


def file_json(stored: StoredFile, base_url: str) -> dict[str, Any]:
    return {
        "id": stored.key,
        "name": stored.name,
        "content_type": stored.content_type,
        "size": stored.size,
        "etag": stored.md5,
        "checksums": {"sha256": stored.sha256, "md5": stored.md5},
        "metadata": stored.metadata,
        "created_at": iso(stored.created_ns, 3),
        "expires_at": iso(stored.expires_ns, 3),
        "urls": {"get": f"{base_url}/v1/files/{stored.key}"},
    }


def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE_KEY]


def _field(parts: list[Part], name: str) -> str | None:
    part = next((p for p in parts if p.name == name), None)
    return part.data.decode("utf-8", "replace") if part is not None else None


def _invalid(detail: str) -> web.Response:
    # The real wording of these refusals is not recorded; the status and shape follow the API's
    # other validation errors.
    return problem(422, detail, "Invalid file")


async def create_file(request: web.Request) -> web.Response:
    state = _state(request)
    parts = parse_multipart(await request.read(), request.headers.get("Content-Type", ""))
    if parts is None:
        return problem(400, "The request body must be multipart/form-data.", "Bad request")
    content = next((p for p in parts if p.name == "content"), None)
    if content is None:
        return _invalid("content is required")
    name = _field(parts, "filename") or content.filename or ""
    if not name:
        return _invalid("filename is required")
    if len(name.encode()) > _MAX_FILENAME_BYTES:
        return _invalid(f"filename must be at most {_MAX_FILENAME_BYTES} bytes")
    raw_metadata = _field(parts, "metadata")
    try:
        metadata = json.loads(raw_metadata) if raw_metadata else {}
    except ValueError:
        return _invalid("metadata must be valid JSON")
    content_type = _field(parts, "type") or content.content_type or "application/octet-stream"
    stored = StoredFile(key=new_file_id(), name=name, content_type=content_type, data=content.data,
                        lifetime=state.upload_lifetime, metadata=metadata)
    state.uploads.add(stored)
    return web.json_response(file_json(stored, state.base_url), status=201)


async def list_files(request: web.Request) -> web.Response:
    state = _state(request)
    results = [file_json(f, state.base_url) for f in state.uploads.live()]  # newest first, as documented
    return web.json_response({"next": None, "previous": None, "results": results})


async def get_file(request: web.Request) -> web.Response:
    state = _state(request)
    stored = state.uploads.get(request.match_info["id"])
    return web.json_response(file_json(stored, state.base_url)) if stored else not_found()


async def delete_file(request: web.Request) -> web.Response:
    if not _state(request).uploads.delete(request.match_info["id"]):
        return not_found()
    return web.Response(status=204)


def add_file_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/files", create_file)
    router.add_get("/v1/files", list_files)
    router.add_get("/v1/files/{id}", get_file)
    router.add_delete("/v1/files/{id}", delete_file)
