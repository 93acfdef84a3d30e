"""Deployments: ``GET /v1/deployments``, ``GET /v1/deployments/{owner}/{name}`` and
``POST /v1/deployments/{owner}/{name}/predictions``, each deployment routing to an emulated model.

Which deployments exist is the emulator's ``deployments`` setting ({"acme/my-app": "owner/model"}).
The deployment object is the shape of Replicate's OpenAPI document (deployments.get); an unknown
deployment gets the API's generic 404 (its exact body for deployments is not recorded).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .models import MODELS, EmulatedModel
from .problems import not_found
from .state import STATE_KEY, EmulatorState

__all__ = ["add_deployment_routes", "deployment_json"]

Create = Callable[[web.Request, EmulatedModel, str], Awaitable[web.Response]]


def deployment_json(name: str, model: EmulatedModel) -> dict[str, Any]:
    owner, _, short = name.partition("/")
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


def _deployment(request: web.Request) -> tuple[str, EmulatedModel | None]:
    state: EmulatorState = request.app[STATE_KEY]
    name = f"{request.match_info['owner']}/{request.match_info['name']}"
    target = state.deployments.get(name)
    return name, MODELS.get(target) if target else None


def add_deployment_routes(router: web.UrlDispatcher, create: Create) -> None:
    async def list_deployments(request: web.Request) -> web.Response:
        state: EmulatorState = request.app[STATE_KEY]
        results = [deployment_json(name, MODELS[target]) for name, target in reversed(state.deployments.items())]
        return web.json_response({"next": None, "previous": None, "results": results})

    async def get_deployment(request: web.Request) -> web.Response:
        name, model = _deployment(request)
        return web.json_response(deployment_json(name, model)) if model else not_found()

    async def create_for_deployment(request: web.Request) -> web.Response:
        name, model = _deployment(request)
        return await create(request, model, name) if model else not_found()

    router.add_get("/v1/deployments", list_deployments)
    router.add_get("/v1/deployments/{owner}/{name}", get_deployment)
    router.add_post("/v1/deployments/{owner}/{name}/predictions", create_for_deployment)
