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

Usage::

    from replicate_magic.emulator import Emulator, Faults

    with Emulator(token="test-token") as emu:
        client = replicate.Client(api_token="test-token", base_url=emu.base_url)
        emu.inject(Faults(drop_after=3))      # the next prediction's stream drops
        text = "".join(str(e) for e in client.stream(
            "meta/meta-llama-3-70b-instruct", input={"prompt": "Hi"}))
        emu.requests                          # the newest requests the servers received
        emu.predictions                       # server-side state by prediction id (the newest)

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
