"""The declared settings and the one request builder: what was asked, over %config, over defaults."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from replicate_magic.catalog import DEFAULT_MODEL
from replicate_magic.options import CellOptions, parse_cell_options
from replicate_magic.request import Configured, TurnRequest, build_request
from replicate_magic.settings import SETTINGS, Timeouts


def test_nothing_asked_nothing_configured_gives_the_declared_defaults() -> None:
    request = build_request("Hi", CellOptions(), Configured())
    assert request == TurnRequest(prompt="Hi")
    assert (request.model, request.max_history) == (DEFAULT_MODEL, SETTINGS["max_history"].default)
    assert request.timeouts == Timeouts(connect=10.0, idle=180.0)


def test_what_was_asked_beats_the_configuration() -> None:
    configured = Configured(model="openai/gpt-4o-mini", max_history=3, timeout=60.0, connect_timeout=2.0,
                            default_inputs={"temperature": 0.1, "seed": 3})
    request = build_request("Hi", parse_cell_options("-m llama-3-8b -t 0.9 --timeout 5 -i seed=4"), configured)
    assert request.model == "meta/meta-llama-3-8b-instruct"  # the alias, resolved once here
    assert (request.settings.temperature, request.settings.extra, request.settings.defaults) == (
        0.9, {"seed": 4}, {"temperature": 0.1, "seed": 3})
    assert (request.max_history, request.timeouts) == (3, Timeouts(connect=2.0, idle=5.0))


def test_the_configuration_is_read_from_traits_by_name() -> None:
    traits = SimpleNamespace(model="m/x", max_history=0, default_inputs={}, timeout=1.0, connect_timeout=1.0,
                             show_metrics=False)  # a setting the request does not need is left alone
    assert Configured.of(traits) == Configured(model="m/x", max_history=0, timeout=1.0, connect_timeout=1.0)


def test_history_and_conversation_choices_pass_through() -> None:
    request = build_request("Hi", parse_cell_options("-c work --new --no-history -s 'Be terse.'"), Configured(),
                            cell_id="cell-1")
    assert (request.chat, request.new, request.use_history, request.system, request.cell_id) == (
        "work", True, False, "Be terse.", "cell-1")


@pytest.mark.parametrize("name, value, message", [
    ("timeout", 0, "invalid value 0 (allowed: a number > 0)"),
    ("top_p", 1.5, "invalid value 1.5 (allowed: a number > 0 and <= 1)"),
    ("max_history", 2.5, "invalid value 2.5 (allowed: a whole number >= 0)"),
    ("max_history", True, "invalid value True (allowed: a whole number >= 0)"),
    ("temperature", math.nan, "invalid value nan (allowed: a number >= 0)"),
    ("output_format", "html", "invalid value 'html' (allowed: markdown or text)"),
    ("show_metrics", "yes", "invalid value 'yes' (allowed: True or False)"),
])
def test_a_value_against_its_rule_names_what_is_allowed(name: str, value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        SETTINGS[name].check(value)
    assert str(caught.value) == message


def test_a_whole_float_is_taken_as_an_int_where_an_int_is_declared() -> None:
    assert SETTINGS["max_tokens"].check(5.0) == 5 and isinstance(SETTINGS["max_tokens"].check(5.0), int)


def test_each_flag_of_a_declared_setting_shows_its_declared_help() -> None:
    from replicate_magic.magics import ReplicateMagics

    help_text = " ".join((ReplicateMagics.replicate.__doc__ or "").split())
    for name in ("temperature", "top_p", "top_k", "max_tokens", "timeout", "model", "system"):
        assert SETTINGS[name].help in help_text, name
    for name in ("model", "max_history", "timeout", "connect_timeout", "default_inputs", "output_format"):
        assert ReplicateMagics.class_traits()[name].help == SETTINGS[name].help
