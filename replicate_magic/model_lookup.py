"""Which input schema a model has: cached, fetched, or through a deployment's release. I/O.

The client asks here before each first create of a model; the answer is kept in the
client's ``SchemaCache`` per (API, model). A deployment is looked up through its current
release (``GET /v1/deployments/{owner}/{name}``, then that model version), cached under the
deployment's own name so that a new release is picked up when the entry ages out.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequestError, ResponseError
from .inputs import ModelRef, parse_model
from .schemas import ModelSchema, SchemaUnavailableError

if TYPE_CHECKING:
    from .client import OnWait, ReplicateClient

__all__ = ["model_schema"]

log = logging.getLogger(__name__)


async def model_schema(client: ReplicateClient, ref: ModelRef, *, on_wait: OnWait | None = None) -> ModelSchema | None:
    """The model's schema, from the cache while fresh, else fetched; None for a bare version
    id, which names no model to ask about.

    When fetching fails in passing (5xx, 429, a timeout, an HTML page), a schema fetched
    before is used; with none known, SchemaUnavailableError, so nothing is sent on guessed
    keys. Any other failure (a 404 for an unknown model, a 401) is raised as it is.
    """
    if ref.slug is None:
        return None
    key = (client.base_url, str(ref))
    schema = client.schemas.fresh(key)
    if schema is not None:
        return schema
    try:
        schema = await _fetch(client, ref, ref.slug, on_wait)
    except ResponseError as error:
        if not _passing(error):
            raise
        known = client.schemas.last_known(key)
        if known is None:
            raise _schema_unavailable(ref, error) from None
        log.info("the schema of %s could not be fetched again (%s); using the one fetched before", ref, error)
        return known
    client.schemas.put(key, schema)
    return schema


async def _fetch(client: ReplicateClient, ref: ModelRef, slug: str, on_wait: OnWait | None) -> ModelSchema:
    if ref.deployment:
        return await _deployment_schema(client, ref, slug, on_wait)
    path = f"/v1/models/{slug}" + (f"/versions/{ref.version}" if ref.version else "")
    data = await client.request("GET", path, on_wait=on_wait)
    version = data if ref.version else data.get("latest_version")
    if not isinstance(version, dict):
        return ModelSchema.parse(None)
    version_id = version.get("id")
    return ModelSchema.parse(version.get("openapi_schema"), version_id if isinstance(version_id, str) else None)


async def _deployment_schema(client: ReplicateClient, ref: ModelRef, slug: str, on_wait: OnWait | None) -> ModelSchema:
    """The schema of the model version the deployment's current release runs, with the
    release's hardware."""
    data = await client.request("GET", f"/v1/deployments/{slug}", on_wait=on_wait)
    release = data.get("current_release")
    release = release if isinstance(release, dict) else {}
    deployed = _released(release.get("model"), release.get("version"))
    if deployed is None or deployed.slug is None:
        raise InvalidRequestError(
            f"Deployment {ref} has no current release with a model version to run; nothing was sent. "
            "Next: release one on replicate.com/deployments.")
    try:
        schema = await _fetch(client, deployed, deployed.slug, on_wait)
    except ResponseError as error:
        if error.status != 404:
            raise
        raise SchemaUnavailableError(
            f"Could not read the input schema of {ref}: it runs {deployed}, which Replicate does not show "
            "(HTTP 404); nothing was sent. Next: check its release on replicate.com/deployments.",
            status=404, title=error.title, detail=error.detail) from None
    configuration = release.get("configuration")
    hardware = configuration.get("hardware") if isinstance(configuration, dict) else None
    return replace(schema, hardware=hardware if isinstance(hardware, str) and hardware else None)


def _passing(error: ResponseError) -> bool:
    """A failure that says nothing about the model: worth another try later (no status: a
    timeout, a dropped connection, an answer that is not JSON)."""
    return error.status is None or error.status == 429 or error.status >= 500


def _released(model: Any, version: Any) -> ModelRef | None:
    """``owner/name:version`` of a deployment's release, or None when it names no such thing."""
    if not (isinstance(model, str) and isinstance(version, str) and model and version):
        return None
    try:
        return parse_model(f"{model}:{version}")
    except InvalidRequestError:
        return None


def _schema_unavailable(ref: ModelRef, error: ResponseError) -> SchemaUnavailableError:
    """One sentence: which schema, why not (the failure without its own advice), what next."""
    reason, _, advice = str(error).partition(" Next: ")
    if error.status is not None:  # Replicate answered, with a passing failure: waiting is the advice
        advice = ""
    return SchemaUnavailableError(
        f"Could not read the input schema of {ref} ({reason.rstrip('.')}); nothing was sent. "
        f"Next: {advice.rstrip('.') or 'try again in a moment'}.",
        status=error.status, title=error.title, detail=error.detail)
