"""The API server (api.replicate.com): models, predictions, account."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from .deployments import add_deployment_routes
from .faults import Faults
from .fetch import check_inputs, image_notes
from .files_api import add_file_routes
from .json_mode import json_ask, json_reply
from .limits import MAX_FILES_BODY
from .markers import Markers, read_markers, tokens_per_second
from .models import MODELS, EmulatedModel, find_model, find_version
from .prediction import Prediction, generate, new_prediction_id
from .problems import (
    billing_required,
    internal_error,
    invalid_version,
    not_found,
    problem,
    throttled,
    validation_failed,
)
from .responder import apply_limits, count_input_tokens, respond, tokenize
from .runs import run_media, steps_of
from .state import STATE_KEY, EmulatorState, recording_middleware
from .validation import InvalidField, parse_cancel_after, validate_body, validate_input

__all__ = ["make_api_app"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PREFER_WAIT = re.compile(r"^wait(?:=([1-9]|[1-9][0-9]|60))?$")
_MIN_CANCEL_AFTER = 5.0  # seconds; documented minimum of Cancel-After
# The real maximum is not documented; a year is far beyond any run and keeps deadlines
# representable as timestamps.
_MAX_CANCEL_AFTER = 365 * 24 * 3600.0


class _RateWindow:
    """Per-minute request counts, only to fill ``ratelimit-*`` headers like the real API."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._counts: dict[int, int] = {}

    def headers(self, limit: int) -> dict[str, str]:
        now = time.monotonic()
        if now - self._start >= 60:
            self._start, self._counts = now, {}
        used = self._counts[limit] = self._counts.get(limit, 0) + 1
        reset = max(1, round(60 - (now - self._start)))
        return {"ratelimit-remaining": str(max(0, limit - used)), "ratelimit-reset": str(reset)}


_CREATE_ROUTES = frozenset({
    "/v1/models/{owner}/{name}/predictions", "/v1/predictions", "/v1/deployments/{owner}/{name}/predictions",
})


def _is_create(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return request.method == "POST" and resource is not None and resource.canonical in _CREATE_ROUTES


@web.middleware
async def _rate_limits(request: web.Request, handler: Any) -> web.StreamResponse:
    """Creates (after auth, before anything else, like a throttle in front of the handler): the
    injected ``rate_limit`` fault, then the token bucket; a 429 takes no token and creates
    nothing. Answers under 400 carry ``ratelimit-*`` headers: the bucket's for creates when
    limited, else per-minute counts (600 creates, 3000 other requests; those are not enforced)."""
    state = _state(request)
    is_create = _is_create(request)
    headers: dict[str, str] | None = None
    if is_create:
        now = time.monotonic()
        if state.faults.take_counter("rate_limit"):
            state.throttled.append(now)
            return throttled(state.faults.retry_after)
        bucket = state.create_bucket
        if bucket is not None:
            wait = bucket.take(now)
            if wait > 0:
                state.throttled.append(now)
                return throttled(wait, with_status=True)
            headers = {"ratelimit-remaining": str(bucket.remaining(now)),
                       "ratelimit-reset": str(bucket.reset_after(now))}
        state.create_times.append(now)
    response = await handler(request)
    if response.status < 400:
        response.headers.update(headers or request.app[_WINDOW_KEY].headers(600 if is_create else 3000))
    return response


_WINDOW_KEY: web.AppKey[_RateWindow] = web.AppKey("rate_window", _RateWindow)


def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE_KEY]


