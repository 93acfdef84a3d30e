"""Structured answers (issue 13, item 3): ``-f json`` and ``--schema`` give Python objects.

Pure: finding the JSON in a reply, the compact schema form, what --schema names, how the
schema reaches a model's input. Then the emulator's JSON mode, the magic in an in-process
shell (the schema in the model's own input or in the prompt, one retry with the error, a
final failure in one line, pydantic, --each), and one real kernel.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

import replicate_magic
from replicate_magic.emulator import Faults
from replicate_magic.emulator.json_mode import JsonAsk, json_ask, json_reply
from replicate_magic.emulator.markers import read_markers
from replicate_magic.errors import InvalidAnswerError, InvalidRequestError
from replicate_magic.inputs import Settings, build_input, structured_input
from replicate_magic.structured import (
    AnswerFormat,
    InvalidAnswer,
    answer_format,
    extract_json,
    instructions,
    parse_compact,
    retry_messages,
)

from .kernel_fixtures import token_never_shown_and_html_is_inert  # noqa: F401 - autouse: checks every message
from .kernel_harness import plain

STRUCTURED = "openai/gpt-5-structured"  # declares json_schema (the emulator mirrors the real one)
LLAMA = "meta/meta-llama-3-70b-instruct"  # declares no structured-output input
PERSON = "name str, age int, tags list[str]"
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


class Pet(pydantic.BaseModel):
    kind: str
    legs: int


class Owner(pydantic.BaseModel):
    name: str
    age: int
    pets: list[Pet]
    nickname: str | None = None


# -- finding the JSON in a reply -------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ('{"a": 1}', {"a": 1}),
    ("  [1, 2]\n", [1, 2]),
    ("42", 42),
    ('"just a string"', "just a string"),
    ('Sure! Here it is:\n\n```json\n{"a": [1, 2]}\n```\nAnything else?', {"a": [1, 2]}),
    ('Here: {"a": 1} and the answer is:\n```json\n{"b": 2}\n```', {"b": 2}),  # the ```json block wins
    ('```JSON\n{"b": 2}\n```', {"b": 2}),
    ('```\n{"c": 3}\n```', {"c": 3}),  # a fence without a language, when it is one JSON value
    ('~~~json\n{"d": 4}\n~~~', {"d": 4}),
    ('See [1] below: {"name": "x", "items": [1, 2, 3]} -- done.', {"name": "x", "items": [1, 2, 3]}),  # the longest
    ('Braces in strings: {"s": "a } b {", "t": "]"} fine', {"s": "a } b {", "t": "]"}),
    ('{"outer": {"inner": [{"x": 1}]}} then {"y": 2}', {"outer": {"inner": [{"x": 1}]}}),
])
def test_the_json_value_is_found_in_the_reply(text, value):
    assert extract_json(text) == value


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("   \n", "empty"),
    ("No JSON here, sorry.", "holds no JSON value"),
    ('Here: {"name": "x", "age": ', "does not parse: Expecting value"),
    ("```json\n{name: 'x'}\n```", "```json block does not parse: Expecting property name"),
    ('{"x": NaN}', "does not parse: NaN is not JSON"),  # Python's json takes NaN; JSON does not
    ("[" * 5000, "no JSON value"),  # nested beyond the parser: an error, not a RecursionError
])
def test_a_reply_without_json_says_why_in_one_line(text, reason):
    with pytest.raises(InvalidAnswer, match=reason) as caught:
        extract_json(text)
    assert "\n" not in str(caught.value)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
_chatter = st.text(alphabet=st.characters(exclude_characters="{}[]`~\"", exclude_categories=("Cs",)),
                   max_size=40)


@settings(max_examples=200, deadline=None)
@given(value=st.dictionaries(st.text(max_size=8), _json_values, min_size=1, max_size=5) | st.lists(_json_values,
                                                                                                 min_size=1),
       before=_chatter, after=_chatter, indent=st.sampled_from([None, 2]), fenced=st.booleans())
def test_any_object_or_array_is_found_whatever_the_chatter(value, before, after, indent, fenced):
    body = json.dumps(value, indent=indent, ensure_ascii=False)
    text = f"{before}\n```json\n{body}\n```\n{after}" if fenced else f"{before} {body} {after}"
    assert extract_json(text) == value


def test_a_fenced_block_that_does_not_parse_loses_to_json_elsewhere():
    assert extract_json('```json\n{oops}\n```\nI meant: {"ok": true}') == {"ok": True}


# -- the compact form ------------------------------------------------------------------------------


def test_the_compact_form_becomes_a_strict_json_schema_object():
    schema = parse_compact(PERSON)
    assert schema == PERSON_SCHEMA
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("text, properties", [
    ("name: str, age: int", {"name": {"type": "string"}, "age": {"type": "integer"}}),  # Python's spelling
    ("title", {"title": {"type": "string"}}),  # no type: a string
    ("score float, ok bool", {"score": {"type": "number"}, "ok": {"type": "boolean"}}),
    ("grid list[list[int]]", {"grid": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}}),
    ("nick? str, age int?", {"nick": {"type": ["string", "null"]}, "age": {"type": ["integer", "null"]}}),
    ("a str,\nb int,\n", {"a": {"type": "string"}, "b": {"type": "integer"}}),  # newlines, a trailing comma
    ("tags list[str]?", {"tags": {"type": ["array", "null"], "items": {"type": "string"}}}),
])
def test_compact_fields(text, properties):
    schema = parse_compact(text)
    assert schema["properties"] == properties
    assert schema["required"] == list(properties)  # all required; '?' means it may be null


_types = st.recursive(st.sampled_from(["str", "int", "float", "bool"]), lambda inner: inner.map(lambda t: f"list[{t}]"),
                      max_leaves=3)
_SCHEMA_OF = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def _expected(spec: str) -> dict:
    return {"type": "array", "items": _expected(spec[5:-1])} if spec.startswith("list[") else {"type": _SCHEMA_OF[spec]}


@given(fields=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), st.tuples(_types, st.booleans()),
                              min_size=1, max_size=6),
       colon=st.booleans(), separator=st.sampled_from([", ", ",", "\n", ",\n"]))
def test_any_compact_form_parses_into_its_fields(fields, colon, separator):
    text = separator.join(f"{name}{':' if colon else ''} {spec}{'?' if nullable else ''}"
                          for name, (spec, nullable) in fields.items())
    schema = parse_compact(text)
    assert schema["required"] == list(fields)
    for name, (spec, nullable) in fields.items():
        expected = _expected(spec)
        if nullable:
            expected["type"] = [expected["type"], "null"]
        assert schema["properties"][name] == expected
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("text, reason", [
    ("name strr", "unknown type 'strr'"),
    ("age int, age int", "named twice"),
    ("", "names no field"),
    (" , ", "names no field"),
    ("tags list", "say what the list holds"),
    ("tags list[str", "unclosed '\\['"),
    ("tags str]", "unmatched"),
    ("1st int", "does not start with a field name"),
    ("name dict", "unknown type 'dict'"),
])
def test_a_compact_form_that_does_not_parse_is_one_line(text, reason):
    with pytest.raises(ValueError, match=reason) as caught:
        parse_compact(text)
    assert "\n" not in str(caught.value)


# -- what --schema names ---------------------------------------------------------------------------


def test_a_dict_a_json_string_and_a_compact_string_are_schemas():
    assert answer_format(PERSON_SCHEMA, "p").schema == PERSON_SCHEMA
    assert answer_format(json.dumps(PERSON_SCHEMA), "p").schema == PERSON_SCHEMA
    assert answer_format(PERSON, "p").schema == PERSON_SCHEMA
    assert answer_format(PERSON, "p").model_class is None and answer_format(PERSON, "p").label == "schema p"


def test_a_pydantic_class_gives_its_schema_and_validates_into_an_instance():
    fmt = answer_format(Owner, "Owner")
    assert fmt.schema == Owner.model_json_schema() and fmt.model_class is Owner
    owner = fmt.read('{"name": "Ada", "age": 36, "pets": [{"kind": "cat", "legs": 4}]}')
    assert isinstance(owner, Owner) and owner.pets[0].legs == 4
    with pytest.raises(InvalidAnswer, match=r"^\$\.pets\[0\]\.legs: .*integer.* \(pydantic Owner\)$"):
        fmt.read('{"name": "Ada", "age": 36, "pets": [{"kind": "cat", "legs": "four"}]}')
    with pytest.raises(InvalidAnswer, match=r"\$\.age: Field required \(and 1 more\)"):
        fmt.read('{"name": "Ada"}')


@pytest.mark.parametrize("value, reason", [
    (3, "a int; --schema takes a JSON Schema dict, a pydantic model class or a compact string"),
    (["name str"], "a list; --schema takes"),
    ({"type": "objekt"}, r"not a valid JSON Schema: \$\.type: 'objekt' is not valid"),
    ({"type": "object", "properties": {"a": {"type": "integr"}}}, r"not a valid JSON Schema: \$\.properties\.a\.type"),
    ({"type": "object", "default": float("nan")}, "not JSON"),
    ({"type": "object", "default": {1, 2}}, "not JSON"),
    ('{"type": ', "starts with '{' but is not JSON"),
    ("name strr", "unknown type 'strr'"),
    (Owner(name="a", age=1, pets=[]), "an instance of the pydantic model Owner; name the class itself"),
])
def test_what_cannot_be_a_schema_is_one_line(value, reason):
    with pytest.raises(ValueError, match=reason) as caught:
        answer_format(value, "s")
    assert "\n" not in str(caught.value)


def test_answers_are_checked_and_the_failed_rule_is_named():
    fmt = AnswerFormat(PERSON_SCHEMA, "person")
    assert fmt.read('Here you go: {"name": "Ada", "age": 36, "tags": []}') == {"name": "Ada", "age": 36, "tags": []}
    cases = {
        '{"name": "Ada", "tags": []}': "$: 'age' is a required property (rule 'required')",
        '{"name": "Ada", "age": "36", "tags": []}': "$.age: '36' is not of type 'integer' (rule 'type')",
        '{"name": "Ada", "age": 36, "tags": [1]}': "$.tags[0]: 1 is not of type 'string' (rule 'type')",
        '{"name": "Ada", "age": 36, "tags": [], "x": 1}': "rule 'additionalProperties'",
    }
    for text, reason in cases.items():
        with pytest.raises(InvalidAnswer) as caught:
            fmt.read(text)
        assert reason in str(caught.value)
    assert AnswerFormat().read("[1, 2]") == [1, 2]  # -f json alone: any JSON value


def test_a_schema_whose_ref_points_nowhere_is_an_error_not_a_fetch():
    fmt = answer_format({"$ref": "https://example.com/person.json"}, "p")
    with pytest.raises(InvalidAnswer, match="the schema cannot be checked"):
        fmt.read("{}")


# -- how the schema reaches the model --------------------------------------------------------------


def test_structured_inputs_follow_the_key_and_its_declared_type():
    fmt = AnswerFormat(PERSON_SCHEMA, "person")
    assert structured_input({"json_schema": {"type": "object"}}, fmt) == (
        "json_schema", {"format": {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA}})
    assert structured_input({"response_format": {"type": "object"}}, fmt) == (
        "response_format", {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}})
    key, text = structured_input({"jsonschema": {"type": "string"}}, fmt)
    assert key == "jsonschema" and json.loads(text) == PERSON_SCHEMA
    assert structured_input({"schema": {}}, fmt) == ("schema", PERSON_SCHEMA)
    # Fixed choices ("text" or "json_object") cannot carry a schema; a grammar is not JSON Schema.
    assert structured_input({"response_format": {"type": "string", "enum": ["text", "json_object"]}}, fmt) is None
    assert structured_input({"grammar": {"type": "string"}, "prompt": {}}, fmt) is None
    assert structured_input(None, fmt) is None and structured_input({"json_schema": {}}, AnswerFormat()) is None


def test_without_a_structured_input_the_schema_goes_into_the_prompt_of_this_turn_only():
    props = {"prompt": {"type": "string"}, "system_prompt": {"type": "string"}}
    messages = [{"role": "user", "content": "Earlier"}, {"role": "assistant", "content": "Yes"},
                {"role": "user", "content": "Tell me about Ada"}]
    sent, _ = build_input(messages, Settings(answer=AnswerFormat(PERSON_SCHEMA, "person")), props)
    earlier, _, last = sent["prompt"].partition("User: Tell me about Ada")
    assert "JSON" not in earlier
    assert last.startswith("\n\n" + instructions(PERSON_SCHEMA).split("\n")[0])
    assert json.dumps(PERSON_SCHEMA, separators=(",", ":")) in last
    plain, _ = build_input(messages[-1:], Settings(answer=AnswerFormat()), props)
    assert plain["prompt"] == "Tell me about Ada\n\n" + instructions(None)
    carried, _ = build_input(messages[-1:], Settings(answer=AnswerFormat(PERSON_SCHEMA)), {"prompt": {},
                                                                                          "json_schema": {}})
    assert carried["prompt"] == "Tell me about Ada" and "json_schema" in carried


def test_a_retry_carries_the_invalid_answer_and_the_reason():
    assert retry_messages("{bad}", "$: 'age' is a required property") == [
        {"role": "assistant", "content": "{bad}"},
        {"role": "user", "content": "That answer is not valid: $: 'age' is a required property. "
                                    "Answer again, with the whole corrected JSON only."}]


# -- the emulator's JSON mode ----------------------------------------------------------------------


@pytest.mark.parametrize("schema", [
    PERSON_SCHEMA,
    Owner.model_json_schema(),  # $defs and $ref, anyOf with null
    {"type": "array", "items": {"enum": ["red", "green"]}, "minItems": 3, "maxItems": 3},
    {"type": "object", "properties": {
        "n": {"type": "integer", "exclusiveMinimum": 5, "maximum": 6},
        "x": {"type": "number", "minimum": 0, "maximum": 1},
        "s": {"type": "string", "minLength": 30, "maxLength": 31},
        "when": {"type": "string", "format": "date"},
        "kind": {"const": "fixed"},
        "both": {"allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]}]},
    }, "required": ["n", "x", "s", "kind", "both"]},
    parse_compact("title str, scores list[float], note? str"),
])
def test_the_emulator_answers_json_that_follows_the_schema(schema):
    text = json_reply("m", {"prompt": "hi"}, JsonAsk(schema, fenced=False))
    jsonschema.validate(json.loads(text), schema)
    assert text == json_reply("m", {"prompt": "hi"}, JsonAsk(schema, fenced=False))  # deterministic
    fenced = json_reply("m", {"prompt": "hi"}, JsonAsk(schema, fenced=True))
    assert fenced.startswith("Here is the JSON") and extract_json(fenced) == json.loads(text)


def test_the_emulator_breaks_a_json_answer_when_asked():
    broken = json_reply("m", {"prompt": "hi"}, JsonAsk(PERSON_SCHEMA, fenced=False), broken="schema")
    assert set(json.loads(broken)) == {"age", "tags"}  # the first required property is missing
    cut = json_reply("m", {"prompt": "hi"}, JsonAsk(PERSON_SCHEMA, fenced=True), broken="syntax")
    with pytest.raises(InvalidAnswer, match="does not parse"):
        extract_json(cut)
    markers, errors = read_markers({"prompt": "x [[emulator:bad-json=syntax]]"})
    assert markers.bad_json == "syntax" and not errors
    _, errors = read_markers({"prompt": "x [[emulator:bad-json=maybe]]"})
    assert "takes schema or syntax" in errors[0].description


def test_the_emulator_finds_the_request_for_json():
    props = {"json_schema": {"type": "object"}}
    wrapped = {"format": {"type": "json_schema", "name": "p", "schema": PERSON_SCHEMA}}
    assert json_ask({"prompt": "x", "json_schema": wrapped}, props) == JsonAsk(PERSON_SCHEMA, fenced=False)
    with pytest.raises(ValueError, match="wrap the schema"):  # the real model refuses a bare schema
        json_ask({"prompt": "x", "json_schema": PERSON_SCHEMA}, props)
    assert json_ask({"prompt": "x", "json_schema": {}}, props) is None  # its default: plain text
    asked = f"Tell me.\n\n{instructions(PERSON_SCHEMA)}"
    assert json_ask({"prompt": asked}, {}) == JsonAsk(PERSON_SCHEMA, fenced=True)
    assert json_ask({"prompt": f"x\n\n{instructions(None)}"}, {}) == JsonAsk(None, fenced=True)
    assert json_ask({"prompt": "Tell me about JSON."}, {}) is None


# -- the magic -------------------------------------------------------------------------------------


def ask(ip, line: str, cell: str):
    return ip.run_cell_magic("replicate", line, cell)


def creates(emu) -> list[dict]:
    return [r.json["input"] for r in emu.requests if r.method == "POST" and r.path.endswith("predictions")]


def test_schema_in_the_models_own_input_gives_the_object(ip, env_emu, capsys):
    ip.user_ns["person"] = PERSON
    ask(ip, f"-m {STRUCTURED} --schema person -o p", "Tell me about Ada")
    (sent,) = creates(env_emu)
    assert sent["json_schema"] == {"format": {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA}}
    assert sent["prompt"] == "Tell me about Ada"  # no instructions: the input carries the schema
    jsonschema.validate(ip.user_ns["p"], PERSON_SCHEMA)
    (prediction,) = env_emu.predictions.values()
    assert ip.user_ns["p"] == json.loads("".join(prediction.output))
    assert "checked against schema person, sent in its json_schema input" in capsys.readouterr().out
    # The conversation holds the prompt as typed and the answer's text.
    assert replicate_magic.history() == [{"role": "user", "content": "Tell me about Ada"},
                                         {"role": "assistant", "content": "".join(prediction.output)}]


def test_a_model_without_one_gets_the_schema_as_instructions(ip, env_emu, capsys):
    ip.user_ns["person"] = PERSON_SCHEMA
    ask(ip, f"-m {LLAMA} --schema person -o p --no-history", "Tell me about Ada")
    (sent,) = creates(env_emu)
    assert sent["prompt"].startswith("Tell me about Ada\n\nAnswer with JSON only")
    assert json.dumps(PERSON_SCHEMA, separators=(",", ":")) in sent["prompt"]
    (prediction,) = env_emu.predictions.values()
    assert "```json" in "".join(prediction.output)  # chatter and a fence around it, stripped
    jsonschema.validate(ip.user_ns["p"], PERSON_SCHEMA)
    assert "sent in the prompt (the model has no structured-output input)" in capsys.readouterr().out


def test_format_json_alone_reads_any_json(ip, env_emu):
    ask(ip, "-f json -o answer --no-history", "Give me something")
    (sent,) = creates(env_emu)
    assert sent["prompt"] == "Give me something\n\n" + instructions(None)
    assert isinstance(ip.user_ns["answer"], dict) and set(ip.user_ns["answer"]) == {"answer", "confidence"}


def test_an_invalid_answer_is_asked_again_once_with_the_error(ip, env_emu, capsys):
    ip.user_ns["person"] = PERSON
    ask(ip, "--schema person -o p", "Tell me about Ada [[emulator:bad-json]]")
    first, second = creates(env_emu)
    (bad, good) = sorted(env_emu.predictions.values(), key=lambda p: p.created_ns)
    bad_text = "".join(bad.output)
    assert "name" not in json.loads(bad_text.split("```json")[1].split("```")[0])
    # The second prediction: the same prompt, the invalid answer, then what was wrong with it.
    assert first["prompt"] == f"Tell me about Ada [[emulator:bad-json]]\n\n{instructions(PERSON_SCHEMA)}"
    assert second["prompt"].startswith(f"User: Tell me about Ada [[emulator:bad-json]]\nAssistant: {bad_text}\n"
                                       "User: That answer is not valid: $: 'name' is a required property")
    assert second["prompt"].endswith(f"\n\n{instructions(PERSON_SCHEMA)}\nAssistant:")  # the schema, said again
    assert ip.user_ns["p"] == extract_json("".join(good.output))
    jsonschema.validate(ip.user_ns["p"], PERSON_SCHEMA)
    out = capsys.readouterr()
    assert "asked again: the first answer was not valid ($: 'name' is a required property" in out.out
    assert "asking again" in out.err
    # Only the valid answer is recorded, after the prompt as typed; the log keeps both tries.
    assert replicate_magic.history() == [{"role": "user", "content": "Tell me about Ada [[emulator:bad-json]]"},
                                         {"role": "assistant", "content": "".join(good.output)}]
    logged = replicate_magic.log(2)
    assert [(e["status"], e["reply"]) for e in logged] == [("succeeded", "".join(good.output)), ("failed", bad_text)]
    assert {e["prompt"] for e in logged} == {"Tell me about Ada [[emulator:bad-json]]"}


def test_a_final_failure_is_one_line_and_out_keeps_the_raw_text(ip, env_emu):
    ip.user_ns["person"] = PERSON
    env_emu.inject(Faults(invalid_json=2))
    with pytest.raises(InvalidAnswerError) as caught:
        ask(ip, f"-m {STRUCTURED} --schema person -o p", "Tell me about Ada")
    message = str(caught.value)
    assert "\n" not in message
    assert message == ("The reply is not the schema person asked for, 2 times: $: 'name' is a required property "
                       "(rule 'required'). p holds the reply's text.")
    assert len(creates(env_emu)) == 2  # one retry, bounded
    last = max(env_emu.predictions.values(), key=lambda p: p.created_ns)
    assert ip.user_ns["p"] == "".join(last.output)
    assert replicate_magic.history() == []  # nothing recorded


def test_a_pydantic_class_yields_a_validated_instance(ip, env_emu):
    ip.user_ns["Owner"] = Owner
    ask(ip, f"-m {STRUCTURED} --schema Owner -o owner --no-history", "Who owns the cat?")
    (sent,) = creates(env_emu)
    assert sent["json_schema"]["format"]["schema"] == Owner.model_json_schema()
    owner = ip.user_ns["owner"]
    assert isinstance(owner, Owner) and all(isinstance(pet, Pet) for pet in owner.pets)


def test_each_with_json_gives_a_list_of_objects(ip, env_emu):
    ip.user_ns["people"] = ["Ada", "Grace [[emulator:bad-json]]", "Edsger"]
    ip.user_ns["person"] = PERSON
    ask(ip, "--each people --schema person -o found", "Tell me about {item}")
    found = ip.user_ns["found"]
    assert len(found) == 3 and found.errors == {}
    for value in found:
        jsonschema.validate(value, PERSON_SCHEMA)
    assert len(creates(env_emu)) == 4  # Grace's first answer was invalid, and asked again


def test_each_item_that_stays_invalid_fails_alone(ip, env_emu):
    ip.user_ns["people"] = ["Ada"]
    ip.user_ns["person"] = PERSON
    env_emu.inject(Faults(invalid_json=2))
    ask(ip, "--each people --schema person -o found", "Tell me about {item}")
    assert list(ip.user_ns["found"]) == [None]
    assert "'name' is a required property" in ip.user_ns["found"].errors[0]


def test_a_logged_json_answer_replays_as_the_object(ip, env_emu):
    ip.user_ns["person"] = PERSON
    ask(ip, "--schema person -o first --no-history --cache", "Tell me about Ada")
    ask(ip, "--schema person -o again --no-history --cache", "Tell me about Ada")
    assert len(creates(env_emu)) == 1 and ip.user_ns["again"] == ip.user_ns["first"]


def test_ask_and_map_from_python_take_a_schema_and_return_objects(env_emu):
    owner = replicate_magic.ask("Who owns the cat?", model=STRUCTURED, schema=Owner, no_history=True)
    assert isinstance(owner, Owner) and all(isinstance(pet, Pet) for pet in owner.pets)
    (sent,) = creates(env_emu)
    assert sent["json_schema"]["format"] == {"type": "json_schema", "name": "Owner",
                                             "schema": Owner.model_json_schema()}
    people = replicate_magic.map("Tell me about {item}", ["Ada", "Grace [[emulator:bad-json]]"], schema=PERSON,
                                 concurrency=2)
    assert len(people) == 2 and people.errors == {}
    for value in people:
        jsonschema.validate(value, PERSON_SCHEMA)
    assert len(creates(env_emu)) == 1 + 3  # Grace's first answer was invalid, and asked again
    anything = replicate_magic.ask("Give me something", format="json", no_history=True)
    assert isinstance(anything, dict) and set(anything) == {"answer", "confidence"}


def test_ask_async_takes_a_schema_and_a_lasting_invalid_answer_is_one_error(env_emu):
    env_emu.inject(Faults(invalid_json=2))
    with pytest.raises(InvalidAnswerError, match="'name' is a required property"):
        asyncio.run(replicate_magic.ask_async("Tell me about Ada", model=STRUCTURED, schema=PERSON,
                                              no_history=True))
    assert len(creates(env_emu)) == 2


@pytest.mark.parametrize(("keywords", "reason"), [
    ({"schema": 42}, "schema: a int; --schema takes a JSON Schema dict"),
    ({"schema": "name strr"}, "schema: unknown type 'strr'"),
    ({"format": "yaml"}, "format: 'yaml' is not a format a call returns"),
])
def test_a_bad_schema_or_format_from_python_is_a_value_error_and_sends_nothing(env_emu, keywords, reason):
    with pytest.raises(ValueError, match=reason):
        replicate_magic.ask("Hi", **keywords)
    with pytest.raises(ValueError, match=reason):
        replicate_magic.map("Hi {item}", [1], **keywords)
    assert creates(env_emu) == []


@pytest.mark.parametrize("setup, line, reason", [
    ({}, "--schema missing", "--schema missing: no variable 'missing' in the notebook"),
    ({"s": 42}, "--schema s", "--schema s: a int; --schema takes a JSON Schema dict"),
    ({"s": {"type": "objekt"}}, "--schema s", "--schema s: not a valid JSON Schema: \\$.type"),
    ({"s": "name strr"}, "--schema s", "--schema s: unknown type 'strr'"),
])
def test_a_schema_that_cannot_be_right_sends_nothing(ip, env_emu, setup, line, reason):
    ip.user_ns.update(setup)
    with pytest.raises(InvalidRequestError, match=reason) as caught:
        ask(ip, line, "Tell me about Ada")
    assert "\n" not in str(caught.value)
    assert creates(env_emu) == []


@pytest.mark.parametrize("line, reason", [
    ("--schema s -f text", "argument --schema: asks for a JSON answer, and -f text"),
    (f"-f json -m {LLAMA} -m {STRUCTURED}", "takes one model"),
    ("-f yaml", "invalid choice"),
    ("--schema 1x", "--schema: invalid value '1x'"),
])
def test_flags_that_contradict_a_json_answer_are_usage_errors(ip, env_emu, line, reason):
    ip.user_ns["s"] = PERSON
    with pytest.raises(UsageError, match=reason):
        ask(ip, line, "Hi")
    assert creates(env_emu) == []


def test_the_help_names_json_and_schema(ip):
    help_text = ip.magics_manager.magics["cell"]["replicate"].__doc__
    assert "json" in help_text and "--schema NAME" in help_text and "pydantic" in help_text


# -- a real kernel ---------------------------------------------------------------------------------


def test_json_answers_in_a_real_kernel(kernel, emu):
    kernel.ok("person = 'name str, age int, tags list[str]'")
    cell = kernel.ok("%%replicate --schema person -o p --no-history\nTell me about Ada [[emulator:bad-json]]")
    assert kernel.eval("sorted(p)") == ["age", "name", "tags"]
    assert kernel.eval("type(p['age']).__name__") == "int"
    assert len(emu.predictions) == 2
    assert any("asked again: the first answer was not valid" in plain(m) for m in cell.of_type("display_data"))
    emu.inject(Faults(invalid_json=2))
    failed = kernel.run("%%replicate --schema person -o raw --no-history\nTell me about Grace")
    assert failed.status == "error" and failed.reply["ename"] == "InvalidAnswerError"
    assert "\n" not in failed.reply["evalue"] and "raw holds the reply's text" in failed.reply["evalue"]
    assert failed.reply["traceback"] == [f"InvalidAnswerError: {failed.reply['evalue']}"]
    assert kernel.eval("type(raw).__name__") == "str" and kernel.eval("'age' in raw")
