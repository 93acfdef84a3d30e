"""Mapping generic settings onto each model's declared inputs (pure)."""

import pytest

from replicate_magic.errors import InvalidRequestError
from replicate_magic.inputs import (
    ModelRef,
    Settings,
    build_input,
    fit_to_schema,
    input_properties,
    parse_model,
    stop_sequences,
)

LLAMA = {k: {"type": "string"} for k in ("prompt", "system_prompt", "prompt_template", "stop_sequences")} | {
    "max_tokens": {"type": "integer"}, "temperature": {"type": "number"}, "top_p": {"type": "number"},
    "top_k": {"type": "integer"},
}
MIXTRAL = {"prompt": {"type": "string"}, "max_new_tokens": {"type": "integer"}, "temperature": {"type": "number"},
           "top_p": {"type": "number"}, "top_k": {"type": "integer"}}
GPT = {"prompt": {"type": "string"}, "messages": {"type": "array"}, "system_prompt": {"type": "string"},
       "max_completion_tokens": {"type": "integer"}, "temperature": {"type": "number"}, "top_p": {"type": "number"}}
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Haiku, please"},
]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("meta/meta-llama-3-70b-instruct", ModelRef("meta", "meta-llama-3-70b-instruct")),
        ("owner/name:abc123", ModelRef("owner", "name", "abc123")),
        ("a" * 64, ModelRef(None, None, "a" * 64)),
        ("  mistralai/mixtral-8x7b-instruct-v0.1 ", ModelRef("mistralai", "mixtral-8x7b-instruct-v0.1")),
    ],
)
def test_parse_model(text, expected):
    assert parse_model(text) == expected


@pytest.mark.parametrize("bad", ["llama", "a/b/c", "/name", "owner/", "owner/name:", "owner name/x"])
def test_parse_model_rejects_with_the_value_named(bad):
    with pytest.raises(InvalidRequestError, match="is not 'owner/name'"):
        parse_model(bad)


def test_model_ref_round_trips_to_text():
    assert str(parse_model("o/n:v1")) == "o/n:v1"
    assert parse_model("o/n").slug == "o/n"


def test_string_stop_is_one_sequence():
    assert stop_sequences("ab") == ("ab",)
    assert stop_sequences(["x", "", None, "y"]) == ("x", "y")
    assert stop_sequences(None) == ()


def test_llama_gets_max_tokens_and_system_once():
    inputs, ignored = build_input(CHAT, Settings(max_tokens=64, temperature=0.2, top_k=5.0), LLAMA)
    assert inputs["max_tokens"] == 64 and "max_new_tokens" not in inputs
    assert inputs["system_prompt"] == "Be brief."
    assert "Be brief" not in inputs["prompt"]
    assert inputs["prompt"] == "User: Hi\nAssistant: Hello!\nUser: Haiku, please\nAssistant:"
    assert inputs["top_k"] == 5 and isinstance(inputs["top_k"], int)
    assert ignored == []


def test_mixtral_gets_max_new_tokens_and_system_inside_prompt():
    inputs, ignored = build_input(CHAT, Settings(max_tokens=64, stop=("END",)), MIXTRAL)
    assert inputs["max_new_tokens"] == 64
    assert inputs["prompt"].startswith("System: Be brief.\nUser: Hi")
    assert inputs["prompt"].count("Be brief") == 1
    assert "system_prompt" not in inputs and "stop_sequences" not in inputs
    assert ignored == ["stop"]


def test_messages_model_gets_messages_with_system_first():
    inputs, _ = build_input(CHAT, Settings(max_tokens=10, system_prompt="Answer in French."), GPT)
    assert "prompt" not in inputs and "system_prompt" not in inputs
    assert inputs["messages"][0] == {"role": "system", "content": "Answer in French.\nBe brief."}
    assert [m["role"] for m in inputs["messages"]] == ["system", "user", "assistant", "user"]
    assert inputs["max_completion_tokens"] == 10


def test_stop_list_joined_with_commas_where_the_model_takes_a_string():
    inputs, _ = build_input(CHAT[1:2], Settings(stop=("###", "END")), LLAMA)
    assert inputs["stop_sequences"] == "###,END"


