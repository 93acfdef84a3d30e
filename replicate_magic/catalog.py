"""Models we know by name: the default, a short list for pickers, and aliases. Pure."""

from __future__ import annotations

DEFAULT_MODEL = "meta/meta-llama-3-70b-instruct"

KNOWN_MODELS = (
    DEFAULT_MODEL,
    "meta/meta-llama-3-8b-instruct",
    "mistralai/mixtral-8x7b-instruct-v0.1",
    "openai/gpt-4o-mini",
    "anthropic/claude-3.7-sonnet",
)

MODEL_ALIASES = {
    "meta-llama/Meta-Llama-3-70B-Instruct": DEFAULT_MODEL,  # gpt4free's alias
    "llama-3-70b": DEFAULT_MODEL,
    "llama-3-8b": "meta/meta-llama-3-8b-instruct",
    "mixtral-8x7b": "mistralai/mixtral-8x7b-instruct-v0.1",
    "gpt-4o-mini": "openai/gpt-4o-mini",
    "claude-3.7-sonnet": "anthropic/claude-3.7-sonnet",
}


def resolve_model(model: str | None) -> str:
    """Empty gives the default model; an alias gives its model; anything else is kept."""
    if not model or not model.strip():
        return DEFAULT_MODEL
    return MODEL_ALIASES.get(model.strip(), model.strip())
