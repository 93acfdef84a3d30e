"""Predictions and model schemas as values: parsed once from Replicate's JSON (pure)."""

from __future__ import annotations

import pytest

from replicate_magic.errors import ModelError, ResponseError
from replicate_magic.prediction import Prediction, PredictionUrls
from replicate_magic.schemas import ModelSchema, SchemaCache

API = "https://api.replicate.com/v1/predictions/abc123"


def test_a_prediction_is_parsed_into_typed_fields():
    prediction = Prediction.parse({
        "id": "abc123", "status": "processing", "output": ["Hel", "lo"], "error": None, "logs": "booting\n",
        "urls": {"get": API, "cancel": f"{API}/cancel", "stream": "https://stream.replicate.com/v1/x"},
        "metrics": {"predict_time": 1.5, "output_token_count": None}, "version": "ignored",
    })
    assert prediction.id == "abc123" and prediction.status == "processing" and not prediction.terminal
    assert prediction.urls == PredictionUrls(get=API, cancel=f"{API}/cancel", stream="https://stream.replicate.com/v1/x")
    assert prediction.text() == "Hello" and prediction.logs == "booting\n"
    assert dict(prediction.metrics) == {"predict_time": 1.5, "output_token_count": None}
    with pytest.raises(TypeError):
        prediction.metrics["predict_time"] = 2.0  # type: ignore[index]


def test_missing_fields_read_as_absent():
    prediction = Prediction.parse({"id": "abc123", "logs": ["not", "text"]})
    assert prediction.urls == PredictionUrls() and prediction.metrics == {} and prediction.status is None
    assert prediction.text() == "" and prediction.logs is None


@pytest.mark.parametrize(("output", "text"), [(None, ""), ("whole", "whole"), (["a", "b", 3], "ab3"), (7, "7")])
def test_text_is_the_output_as_text(output, text):
    assert Prediction("x", output=output).text() == text


@pytest.mark.parametrize(("status", "terminal"), [
    ("starting", False), ("processing", False), ("succeeded", True), ("failed", True), ("canceled", True),
    ("aborted", True), (None, False),
])
def test_terminal(status, terminal):
    assert Prediction("x", status=status).terminal is terminal


def test_raise_for_status_keeps_the_messages():
    with pytest.raises(ModelError, match=r"^The model failed: CUDA out of memory$") as caught:
        Prediction("x", status="failed", error="CUDA out of memory").raise_for_status()
    assert caught.value.prediction_id == "x" and caught.value.detail == "CUDA out of memory"
    with pytest.raises(ModelError, match="no reason given"):
        Prediction("x", status="failed").raise_for_status()
    with pytest.raises(ModelError, match=r"secret \[token\]"):
        Prediction("x", status="failed", error="secret tok").raise_for_status(lambda t: t.replace("tok", "[token]"))
    with pytest.raises(ResponseError, match=r"^The prediction was canceled on Replicate before it finished$"):
        Prediction("x", status="canceled").raise_for_status()
    Prediction("x", status="succeeded").raise_for_status()  # nothing to say


@pytest.mark.parametrize(("data", "message"), [
    ({"urls": {}}, "^Replicate answered without a valid prediction id: "),
    ({"id": "abc", "urls": "https://x"}, "^Replicate answered with a malformed prediction abc: urls is not an object$"),
    ({"id": "abc", "status": 3}, "status is not a string"),
    ({"id": "abc", "metrics": {"total_time": "long"}}, "metrics.total_time is not a finite number"),
    ({"id": "abc", "urls": {"get": "file:///etc/passwd"}}, "urls.get is not usable: it is not an http"),
])
def test_a_malformed_prediction_is_one_line_with_the_id_when_valid(data, message):
    with pytest.raises(ResponseError, match=message) as caught:
        Prediction.parse(data)
    assert caught.value.prediction_id == data.get("id") and "\n" not in str(caught.value)


# -- model schemas ----------------------------------------------------------------------------------

TEXT_ARRAY = {"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"}
URI = {"type": "string", "format": "uri"}


def openapi(output=None, properties=None):
    schemas = {"Input": {"type": "object", "properties": properties or {"prompt": {"type": "string"}}}}
    if output is not None:
        schemas["Output"] = output
    return {"components": {"schemas": schemas}}


@pytest.mark.parametrize(("output", "kind"), [
    (TEXT_ARRAY, "text"), ({"type": "string"}, "text"), (URI, "files"), ({"type": "array", "items": URI}, "files"),
    ({"type": "object", "properties": {}}, "other"), ({"type": "array"}, "other"), ({"$ref": "#/x"}, "other"),
    (None, "other"), ("string", "other"),
])
def test_the_output_kind_is_kept(output, kind):
    schema = ModelSchema.parse(openapi(output))
    assert schema.output == kind and schema.properties == {"prompt": {"type": "string"}}


@pytest.mark.parametrize("openapi_schema", [None, {}, {"components": {"schemas": {}}}, "junk"])
def test_a_schema_without_input_declares_no_properties(openapi_schema):
    assert ModelSchema.parse(openapi_schema) == ModelSchema(None, "other")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_is_fresh_for_its_ttl_then_keeps_the_last_known():
    clock = Clock()
    cache = SchemaCache(ttl=60, clock=clock)
    key = ("http://127.0.0.1:1", "meta/llama")
    schema = ModelSchema({"prompt": {}}, "text")
    assert cache.fresh(key) is None and cache.last_known(key) is None
    cache.put(key, schema)
    clock.now += 59.9
    assert cache.fresh(key) is schema
    clock.now += 0.1
    assert cache.fresh(key) is None and cache.last_known(key) is schema
    assert cache.fresh(("http://127.0.0.1:2", "meta/llama")) is None  # per base URL
    cache.clear()
    assert cache.last_known(key) is None and len(cache) == 0
