"""Deployments: ``GET /v1/deployments``, ``GET /v1/deployments/{owner}/{name}`` and
``POST /v1/deployments/{owner}/{name}/predictions``, each deployment routing to an emulated model.

Which deployments exist is the emulator's ``deployments`` setting ({"acme/my-app": "owner/model"};
None for one with no current release). The deployment object is the shape of Replicate's OpenAPI
document (deployments.get). No answer of the real service about deployments is recorded: an
unknown deployment gets the API's generic 404, and a prediction for a deployment without a
release (replicate-python types ``current_release`` as optional; the API may never send null)
gets the 422 recorded for a version that does not exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .models import MODELS, EmulatedModel
from .problems import invalid_version, not_found
from .state import STATE_KEY, EmulatorState

__all__ = ["add_deployment_routes", "deployment_json"]

Create = Callable[[web.Request, EmulatedModel, str], Awaitable[web.Response]]


def deployment_json(name: str, model: EmulatedModel | None) -> dict[str, Any]:
    owner, _, short = name.partition("/")
    if model is None:
        return {"owner": owner, "name": short, "current_release": None}
    return {
        "owner": owner,
        "name": short,
        "current_release": {
            "number": 1,
            "model": model.ref,
            "version": model.version_id,
            "created_at": model.version_created_at,
            "created_by": {"type": "user", "username": owner, "name": owner, "avatar_url": None,
                           "github_url": None},
            "configuration": {"hardware": "gpu-t4", "min_instances": 0, "max_instances": 1},
        },
    }


def _deployment(request: web.Request) -> tuple[str, bool, EmulatedModel | None]:
    """The deployment's name, whether it exists, and the model its current release runs."""
    state: EmulatorState = request.app[STATE_KEY]
    name = f"{request.match_info['owner']}/{request.match_info['name']}"
    target = state.deployments.get(name)
    return name, name in state.deployments, MODELS.get(target) if target else None


def add_deployment_routes(router: web.UrlDispatcher, create: Create) -> None:
    async def list_deployments(request: web.Request) -> web.Response:
        state: EmulatorState = request.app[STATE_KEY]
        results = [deployment_json(name, MODELS[target] if target else None)
                   for name, target in reversed(state.deployments.items())]
        return web.json_response({"next": None, "previous": None, "results": results})

    async def get_deployment(request: web.Request) -> web.Response:
        name, exists, model = _deployment(request)
        return web.json_response(deployment_json(name, model)) if exists else not_found()

    async def create_for_deployment(request: web.Request) -> web.Response:
        name, exists, model = _deployment(request)
        if not exists:
            return not_found()
        return await create(request, model, name) if model else invalid_version()

    router.add_get("/v1/deployments", list_deployments)
    router.add_get("/v1/deployments/{owner}/{name}", get_deployment)
    router.add_post("/v1/deployments/{owner}/{name}/predictions", create_for_deployment)
