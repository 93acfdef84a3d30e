"""Kernel-held history: context trimming, re-run replacement, JSON in and out, the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicate_magic.conversation import Conversation, ConversationStore, Turn


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def chat(count: int, *, system_prompt: str | None = None, cell_ids: bool = False) -> Conversation:
    """A conversation with turns q1/a1 ... qN/aN (cell ids c1 ... cN when asked)."""
    conversation = Conversation("test", system_prompt)
    for n in range(1, count + 1):
        cell_id = f"c{n}" if cell_ids else None
        conversation.record(Turn(f"q{n}", f"a{n}", "m", cell_id))
    return conversation


@pytest.mark.parametrize(
    ("max_turns", "prompts"),
    [
        (None, ["q1", "q2", "q3"]),
        (0, []),
        (1, ["q3"]),
        (2, ["q2", "q3"]),
        (5, ["q1", "q2", "q3"]),
    ],
)
def test_context_keeps_the_last_turns(max_turns: int | None, prompts: list[str]) -> None:
    expected = []
    for prompt in prompts:
        expected += [user(prompt), assistant(prompt.replace("q", "a"))]
    assert chat(3).context(max_turns) == expected


@pytest.mark.parametrize("max_turns", [None, 0, 1, 5])
def test_system_prompt_comes_first_whatever_the_trimming(max_turns: int | None) -> None:
    context = chat(3, system_prompt="be brief").context(max_turns)
    assert context[0] == system("be brief")
    assert system("be brief") not in context[1:]


def test_empty_conversation_context() -> None:
    assert Conversation().context(None) == []
    assert Conversation(system="s").context(None) == [system("s")]


def test_an_empty_system_prompt_sends_no_system_message() -> None:
    assert chat(1, system_prompt="").context(None) == [user("q1"), assistant("a1")]


def test_negative_max_turns_is_a_bug() -> None:
    with pytest.raises(ValueError, match="max_turns"):
        chat(1).context(-1)


def test_record_appends_turns_without_cell_id() -> None:
    conversation = Conversation()
    conversation.record(Turn("q", "a", "m"))
    conversation.record(Turn("q", "a", "m"))
    assert len(conversation) == 2


def test_record_appends_new_cell_ids() -> None:
    conversation = chat(2, cell_ids=True)
    conversation.record(Turn("q3", "a3", "m", "c3"))
    assert [t.cell_id for t in conversation.turns] == ["c1", "c2", "c3"]


def test_rerun_replaces_the_turn_in_place() -> None:
    conversation = chat(3, cell_ids=True)
    conversation.record(Turn("q2 again", "a2 again", "other", "c2"))
    assert [t.prompt for t in conversation.turns] == ["q1", "q2 again", "q3"]
    assert conversation.turns[1] == Turn("q2 again", "a2 again", "other", "c2")
    assert len(conversation) == 3


def test_context_for_a_rerun_cell_stops_before_its_turn() -> None:
    conversation = chat(3, cell_ids=True, system_prompt="s")
    assert conversation.context(None, cell_id="c2") == [system("s"), user("q1"), assistant("a1")]
    assert conversation.context(None, cell_id="c1") == [system("s")]


def test_context_for_a_rerun_cell_is_trimmed_too() -> None:
    conversation = chat(4, cell_ids=True)
    assert conversation.context(1, cell_id="c3") == [user("q2"), assistant("a2")]


def test_context_for_a_new_cell_uses_everything() -> None:
    conversation = chat(2, cell_ids=True)
    assert conversation.context(None, cell_id="new") == conversation.messages()


def test_messages_is_a_fresh_copy() -> None:
    conversation = chat(1, system_prompt="s")
    messages = conversation.messages()
    assert messages == [system("s"), user("q1"), assistant("a1")]
    messages.append(user("sneaky"))
    messages[0]["content"] = "changed"
    assert conversation.messages() == [system("s"), user("q1"), assistant("a1")]
    assert conversation.messages() is not conversation.messages()


def test_turns_are_read_only() -> None:
    conversation = chat(2)
    assert isinstance(conversation.turns, tuple)
    with pytest.raises(AttributeError):
        conversation.turns = ()  # type: ignore[misc]


def test_reset_forgets_turns_and_system() -> None:
    conversation = chat(2, system_prompt="s")
    conversation.reset()
    assert len(conversation) == 0
    assert conversation.system is None
    assert conversation.messages() == []


def test_set_system() -> None:
    conversation = chat(1)
    conversation.set_system("be brief")
    assert conversation.messages()[0] == system("be brief")
    conversation.set_system(None)
    assert conversation.messages()[0] == user("q1")


def test_repr_names_and_counts_but_never_shows_text() -> None:
    conversation = Conversation("work", "secret system", [Turn("secret prompt", "secret", "m")])
    text = repr(conversation)
    assert "'work'" in text
    assert "1 turn" in text
    assert "secret" not in text


def test_json_round_trip() -> None:
    conversation = chat(2, system_prompt="s", cell_ids=True)
    conversation.record(Turn("q3", "a3", "m"))
    data = conversation.to_json()
    assert data == {
        "name": "test",
        "system": "s",
        "turns": [
            {"prompt": "q1", "reply": "a1", "model": "m", "cell_id": "c1"},
            {"prompt": "q2", "reply": "a2", "model": "m", "cell_id": "c2"},
            {"prompt": "q3", "reply": "a3", "model": "m", "cell_id": None},
        ],
    }
    again = Conversation.from_json(json.loads(json.dumps(data)))
    assert again.to_json() == data
    assert again.turns == conversation.turns


def test_from_json_name_override_and_fallback() -> None:
    data = chat(1).to_json()
    assert Conversation.from_json(data, name="other").name == "other"
    del data["name"]
    assert Conversation.from_json(data).name == "default"


def test_from_json_fills_optional_turn_fields() -> None:
    conversation = Conversation.from_json({"turns": [{"prompt": "q", "reply": "a"}]})
    assert conversation.turns == (Turn("q", "a", "", None),)
    assert conversation.system is None


def test_from_json_accepts_plain_messages() -> None:
    messages = [system("s"), user("q1"), assistant("a1"), user("q2"), assistant("a2")]
    conversation = Conversation.from_json(messages, name="imported")
    assert conversation.name == "imported"
    assert conversation.system == "s"
    assert conversation.turns == (Turn("q1", "a1", ""), Turn("q2", "a2", ""))
    assert conversation.messages() == messages


def test_from_json_joins_several_system_messages() -> None:
    conversation = Conversation.from_json([system("one"), user("q"), assistant("a"), system("two")])
    assert conversation.system == "one\n\ntwo"


def test_from_json_accepts_an_empty_message_list() -> None:
    conversation = Conversation.from_json([])
    assert (conversation.name, conversation.system, len(conversation)) == ("default", None, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (42, "expected a conversation object or a list of messages, not int"),
        ("text", "not str"),
        ({"turns": {}}, "'turns' is not a list"),
        ({"turns": ["q"]}, "turn 1 is not an object"),
        (
            {"turns": [{"prompt": "q", "reply": "a"}] * 2 + [{"prompt": "q"}]},
            "turn 3 has no 'reply'",
        ),
        ({"turns": [{"reply": "a"}]}, "turn 1 has no 'prompt'"),
        ({"turns": [{"prompt": 1, "reply": "a"}]}, "turn 1 has a 'prompt' that is not text"),
        ({"turns": [{"prompt": "q", "reply": "a", "model": 3}]}, "turn 1 has a 'model'"),
        ({"turns": [{"prompt": "q", "reply": "a", "cell_id": 3}]}, "turn 1 has a 'cell_id'"),
        ({"system": ["s"], "turns": []}, "'system' that is not text"),
        ({"name": 5}, "'name' that is not text"),
        ([user("q"), user("q")], "message 2 (user) comes where an assistant reply"),
        ([assistant("a")], "message 1 (assistant) comes where a user message"),
        ([user("q"), assistant("a"), user("q2")], "message 3 (user) has no assistant reply"),
        ([{"role": "tool", "content": "x"}], "message 1 has role 'tool'"),
        ([{"content": "x"}], "message 1 has no 'role'"),
        ([{"role": "user"}], "message 1 has no 'content'"),
        ([{"role": "user", "content": [{"type": "text"}]}], "message 1 has a 'content' that"),
        (["hello"], "message 1 is not an object"),
    ],
)
def test_from_json_rejects_bad_data_in_one_line(data: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Conversation.from_json(data)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_store_get_creates_once() -> None:
    store = ConversationStore()
    assert "default" not in store
    conversation = store.get("default")
    assert store.get("default") is conversation
    assert "default" in store
    assert conversation.name == "default"


def test_store_names_are_sorted_and_only_existing() -> None:
    store = ConversationStore()
    assert store.names() == []
    for name in ["work", "alpha", "default"]:
        store.get(name)
    assert "missing" not in store
    assert store.names() == ["alpha", "default", "work"]


def test_store_reset_empties_in_place() -> None:
    store = ConversationStore()
    conversation = store.get("work")
    conversation.record(Turn("q", "a", "m"))
    store.reset("work")
    assert store.get("work") is conversation
    assert len(conversation) == 0
    store.reset("never-created")  # a no-op, and it creates nothing
    assert store.names() == ["work"]


def test_store_replace_renames_to_its_key() -> None:
    store = ConversationStore()
    store.get("work")
    replacement = chat(2)
    store.replace("work", replacement)
    assert store.get("work") is replacement
    assert replacement.name == "work"


def test_store_save_and_load(tmp_path: Path) -> None:
    store = ConversationStore()
    store.replace("work", chat(2, system_prompt="ünïcode ✓", cell_ids=True))
    path = tmp_path / "work.json"
    store.save("work", path)
    text = path.read_text(encoding="utf-8")
    assert "ünïcode ✓" in text  # readable, not \\u escapes
    assert text.startswith('{\n  "name": "work"')  # indent 2

    other = ConversationStore()
    loaded = other.load(path)
    assert loaded.name == "work"
    assert other.get("work") is loaded
    assert loaded.to_json() == store.get("work").to_json()


def test_store_load_under_another_name(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps([user("q"), assistant("a")]), encoding="utf-8")
    store = ConversationStore()
    assert store.load(path).name == "default"  # plain messages carry no name
    assert store.load(str(path), name="copy").name == "copy"
    assert store.names() == ["copy", "default"]


def test_store_load_replaces_a_conversation_with_turns_only_when_asked(tmp_path: Path) -> None:
    store = ConversationStore()
    store.replace("work", chat(3))
    path = tmp_path / "one.json"
    path.write_text(json.dumps([user("only"), assistant("one")]), encoding="utf-8")
    with pytest.raises(ValueError, match="already has 3 turn"):
        store.load(path, name="work")
    assert len(store.get("work")) == 3
    store.load(path, name="work", replace=True)
    assert [t.prompt for t in store.get("work").turns] == ["only"]
    store.get("empty")
    assert store.load(path, name="empty").name == "empty"  # an empty one is simply filled


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe\x00", "not UTF-8 text"),
        (b'{"turns": [{"prompt": "q"}]}', "turn 1 has no 'reply'"),
    ],
)
def test_store_load_rejects_bad_files_in_one_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    store = ConversationStore()
    with pytest.raises(ValueError) as info:
        store.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    assert store.names() == []  # nothing half-loaded


def test_store_save_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        ConversationStore().save("nope", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
