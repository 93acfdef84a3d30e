"""Problem-details parsing and the one-line messages users see (pure)."""

import pytest

from replicate_magic.errors import (
    MissingAuthError,
    RateLimitError,
    ResponseError,
    error_for_status,
    missing_token_error,
    parse_problem,
)

PROBLEM = "application/problem+json"


@pytest.mark.parametrize(
    "status, ctype, body, expected",
    [
        (401, PROBLEM, '{"title":"Unauthenticated","detail":"You did not pass a valid authentication token","status":401}',
         ("Unauthenticated", "You did not pass a valid authentication token")),
        (404, PROBLEM, '{"detail":"Model x/y does not exist","status":404}', (None, "Model x/y does not exist")),
        (400, "application/json", '{"error":{"message":"bad"}}', (None, "bad")),
        (502, "text/html", "<!DOCTYPE html><html><title>Bad gateway | cloudflare</title></html>",
         (None, "the server answered with an HTML error page")),
        (500, "text/plain", "  upstream   exploded \n", (None, "upstream exploded")),
        (500, PROBLEM, "{not json", (None, "{not json")),
        (503, "", "", (None, None)),
    ],
)
def test_parse_problem(status, ctype, body, expected):
    assert parse_problem(status, ctype, body) == expected


def test_error_is_one_sentence_with_status_title_detail_and_advice():
    error = error_for_status(422, "Input validation failed", "- input.max_tokens: Must be >= 1024")
    assert type(error) is ResponseError
    text = str(error)
    assert "\n" not in text
    assert text.startswith("Replicate answered HTTP 422 Input validation failed: - input.max_tokens")
    assert "Next: check the inputs" in text
    assert (error.status, error.title) == (422, "Input validation failed")


def test_401_is_missing_auth_and_says_where_to_get_a_token():
    error = error_for_status(401, "Unauthenticated", "You did not pass a valid authentication token")
    assert isinstance(error, MissingAuthError)
    assert "https://replicate.com/account/api-tokens" in str(error)


def test_429_is_rate_limit_and_a_response_error():
    error = error_for_status(429, None, "Request was throttled.")
    assert isinstance(error, RateLimitError) and isinstance(error, ResponseError)


def test_5xx_advice():
    assert "server problem" in str(error_for_status(503, None, None))


def test_render_traceback_is_one_line():
    assert missing_token_error()._render_traceback_() == [f"MissingAuthError: {missing_token_error()}"]
    assert "REPLICATE_API_TOKEN" in str(missing_token_error())


def test_messages_from_server_text_carry_no_control_sequences():
    from replicate_magic.errors import ModelError

    error = ModelError("The model failed: \x1b]0;owned\x07boom\x1b[2J")
    assert str(error) == "The model failed: boom"
    assert error._render_traceback_() == ["ModelError: The model failed: boom"]
