"""An offline emulator of Replicate's HTTP API and SSE streams, for tests and offline notebooks.

It behaves like the real service where client code can tell the difference:
problem+json errors, 201 predictions with ``urls.stream`` on a *different* port,
``id: <time>:<seq>`` SSE events with multi-line ``data``, ``Last-Event-ID``
resume, cancel, metrics, input validation against each model's Cog schema.
The "model" is deterministic and echoes the prompt, turn, system prompt and
settings, so a test can see that each option arrived.

Beyond text: black-forest-labs/flux-schnell (PNG, WebP or JPEG images, streamed as URLs),
stability-ai/sdxl (no stream; tqdm progress in its logs), meta/musicgen (a WAV), and
yorickvp/llava-13b (its reply states the size, type and sha256 of the image it received).
Output files are served by a third server, like replicate.delivery: no token, gone after
``file_lifetime``. The Files API (``/v1/files``) and deployments (``deployments=``) too.

JSON mode (json_mode.py): asked for JSON through ``json_schema`` (openai/gpt-5-structured,
wrapped as the real one wants it) or by a prompt that gives a JSON Schema, a text model answers
deterministic JSON that follows that schema.

Usage::

    from replicate_magic.emulator import Emulator, Faults

    with Emulator(token="test-token") as emu:
        client = replicate.Client(api_token="test-token", base_url=emu.base_url)
        emu.inject(Faults(drop_after=3))      # the next prediction's stream drops
        text = "".join(str(e) for e in client.stream(
            "meta/meta-llama-3-70b-instruct", input={"prompt": "Hi"}))
        emu.requests                          # the newest requests the servers received
        emu.predictions                       # server-side state by prediction id (the newest)

Creates are rate limited like Replicate's: ``create_rate_limit`` a minute (600) with bursts
of ``create_burst`` (a token bucket; default a minute's worth); over it, 429 with
``Retry-After``. ``emu.create_times`` and ``emu.throttled`` say when creates passed or got 429,
``emu.in_flight`` / ``emu.peak_in_flight`` how many predictions ran at once.

Per-prompt faults (batch tests: item 37 fails, the others stream): a marker in the last user
message (``prompt``, or the last user entry of ``messages``) makes that one prediction misbehave:

- ``[[emulator:fail]]``, ``[[emulator:fail=N]]``: fails after N output tokens (default 3),
  status ``failed`` with an error, as ``Faults(error_after=N)``;
- ``[[emulator:fail-create]]``: the create answers 422 "Input validation failed";
- ``[[emulator:5xx-once]]``: the create answers 500 the first time this text is sent, then works;
- ``[[emulator:stall]]``, ``[[emulator:stall=N]]``: streams N tokens (default 3), then is
  silent until canceled;
- ``[[emulator:slow=SECONDS]]``: its tokens take about SECONDS in total;
- ``[[emulator:bad-json]]``, ``[[emulator:bad-json=syntax]]``: a JSON answer to that message is
  invalid (its first required property left out, or cut short), as ``Faults(invalid_json=1)``.

Image and audio models count steps instead of tokens. An unknown or malformed marker gets a 422.

Both servers answer only requests addressed to them (``Host: 127.0.0.1:PORT``,
``localhost:PORT``; 403 otherwise), so a DNS-rebinding web page cannot read the
prompts sent to them; memory stays bounded (see ``Emulator`` and ``limits``).

From a shell (for notebooks)::

    python -m replicate_magic.emulator --port 8700 --stream-port 8701
    # then: REPLICATE_BASE_URL=http://127.0.0.1:8700 REPLICATE_API_TOKEN=anything
"""

from .faults import Faults
from .models import MODELS
from .prediction import Prediction
from .responder import respond, tokenize
from .server import Emulator
from .state import RecordedRequest

__all__ = ["Emulator", "Faults", "RecordedRequest", "Prediction", "MODELS", "respond", "tokenize"]
