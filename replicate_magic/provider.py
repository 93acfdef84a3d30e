"""``Replicate``: gpt4free's provider class, ported faithfully and corrected.

Same attributes and the same ``create_async_generator`` signature (``extra_data`` as in the
seed, plus ``extra_body``, gpt4free's current name). Fixed: the token never sticks in a
default argument; Server-Sent Events are decoded by the spec; ``error`` events raise; a
stream that ends without ``done`` is resumed or raises; inputs follow the model's schema;
version-pinned models work; 429 is retried; a stream has an idle limit, not a total one;
and a consumer that stops early cancels the prediction on Replicate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import aclosing
from types import MappingProxyType
from typing import Any, ClassVar

from .catalog import DEFAULT_MODEL, KNOWN_MODELS, MODEL_ALIASES
from .client import ReplicateClient, Timeouts
from .environment import base_url
from .errors import LOGIN_URL
from .inputs import Settings, stop_sequences
from .streaming import PredictionStream

_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
_JSON_HEADERS: Mapping[str, str] = MappingProxyType({"accept": "application/json"})


class AsyncTextStream:
    """An async iterator of text that may also be awaited (which gives itself back).

    So both ``async for t in Replicate.create_async_generator(...)`` and the seed's
    ``gen = await Replicate.create_async_generator(...); async for t in gen`` work.
    ``async with`` closes it on leaving, even when the loop body raised.
    """

    def __init__(self, tokens: AsyncIterator[str]) -> None:
        self._tokens = tokens

    def __aiter__(self) -> AsyncTextStream:
        return self

    async def __anext__(self) -> str:
        return await self._tokens.__anext__()

    async def aclose(self) -> None:
        """Stop early: the prediction is cancelled on Replicate before this returns."""
        await self._tokens.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> AsyncTextStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __await__(self) -> Generator[Any, None, AsyncTextStream]:
        return self._itself().__await__()

    async def _itself(self) -> AsyncTextStream:
        return self


class Replicate:
    """Text generation with models hosted on Replicate, streamed token by token; for a
    model that makes files (images, audio), the files' URLs, one chunk per output."""

    url = "https://replicate.com"
    login_url = LOGIN_URL
    working = True
    needs_auth = True
    supports_stream = True
    supports_system_message = True
    supports_message_history = True
    default_model = DEFAULT_MODEL
    models: ClassVar[list[str]] = list(KNOWN_MODELS)
    model_aliases: ClassVar[dict[str, str]] = dict(MODEL_ALIASES)

    @classmethod
    def get_model(cls, model: str | None) -> str:
        """Empty gives the default model; an alias gives its model; anything else is kept."""
        if not model:
            return cls.default_model
        return cls.model_aliases.get(model, model)

    @classmethod
    def create_async_generator(
        cls,
        model: str,
        messages: list[Mapping[str, Any]],
        api_key: str | None = None,
        proxy: str | None = None,
        timeout: float = 180,
        system_prompt: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: float | None = None,
        stop: list[str] | str | None = None,
        extra_data: Mapping[str, Any] = _NO_EXTRA,
        headers: Mapping[str, str] = _JSON_HEADERS,
        **kwargs: Any,
    ) -> AsyncTextStream:
        """Stream the reply to ``messages`` as text chunks.

        ``timeout`` is the idle limit in seconds (no data for that long fails the stream);
        there is no limit on a stream's total length. ``proxy`` is an http(s) proxy URL; the
        usual proxy environment variables are honoured too. ``extra_data`` (or
        ``extra_body``) is merged into the model's input last. Also accepted:
        ``base_url=`` (default ``REPLICATE_BASE_URL`` or Replicate) and ``connect_timeout=``.
        Other keyword arguments are ignored, as in gpt4free.
        """
        settings = Settings(
            system_prompt=system_prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=None if top_k is None else int(top_k),
            stop=stop_sequences(stop),
            extra={**extra_data, **kwargs.get("extra_body", {})},
        )
        return AsyncTextStream(cls._generate(
            settings,
            model=cls.get_model(model),
            messages=list(messages),
            api_key=api_key,
            proxy=proxy,
            base_url=kwargs.get("base_url") or base_url(),
            timeouts=Timeouts(connect=float(kwargs.get("connect_timeout", 10)), idle=float(timeout)),
            headers=dict(headers),
        ))

    @classmethod
    async def _generate(
        cls,
        settings: Settings,
        *,
        model: str,
        messages: list[Mapping[str, Any]],
        api_key: str | None,
        proxy: str | None,
        base_url: str,
        timeouts: Timeouts,
        headers: dict[str, str],
    ) -> AsyncIterator[str]:
        client = await ReplicateClient.connect(
            api_key, base_url=base_url, proxy=proxy, timeouts=timeouts, headers=headers
        )
        stream = PredictionStream(client, model, messages, settings)
        # aclosing: stopping this generator must stop (and cancel) the inner one now, not at GC.
        async with aclosing(stream.tokens()) as tokens:
            async for text in tokens:
                yield text
        # A model that makes files yields its files' URLs, one per output, once it has ended
        # (it does not stream them): never glued into one string.
        urls = await stream.output_files() if stream.makes_files else None
        if urls is not None:
            for url in urls:
                yield url
