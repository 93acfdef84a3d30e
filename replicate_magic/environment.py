"""Where the token and the API address come from: read at request time, never stored."""

from __future__ import annotations

import os

DEFAULT_BASE_URL = "https://api.replicate.com"


def find_token(api_key: str | None = None) -> str | None:
    """The argument, else REPLICATE_API_TOKEN, else gpt4free's REPLICATE_API_KEY."""
    for candidate in (api_key, os.environ.get("REPLICATE_API_TOKEN"), os.environ.get("REPLICATE_API_KEY")):
        if candidate and candidate.strip():
            return candidate.strip()
    return None


def base_url() -> str:
    """REPLICATE_BASE_URL (an emulator, a gateway), else Replicate's API."""
    return os.environ.get("REPLICATE_BASE_URL", "").strip().rstrip("/") or DEFAULT_BASE_URL
