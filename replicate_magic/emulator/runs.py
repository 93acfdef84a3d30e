"""Runs of the image and audio models: a cold start, logs with tqdm progress, files on the file host.

As on Replicate (stability-ai/sdxl in replicate-python tests/cassettes/predictions-get.yaml):
``starting`` while it boots, then ``processing`` with logs such as ``Using seed: 42069``, the
prompt, and one tqdm line per step (`` 4%|▍         | 2/50 [00:00<00:02, 16.47it/s]``), the last
line printed twice (tqdm's close); then the output URLs, one per file, on the file host.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from . import audio, images
from .faults import Faults
from .files import StoredFile
from .prediction import Prediction
from .schema import EmulatedModel
from .state import EmulatorState

__all__ = ["run_media", "publish", "tqdm_line", "steps_of"]

_BAR = " " + "".join(chr(c) for c in range(0x258F, 0x2587, -1))  # tqdm's unicode bar: " ▏▎▍▌▋▊▉█"
_MAX_AUDIO_SECONDS = 60.0


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def tqdm_line(n: int, total: int, elapsed: float) -> str:
    """tqdm's default bar (10 cells, unicode), as models print it to their logs."""
    frac = n / total if total else 1.0
    full, part = divmod(int(frac * 10 * 8), 8)
    bar = (_BAR[-1] * full + (_BAR[part] if part else "")).ljust(10)
    rate = n / elapsed if n and elapsed > 0 else None
    if rate is None:
        timing = f"[{_clock(elapsed)}<?, ?it/s]"
    else:
        timing = f"[{_clock(elapsed)}<{_clock((total - n) / rate)}, {rate:5.2f}it/s]"
    return f"{frac * 100:3.0f}%|{bar}| {n}/{total} {timing}"


def _value(model: EmulatedModel, input: dict[str, Any], name: str) -> Any:
    return input.get(name, model.properties.get(name, {}).get("default"))


def _seed(model: EmulatedModel, input: dict[str, Any]) -> int:
    """The input's seed, else one derived from the input (real models pick a random one)."""
    seed = input.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return seed
    digest = hashlib.sha256(json.dumps(input, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:2], "big")


def steps_of(model: EmulatedModel, input: dict[str, Any]) -> int:
    if model.kind == "audio":  # MusicGen makes 50 frames a second
        return min(500, max(1, int(_seconds(model, input) * 50)))
    steps = _value(model, input, "num_inference_steps")
    return steps if isinstance(steps, int) and steps > 0 else 1


def _seconds(model: EmulatedModel, input: dict[str, Any]) -> float:
    duration = _value(model, input, "duration")
    return min(_MAX_AUDIO_SECONDS, max(0.25, float(duration))) if isinstance(duration, (int, float)) else 8.0


def _preamble(model: EmulatedModel, input: dict[str, Any], seed: int) -> list[str]:
    lines = [f"Using seed: {seed}"]
    if model.ref == "stability-ai/sdxl":  # as recorded
        mode = "inpainting" if input.get("mask") else "img2img" if input.get("image") else "txt2img"
        lines += [f"Prompt: {_value(model, input, 'prompt')}", f"{mode} mode"]
    return lines


def publish(state: EmulatorState, name: str, content_type: str, data: bytes,
            faults: Faults | None = None) -> str:
    """Put a file on the file host; its URL, in replicate.delivery's recorded shape
    (``https://replicate.delivery/pbxt/<token>/out-0.png``)."""
    faults = faults or Faults()
    path = f"/pbxt/{secrets.token_urlsafe(36)}/{name}"
    state.outputs.add(StoredFile(
        key=path, name=name, data=faults.file_body if faults.file_body is not None else data,
        content_type=faults.file_content_type or content_type,
        lifetime=faults.file_lifetime if faults.file_lifetime is not None else state.file_lifetime,
        drop_after=faults.file_drop_after, stall_after=faults.file_stall_after,
        every_download=faults.drop_every_connection, delay=faults.file_delay or 0.0,
    ))
    return state.file_base + path