def test_stop_with_comma_is_refused_not_split():
    with pytest.raises(InvalidRequestError, match="contains a comma"):
        build_input(CHAT[1:2], Settings(stop=("a,b",)), LLAMA)


def test_array_stop_input_gets_a_list():
    props = {"prompt": {"type": "string"}, "stop": {"type": "array"}}
    inputs, _ = build_input(CHAT[1:2], Settings(stop=("a,b",)), props)
    assert inputs["stop"] == ["a,b"]


def test_single_message_is_sent_verbatim():
    inputs, _ = build_input([{"role": "user", "content": "Just this"}], Settings(), LLAMA)
    assert inputs == {"prompt": "Just this"}


def test_extra_overrides_last():
    inputs, _ = build_input(CHAT[1:2], Settings(temperature=0.5, extra={"temperature": 0.9, "seed": 3}), LLAMA)
    assert inputs["temperature"] == 0.9 and inputs["seed"] == 3


def test_content_parts_keep_only_text():
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"text": "b"}]}]
    inputs, _ = build_input(messages, Settings(), LLAMA)
    assert inputs["prompt"] == "ab"


def test_fallback_is_the_seed_mapping_without_its_bugs():
    inputs, ignored = build_input(CHAT, Settings(max_tokens=7, stop=("x", "y"), top_p=0.5), None)
    assert inputs["max_new_tokens"] == 7 and inputs["stop_sequences"] == "x,y" and inputs["top_p"] == 0.5
    assert inputs["prompt"].startswith("System: Be brief.") and "system_prompt" not in inputs
    assert ignored == []
    moved, _ = build_input(CHAT, Settings(system_prompt="Be kind."), None)
    assert moved["system_prompt"] == "Be kind.\nBe brief." and "Be brief" not in moved["prompt"]


@pytest.mark.parametrize("messages", [[], [{"role": "system", "content": "x"}], [{"role": "user", "content": "  "}]])
def test_no_user_message_is_refused(messages):
    with pytest.raises(InvalidRequestError, match="at least one"):
        build_input(messages, Settings(), LLAMA)


def test_malformed_message_is_refused():
    with pytest.raises(ValueError, match="message 0"):
        build_input(["hello"], Settings(), LLAMA)


@pytest.mark.parametrize("schema", [None, {}, {"components": {}}, {"components": {"schemas": {"Input": {}}}}])
def test_input_properties_absent(schema):
    assert input_properties(schema) is None


def test_input_properties_present():
    schema = {"components": {"schemas": {"Input": {"properties": {"prompt": {"type": "string"}}}}}}
    assert input_properties(schema) == {"prompt": {"type": "string"}}


# -- bounds from the schema -------------------------------------------------------------------------

LLAMA2 = {  # as meta/llama-2-70b-chat's recorded schema declares them (replicate-python's cassettes)
    "temperature": {"type": "number", "minimum": 0.01, "maximum": 5},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "max_new_tokens": {"type": "integer", "minimum": 1},
    "prompt": {"type": "string"},
}


def test_temperature_zero_means_the_lowest_the_model_takes():
    fitted, notes = fit_to_schema({"prompt": "Hi", "temperature": 0}, LLAMA2)
    assert fitted == {"prompt": "Hi", "temperature": 0.01}
    assert notes == ["temperature 0 raised to 0.01, the lowest this model takes"]


@pytest.mark.parametrize("inputs, message", [
    ({"temperature": 7}, r"temperature=7 is outside what this model takes \(0.01 to 5\)"),
    ({"temperature": 0.001}, r"temperature=0.001 is outside .*0.01 to 5"),
    ({"top_p": 1.5}, r"top_p=1.5 is outside .*0 to 1"),
    ({"max_new_tokens": 0}, r"max_new_tokens=0 is outside .*at least 1"),
    ({"max_new_tokens": 2.5}, "whole number"),
])
def test_values_outside_the_declared_range_fail_before_sending(inputs, message):
    with pytest.raises(InvalidRequestError, match=message):
        fit_to_schema(inputs, LLAMA2)


def test_values_inside_the_range_and_undeclared_keys_pass_unchanged():
    inputs = {"temperature": 5, "top_p": 0, "max_new_tokens": 3, "seed": -1, "flag": True, "prompt": "x"}
    assert fit_to_schema(inputs, LLAMA2) == (inputs, [])