def _json(request: web.Request, data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def _read_json(request: web.Request) -> tuple[Any, web.Response | None]:
    try:
        return await request.json(), None
    except ValueError:
        return None, problem(400, "The request body is not valid JSON.", "Bad request")


async def create_for_model(request: web.Request) -> web.Response:
    model = find_model(request.match_info["owner"], request.match_info["name"])
    if model is None:
        return not_found()
    return await _create(request, model)


async def create_for_version(request: web.Request) -> web.Response:
    return await _create(request, None)


def _resolve_version(version: Any) -> tuple[EmulatedModel | None, str]:
    """A model and the version label for: a 64-hex id, ``owner/name:id`` or ``owner/name``."""
    if not isinstance(version, str):
        return None, ""
    if _HEX64.match(version):
        return find_version(version), version
    ref, colon, version_id = version.partition(":")
    model = MODELS.get(ref)
    if model is None:
        return None, ""
    if colon:
        return (model, version_id) if version_id == model.version_id else (None, "")
    return model, "hidden"  # official models hide their version


def _cancel_after(request: web.Request) -> tuple[float | None, web.Response | None]:
    """Seconds of the ``Cancel-After`` header (None when absent), or the 422 it earns."""
    value = request.headers.get("Cancel-After")
    if value is None:
        return None, None
    seconds = parse_cancel_after(value)
    if seconds is None or not _MIN_CANCEL_AFTER <= seconds <= _MAX_CANCEL_AFTER:
        return None, problem(422, "Cancel-After must be a duration from 5s to 8760h, "
                             "e.g. 30s, 5m, 1h30m, or a number of seconds.",
                             "Invalid Cancel-After header")
    return seconds, None


async def _create(request: web.Request, model: EmulatedModel | None,
                  deployment: str | None = None) -> web.Response:
    """Create a prediction; `model` None means the body names a `version` instead."""
    state = _state(request)
    if state.faults.take_counter("billing_required"):
        return billing_required()
    deadline, error = _cancel_after(request)  # checked before anything can be created
    if error is not None:
        return error
    body, error = await _read_json(request)
    if error is not None:
        return error
    errors = validate_body(body, version_required=model is None)
    if errors:
        return validation_failed(errors)
    version = "hidden"
    if model is None:
        model, version = _resolve_version(body["version"])
        if model is None:
            return invalid_version()
    errors = validate_input(body["input"], model.input_schema(), model.components())
    if errors:
        return validation_failed(errors)
    markers, errors = read_markers(body["input"])
    if errors:
        return validation_failed(errors)
    if markers.fail_create:
        return validation_failed([InvalidField(
            "emulator_marker", markers.field, "Rejected by its [[emulator:fail-create]] marker")])
    if markers.error_once and state.first_sight(markers.text):
        return internal_error()
    if deployment is not None:
        version = model.version_id  # a deployment runs one pinned version
    pred = _start_prediction(state, model, version, body, len(await request.read()), deployment, markers)
    if deadline is not None:
        pred.deadline_ns = pred.created_ns + int(deadline * 1e9)
        pred.deadline_timer = asyncio.get_running_loop().call_later(deadline, pred.expire)
    if pred.faults.slow_create:  # created, but the answer is slow to come back
        await asyncio.sleep(pred.faults.slow_create)
    wait = _PREFER_WAIT.match(request.headers.get("Prefer", "").strip())
    if wait:
        await pred.wait_finished(float(wait.group(1) or 60))
    return _json(request, pred.as_json(state.base_url, state.stream_base, for_create=True), status=201)


def _reply(state: EmulatorState, model: EmulatedModel, input: dict[str, Any], markers: Markers | None = None) -> str:
    """The language model's reply; with images, it first says what it received (size, type, hash).
    Asked for JSON (json_mode.py), it answers JSON that follows the schema it was sent."""
    ask = json_ask(input, model.properties)
    if ask is not None:
        broken = markers.bad_json if markers is not None else None
        if state.faults.take_counter("invalid_json"):
            broken = broken or "schema"
        return apply_limits(json_reply(model.ref, input, ask, broken), input, model.properties)
    text = respond(model.ref, input, model.properties)
    notes = image_notes(model, input, state)
    if not notes:
        return text
    header, _, rest = text.partition("\n\n")
    return apply_limits(f"{header} {notes}\n\n{rest}", input, model.properties)


def _with_markers(faults: Faults, markers: Markers, count: int) -> Faults:
    """The prediction's faults with its prompt's markers applied; `count`: its tokens (or steps)."""
    changes: dict[str, Any] = {}
    if markers.fail_after is not None:
        changes["error_after"] = min(markers.fail_after, count)
    if markers.stall_after is not None:
        changes["stall_after"] = min(markers.stall_after, count)
    pace = tokens_per_second(markers, count)
    if pace is not None:
        changes["tokens_per_second"] = pace
    return replace(faults, **changes) if changes else faults


def _start_prediction(state: EmulatorState, model: EmulatedModel, version: str,
                      body: dict[str, Any], body_bytes: int, deployment: str | None = None,
                      markers: Markers | None = None) -> Prediction:
    faults = state.faults.take_prediction_faults()
    media = model.kind in ("image", "audio")
    tokens = faults.tokens
    try:
        if media:
            check_inputs(model, body["input"], state)
        elif tokens is None:
            tokens = tokenize(_reply(state, model, body["input"], markers))
    except ValueError as exc:  # the model itself rejects the input (or cannot fetch it) at run time
        tokens, faults = [], replace(faults, error_after=0, error_message=str(exc), tokens=None)
    else:
        if markers is not None and markers.any:
            count = steps_of(model, body["input"]) if media else len(tokens or [])
            faults = _with_markers(faults, markers, count)
    pred = Prediction(
        id=new_prediction_id(), model=model.ref, version=version, input=body["input"],
        faults=faults, has_stream=model.streams and not faults.no_stream, webhook=body.get("webhook"),
        input_token_count=count_input_tokens(body["input"]), input_bytes=body_bytes,
        single_output=model.output.get("type") == "string", token_metrics=not media, deployment=deployment,
    )
    state.prediction_started()
    pred.on_end = state.prediction_ended
    state.predictions.add(pred)
    tps = state.tokens_per_second if faults.tokens_per_second is None else faults.tokens_per_second
    cold = state.cold_start if faults.cold_start is None else faults.cold_start
    run = run_media(pred, model, state, tps, cold) if media else generate(pred, list(tokens or []), tps, cold)
    pred.task = asyncio.get_running_loop().create_task(run)
    return pred


def _prediction(request: web.Request) -> Prediction | None:
    return _state(request).predictions.get(request.match_info["id"])


async def get_prediction(request: web.Request) -> web.Response:
    pred, state = _prediction(request), _state(request)
    if pred is None:
        return not_found()
    return _json(request, pred.as_json(state.base_url, state.stream_base))


async def cancel_prediction(request: web.Request) -> web.Response:
    pred, state = _prediction(request), _state(request)
    if pred is None:
        return not_found()
    pred.finish("canceled")  # no-op on a prediction that already ended
    state.record_cancel(pred.id)
    return _json(request, pred.as_json(state.base_url, state.stream_base))


async def list_predictions(request: web.Request) -> web.Response:
    state = _state(request)
    preds = sorted(state.predictions.values(), key=lambda p: p.created_ns, reverse=True)
    results = [p.as_json(state.base_url, state.stream_base) for p in preds]
    return _json(request, {"next": None, "previous": None, "results": results})


def _model(request: web.Request) -> EmulatedModel | None:
    return find_model(request.match_info["owner"], request.match_info["name"])


async def get_model(request: web.Request) -> web.Response:
    model = _model(request)
    return _json(request, model.model_object()) if model else not_found()


async def list_models(request: web.Request) -> web.Response:
    results = [m.model_object() for m in MODELS.values()]
    return _json(request, {"next": None, "previous": None, "results": results})


async def list_versions(request: web.Request) -> web.Response:
    model = _model(request)
    if model is None:
        return not_found()
    return _json(request, {"next": None, "previous": None, "results": [model.version_object()]})


async def get_version(request: web.Request) -> web.Response:
    model = _model(request)
    if model is None:
        return not_found()
    if request.match_info["version"] != model.version_id:
        return not_found()
    return _json(request, model.version_object())


async def get_account(request: web.Request) -> web.Response:
    return _json(request, {
        "type": "user", "username": "emulator", "name": "Replicate Emulator",
        "github_url": None, "avatar_url": None,
    })


def make_api_app(state: EmulatorState) -> web.Application:
    app = web.Application(middlewares=[recording_middleware("api"), _rate_limits],
                          client_max_size=MAX_FILES_BODY)  # other bodies: 10 MiB, checked in state.py
    app[STATE_KEY] = state
    app[_WINDOW_KEY] = _RateWindow()
    r = app.router
    r.add_post("/v1/models/{owner}/{name}/predictions", create_for_model)
    r.add_post("/v1/predictions", create_for_version)
    r.add_get("/v1/predictions", list_predictions)
    r.add_get("/v1/predictions/{id}", get_prediction)
    r.add_post("/v1/predictions/{id}/cancel", cancel_prediction)
    r.add_get("/v1/models", list_models)
    r.add_get("/v1/models/{owner}/{name}", get_model)
    r.add_get("/v1/models/{owner}/{name}/versions", list_versions)
    r.add_get("/v1/models/{owner}/{name}/versions/{version}", get_version)
    r.add_get("/v1/account", get_account)
    add_file_routes(r)
    add_deployment_routes(r, _create)
    return app