FileSpec = tuple[str, str, Callable[[], bytes]]  # name, content type, maker


def _image_specs(model: EmulatedModel, input: dict[str, Any], state: EmulatorState, seed: int,
                 faults: Faults) -> list[FileSpec]:
    if model.ref == "black-forest-labs/flux-schnell":
        width, height = images.flux_size(str(_value(model, input, "aspect_ratio")),
                                         str(_value(model, input, "megapixels")))
        fmt = str(_value(model, input, "output_format"))
    else:  # sdxl: its width and height inputs, PNG
        width, height = (min(4096, max(16, int(_value(model, input, k)))) for k in ("width", "height"))
        fmt = "png"
    width, height = images.scaled(width, height, state.image_scale)
    count = _value(model, input, "num_outputs")
    specs: list[FileSpec] = []
    for index in range(count if isinstance(count, int) and count > 0 else 1):
        key = json.dumps({"model": model.ref, "prompt": input.get("prompt"), "seed": seed, "index": index},
                         sort_keys=True).encode()

        def make(key: bytes = key) -> bytes:
            if faults.image_bytes and fmt in ("png", "webp"):
                return images.encode(images.noise(faults.image_bytes, width / height, key), fmt, noisy=True)
            return images.encode(images.picture(width, height, key), fmt)

        specs.append((f"out-{index}.{fmt}", images.CONTENT_TYPES[fmt], make))
    return specs


def _audio_specs(model: EmulatedModel, input: dict[str, Any], seed: int) -> list[FileSpec]:
    fmt = "mp3" if _value(model, input, "output_format") == "mp3" else "wav"
    seconds = _seconds(model, input)
    key = json.dumps({"model": model.ref, "prompt": input.get("prompt"), "seed": seed}).encode()
    make = (lambda: audio.mp3(seconds)) if fmt == "mp3" else (lambda: audio.wav(seconds, key))
    return [(f"out.{fmt}", audio.CONTENT_TYPES[fmt], make)]


async def run_media(pred: Prediction, model: EmulatedModel, state: EmulatorState,
                    steps_per_second: float, cold_start: float) -> None:
    """The model run, as its own task (cancel stops it). Faults as in prediction.generate:
    ``logs`` half-way through the cold start, ``stall_after`` / ``error_after`` at a step."""
    faults = pred.faults
    await asyncio.sleep(cold_start / 2)
    for line in faults.logs or ():
        pred.add_log(line)
    await asyncio.sleep(cold_start / 2)
    pred.start_processing()
    seed = _seed(model, pred.input)
    for line in _preamble(model, pred.input, seed):
        pred.add_log(line)
    total, began = steps_of(model, pred.input), time.monotonic()
    delay = 1.0 / steps_per_second if steps_per_second > 0 else 0.0
    pred.add_log(tqdm_line(0, total, 0.0))
    for step in range(total + 1):
        if faults.stall_after == step:
            await asyncio.Event().wait()  # until cancel (or shutdown) cancels this task
        if faults.error_after == step:
            pred.finish("failed", faults.error_message)
            return
        if step == total:
            break
        await asyncio.sleep(max(0.0, began + (step + 1) * delay - time.monotonic()))  # no drift, as above
        pred.add_log(tqdm_line(step + 1, total, time.monotonic() - began))
    pred.add_log(tqdm_line(total, total, time.monotonic() - began))
    if faults.tokens is not None:
        urls = list(faults.tokens)
    else:
        specs = (_audio_specs(model, pred.input, seed) if model.kind == "audio"
                 else _image_specs(model, pred.input, state, seed, faults))
        loop = asyncio.get_running_loop()
        urls = [publish(state, name, ctype, await loop.run_in_executor(None, make), faults)
                for name, ctype, make in specs]
    if model.kind == "image" and model.ref == "black-forest-labs/flux-schnell":
        pred.extra_metrics["image_count"] = len(urls)  # billed per image (reconstructed)
    for url in urls:
        pred.add_token(url)
    pred.finish("succeeded")
