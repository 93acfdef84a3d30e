"""TextParts: appends without quadratic copying, read back as one string."""

from replicate_magic.textparts import TextParts


def test_appends_read_back_in_order_and_reading_twice_is_stable():
    text = TextParts()
    assert not text and text.value == ""
    for piece in ["Hel", "lo", "", " world"]:
        text.append(piece)
    assert text and text.value == "Hello world" and text.value == "Hello world"
    text.append("!")
    assert text.value == "Hello world!"


def test_setting_replaces_the_text():
    text = TextParts()
    text.append("old")
    text.value = "new"
    assert text.value == "new"
    text.value = ""
    assert not text
