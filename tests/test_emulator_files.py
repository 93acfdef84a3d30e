"""The emulator's file-producing, non-streaming, audio and vision models, its file host, the
Files API and deployments, over real sockets (aiohttp client; no mocks).

Images are checked as files: PNG chunk by chunk with its CRCs, WebP through the system's
libwebp and JPEG through djpeg where those exist (the emulator writes all three itself).
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import ctypes.util
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import time
import zlib
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from replicate_magic.emulator import Emulator, Faults
from replicate_magic.emulator.models import MODELS
from replicate_magic.emulator.multipart import parse_multipart
from replicate_magic.emulator.runs import tqdm_line

TOKEN = "files-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"  # the recorded one
MUSICGEN = "meta/musicgen"
LLAVA = "yorickvp/llava-13b"
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
TQDM = re.compile(r"^ *(\d+)%\|(.{10})\| (\d+)/(\d+) \[(\d\d:\d\d)<(\?|\d\d:\d\d), +(\?|\d+\.\d\d)it/s\]$")


# -- helpers -------------------------------------------------------------------
@pytest.fixture
def emu() -> Any:
    deployments = {"acme/chat": "meta/meta-llama-3-8b-instruct", "acme/pictures": SDXL}
    with Emulator(token=TOKEN, deployments=deployments) as emulator:
        yield emulator


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


async def create(session: aiohttp.ClientSession, emu: Emulator, model: str, input: dict[str, Any],
                 wait: bool = False, status: int = 201) -> dict[str, Any]:
    """Create through the model's route, or (for a non-official model) its version."""
    spec = MODELS[model]
    if model in (SDXL, MUSICGEN, LLAVA):  # community models run by version
        url, body = f"{emu.base_url}/v1/predictions", {"version": spec.version_id, "input": input}
    else:
        url, body = f"{emu.base_url}/v1/models/{model}/predictions", {"input": input}
    headers = {**AUTH, "Prefer": "wait=10"} if wait else AUTH
    async with session.post(url, json=body, headers=headers) as r:
        assert r.status == status, await r.text()
        return await r.json(content_type=None)


async def get(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url, headers=AUTH) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def finished(session: aiohttp.ClientSession, pred: dict[str, Any],
                   seen: list[str] | None = None) -> dict[str, Any]:
    """Poll `urls.get` until the prediction ends, noting each status change in `seen`."""
    for _ in range(1000):
        body = await get(session, pred["urls"]["get"])
        if seen is not None and (not seen or seen[-1] != body["status"]):
            seen.append(body["status"])
        if body["status"] in TERMINAL:
            return body
        await asyncio.sleep(0.01)
    raise AssertionError("the prediction never ended")


async def download(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any, bytes]:
    """(status, headers (case-insensitive), body); sends no token unless told: file hosts need none."""
    async with session.get(url, **kwargs) as r:
        return r.status, r.headers.copy(), await r.read()


def parse_png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, RGB rows) of an 8-bit RGB PNG, checking every chunk's CRC on the way."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        at += 12 + length
    assert at == len(data) and chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * 3
    assert len(raw) == height * (stride + 1)
    rows = [raw[y * (stride + 1):(y + 1) * (stride + 1)] for y in range(height)]
    assert all(row[0] == 0 for row in rows)  # filter type None on every row
    return width, height, b"".join(row[1:] for row in rows)


def skip_or_fail(why: str) -> None:
    """Skip, saying why; in CI (CI=true, where .ci/run installs the decoders) fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def webp_decode(data: bytes) -> tuple[int, int, bytes]:
    """Decoded by the system's libwebp (an independent decoder), or the test is skipped."""
    found = ctypes.util.find_library("webp")
    if not found:
        skip_or_fail("libwebp is not installed (apt-get install webp)")
    lib = ctypes.CDLL(found)
    lib.WebPDecodeRGB.restype = ctypes.POINTER(ctypes.c_uint8)
    lib.WebPDecodeRGB.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int),
                                  ctypes.POINTER(ctypes.c_int)]
    width, height = ctypes.c_int(), ctypes.c_int()
    pixels = lib.WebPDecodeRGB(data, len(data), ctypes.byref(width), ctypes.byref(height))
    assert pixels, "libwebp could not decode it"
    try:
        return width.value, height.value, ctypes.string_at(pixels, width.value * height.value * 3)
    finally:
        lib.WebPFree(pixels)


def parse_wav(data: bytes) -> tuple[int, int, int, bytes]:
    """(channels, sample rate, bits per sample, samples) of a PCM WAV, checking its sizes."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    assert data[12:16] == b"fmt " and struct.unpack("<I", data[16:20])[0] == 16
    fmt, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", data[20:36])
    assert fmt == 1 and byte_rate == rate * align and align == channels * bits // 8
    assert data[36:40] == b"data"
    (size,) = struct.unpack("<I", data[40:44])
    assert size == len(data) - 44
    return channels, rate, bits, data[44:]


async def sse_outputs(session: aiohttp.ClientSession, url: str) -> list[str]:
    async with session.get(url, headers={**AUTH, "Accept": "text/event-stream"}) as r:
        text = (await r.read()).decode()
    events = [block for block in text.split("\n\n") if "event: " in block]
    outputs = []
    for block in events:
        lines = block.split("\n")
        if "event: output" in lines:
            outputs.append("\n".join(line[6:] for line in lines if line.startswith("data: ")))
    assert "event: done" in events[-1]
    return outputs


# -- schemas -------------------------------------------------------------------
async def test_models_serve_their_real_schemas(emu: Emulator, session: aiohttp.ClientSession) -> None:
    flux = await get(session, f"{emu.base_url}/v1/models/{FLUX}")
    schemas = flux["latest_version"]["openapi_schema"]["components"]["schemas"]
    props = schemas["Input"]["properties"]
    assert schemas["Input"]["required"] == ["prompt"]
    assert sorted(props, key=lambda k: props[k]["x-order"]) == [
        "prompt", "aspect_ratio", "num_outputs", "num_inference_steps", "seed", "output_format",
        "output_quality", "disable_safety_checker", "go_fast", "megapixels"]
    assert props["aspect_ratio"] == {"allOf": [{"$ref": "#/components/schemas/aspect_ratio"}], "default": "1:1",
                                     "x-order": 1, "description": "Aspect ratio for the generated image"}
    assert schemas["aspect_ratio"]["enum"][:3] == ["1:1", "16:9", "21:9"] and len(schemas["aspect_ratio"]["enum"]) == 11
    assert schemas["output_format"]["enum"] == ["webp", "jpg", "png"] and props["output_format"]["default"] == "webp"
    assert schemas["megapixels"] == {"enum": ["1", "0.25"], "type": "string", "title": "megapixels",
                                     "description": "An enumeration."}
    assert props["num_outputs"] | {} == {"title": "Num Outputs", "type": "integer", "default": 1, "minimum": 1,
                                         "maximum": 4, "x-order": 2, "description": "Number of outputs to generate"}
    assert schemas["Output"] == {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}
    sdxl = await get(session, f"{emu.base_url}/v1/models/{SDXL}/versions/{SDXL_VERSION}")
    assert sdxl["cog_version"] == "0.8.6" and sdxl["created_at"] == "2023-11-06T23:13:07.906314Z"
    sdxl_schemas = sdxl["openapi_schema"]["components"]["schemas"]
    assert sdxl_schemas["scheduler"]["enum"][-2:] == ["K_EULER", "PNDM"]
    assert sdxl_schemas["Input"]["properties"]["num_inference_steps"]["maximum"] == 500
    music = (await get(session, f"{emu.base_url}/v1/models/{MUSICGEN}"))["latest_version"]["openapi_schema"]
    assert music["components"]["schemas"]["Output"] == {"type": "string", "format": "uri", "title": "Output"}
    llava = (await get(session, f"{emu.base_url}/v1/models/{LLAVA}"))["latest_version"]["openapi_schema"]
    llava_input = llava["components"]["schemas"]["Input"]
    assert llava_input["required"] == ["image", "prompt"] and llava_input["properties"]["image"]["format"] == "uri"
    assert llava["components"]["schemas"]["Output"]["x-cog-array-display"] == "concatenate"


async def test_enum_and_bound_inputs_are_validated_like_the_real_api(
        emu: Emulator, session: aiohttp.ClientSession) -> None:
    bad = await create(session, emu, FLUX, {"prompt": "x", "output_format": "gif", "num_outputs": 5}, status=422)
    fields = {e["field"]: e for e in bad["invalid_fields"]}
    assert fields["input.output_format"]["description"] == (
        'output_format must be one of the following: "webp", "jpg", "png"')
    assert fields["input.num_outputs"]["type"] == "number_lte"
    assert not emu.predictions


# -- images --------------------------------------------------------------------
async def test_flux_png_images_are_valid_distinct_deterministic_and_served_without_a_token(
        emu: Emulator, session: aiohttp.ClientSession) -> None:
    input = {"prompt": "a red fox", "num_outputs": 3, "output_format": "png", "seed": 7}
    pred = await create(session, emu, FLUX, input, wait=True)
    assert pred["status"] == "succeeded" and len(pred["output"]) == 3
    final = await get(session, pred["urls"]["get"])
    assert set(final["metrics"]) == {"predict_time", "total_time", "image_count"}  # time, not tokens
    assert final["metrics"]["image_count"] == 3
    images = []
    for index, url in enumerate(final["output"]):
        assert url.startswith(emu.file_base + "/pbxt/") and url.endswith(f"/out-{index}.png")
        status, headers, data = await download(session, url)
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert int(headers["Content-Length"]) == len(data) and headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        assert headers["access-control-allow-origin"] == "*" and "max-age=3600" in headers["Cache-Control"]
        width, height, pixels = parse_png(data)
        assert (width, height) == (256, 256)  # 1024x1024 at the default image_scale of 0.25
        images.append(pixels)
    assert len(set(images)) == 3  # each output differs
    again = await create(session, emu, FLUX, input, wait=True)
    assert again["output"] != pred["output"]  # new URLs...
    assert [(await download(session, u))[2] for u in again["output"]] == [
        (await download(session, u))[2] for u in pred["output"]]  # ...same bytes
    files = [r for r in emu.requests if r.server == "files"]
    assert len(files) == 9 and emu.file_host_authorizations == 0


async def test_flux_sizes_follow_aspect_ratio_and_megapixels(emu: Emulator, session: aiohttp.ClientSession) -> None:
    for input, size in (({"aspect_ratio": "16:9"}, (336, 192)), ({"aspect_ratio": "9:21"}, (160, 384)),
                        ({"megapixels": "0.25"}, (128, 128))):
        pred = await create(session, emu, FLUX, {"prompt": "p", "output_format": "png", **input}, wait=True)
        (url,) = pred["output"]
        assert parse_png((await download(session, url))[2])[:2] == size
    with Emulator(token=TOKEN, image_scale=1.0) as full:
        pred = await create(session, full, FLUX, {"prompt": "p", "output_format": "png", "aspect_ratio": "3:2"},
                            wait=True)
        assert parse_png((await download(session, pred["output"][0]))[2])[:2] == (1216, 832)


async def test_flux_streams_its_urls_as_output_events(emu: Emulator, session: aiohttp.ClientSession) -> None:
    pred = await create(session, emu, FLUX, {"prompt": "x", "num_outputs": 2})
    assert pred["urls"]["stream"].startswith(emu.stream_base)
    outputs = await sse_outputs(session, pred["urls"]["stream"])
    final = await finished(session, pred)
    assert outputs == final["output"] and all(u.endswith(f"out-{i}.webp") for i, u in enumerate(outputs))


async def test_webp_is_lossless_and_decodes_to_the_same_picture_as_png(
        emu: Emulator, session: aiohttp.ClientSession) -> None:
    got = {}
    for fmt in ("png", "webp"):
        pred = await create(session, emu, FLUX, {"prompt": "same", "seed": 3, "output_format": fmt,
                                                 "aspect_ratio": "4:3"}, wait=True)
        status, headers, data = await download(session, pred["output"][0])
        assert status == 200 and headers["Content-Type"] == f"image/{fmt}"
        got[fmt] = data
    webp = got["webp"]
    assert webp[:4] == b"RIFF" and struct.unpack("<I", webp[4:8])[0] == len(webp) - 8
    assert webp[8:16] == b"WEBPVP8L" and webp[20] == 0x2F
    assert webp_decode(webp) == parse_png(got["png"]) and parse_png(got["png"])[:2] == (288, 224)


async def test_jpg_is_a_baseline_jpeg(emu: Emulator, session: aiohttp.ClientSession) -> None:
    pred = await create(session, emu, FLUX, {"prompt": "j", "output_format": "jpg"}, wait=True)
    assert pred["output"][0].endswith("/out-0.jpg")
    status, headers, data = await download(session, pred["output"][0])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert data[:4] == b"\xff\xd8\xff\xe0" and data[6:11] == b"JFIF\x00" and data[-2:] == b"\xff\xd9"
    sof = data.index(b"\xff\xc0")
    assert struct.unpack(">HH", data[sof + 5:sof + 9]) == (256, 256)
    if shutil.which("djpeg") is None:
        skip_or_fail("djpeg is not installed (apt-get install libjpeg-turbo-progs); the markers above were checked")
    ppm = subprocess.run(["djpeg"], input=data, capture_output=True, check=True, timeout=30).stdout
    assert ppm.startswith(b"P6\n256 256\n255\n") and len(ppm) == len(b"P6\n256 256\n255\n") + 256 * 256 * 3


async def test_a_4_mb_image_on_request(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(image_bytes=4_000_000))
    pred = await create(session, emu, FLUX, {"prompt": "big", "output_format": "png"}, wait=True)
    status, headers, data = await download(session, pred["output"][0])
    assert status == 200 and 3_900_000 < len(data) < 4_100_000
    assert int(headers["Content-Length"]) == len(data)
    width, height, _ = parse_png(data)
    assert abs(width - height) <= 1  # 1:1, of seeded noise
    small = await create(session, emu, FLUX, {"prompt": "big", "output_format": "png"}, wait=True)
    assert len((await download(session, small["output"][0]))[2]) < 100_000  # only the next prediction


async def test_output_files_expire_after_their_lifetime(session: aiohttp.ClientSession) -> None:
    with Emulator(token=TOKEN, file_lifetime=0.5) as emu:
        pred = await create(session, emu, FLUX, {"prompt": "brief"}, wait=True)
        url = pred["output"][0]
        assert (await download(session, url))[0] == 200
        await asyncio.sleep(0.6)
        status, headers, body = await download(session, url)
        assert status == 404 and headers["Content-Type"].startswith("application/xml") and b"NoSuchKey" in body
        emu.inject(Faults(file_lifetime=60))
        kept = await create(session, emu, FLUX, {"prompt": "kept"}, wait=True)
        await asyncio.sleep(0.6)
        assert (await download(session, kept["output"][0]))[0] == 200
        emu.forget_files()
        assert (await download(session, kept["output"][0]))[0] == 404


async def test_the_file_host_needs_no_token_counts_those_sent_and_checks_the_host(
        emu: Emulator, session: aiohttp.ClientSession) -> None:
    url = emu.add_file("note.bin", b"\x00\x01binary", "application/x-emulated")
    status, headers, data = await download(session, url)
    assert (status, headers["Content-Type"], data) == (200, "application/x-emulated", b"\x00\x01binary")
    assert emu.file_host_authorizations == 0
    assert (await download(session, url, headers={"Authorization": "Bearer leaked"}))[0] == 200
    assert emu.file_host_authorizations == 1  # served all the same, but counted: a client must not
    assert (await download(session, url, headers={"Host": "evil.example"}))[0] == 403
    async with session.head(url) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == 8 and await r.read() == b""


async def test_file_download_faults(emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(file_drop_after=100))
    pred = await create(session, emu, FLUX, {"prompt": "x", "output_format": "png"}, wait=True)
    url = pred["output"][0]
    with pytest.raises(aiohttp.ClientPayloadError):
        await download(session, url)  # cut after 100 of the bytes Content-Length promised
    status, _, data = await download(session, url)  # the retry gets it all
    assert status == 200 and parse_png(data)
    emu.inject(Faults(file_error=1))
    assert (await download(session, url))[0] == 503 and (await download(session, url))[0] == 200
    emu.inject(Faults(file_stall_after=10, file_body=b"x" * 1000, file_content_type="image/weird"))
    stalled = await create(session, emu, FLUX, {"prompt": "y"}, wait=True)
    async with session.get(stalled["output"][0]) as r:
        assert r.headers["Content-Type"] == "image/weird" and r.headers["Content-Length"] == "1000"
        assert await r.content.readexactly(10) == b"x" * 10
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.content.readexactly(1), 0.3)
    emu.inject(Faults(tokens=["https://elsewhere.example/a.png"]))
    elsewhere = await create(session, emu, FLUX, {"prompt": "z"}, wait=True)
    assert elsewhere["output"] == ["https://elsewhere.example/a.png"]


# -- a model that does not stream ----------------------------------------------
def test_tqdm_lines_match_recorded_ones() -> None:
    # Lines of stability-ai/sdxl's logs in replicate-python tests/cassettes/predictions-get.yaml.
    assert tqdm_line(0, 50, 0.0) == "  0%|          | 0/50 [00:00<?, ?it/s]"
    assert tqdm_line(2, 50, 2 / 16.47) == "  4%|▍         | 2/50 [00:00<00:02, 16.47it/s]"
    assert tqdm_line(6, 50, 6 / 16.60) == " 12%|█▏        | 6/50 [00:00<00:02, 16.60it/s]"
    assert tqdm_line(50, 50, 50 / 17.19) == "100%|██████████| 50/50 [00:02<00:00, 17.19it/s]"
    assert tqdm_line(3, 16, 3 / 7.86) == " 19%|█▉        | 3/16 [00:00<00:01,  7.86it/s]"  # models-get.yaml


async def test_sdxl_does_not_stream_and_logs_progress_through_its_statuses(
        emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(cold_start=0.3, tokens_per_second=40))
    pred = await create(session, emu, SDXL, {"prompt": "a corgi", "seed": 42069, "num_inference_steps": 10})
    assert pred["status"] == "starting" and set(pred["urls"]) == {"get", "cancel", "web"}
    assert pred["version"] == SDXL_VERSION
    seen: list[str] = []
    final = await finished(session, pred, seen)
    assert seen == ["starting", "processing", "succeeded"]
    lines = final["logs"].splitlines()
    assert lines[:3] == ["Using seed: 42069", "Prompt: a corgi", "txt2img mode"]
    bars = [TQDM.match(line) for line in lines[3:]]
    assert all(bars), lines
    assert [int(b.group(3)) for b in bars if b] == [*range(11), 10]  # the last line twice, as tqdm closes
    assert all(b.group(4) == "10" for b in bars if b)
    assert set(final["metrics"]) == {"predict_time", "total_time"}  # as recorded: time only
    (url,) = final["output"]
    assert url.endswith("/out-0.png") and parse_png((await download(session, url))[2])[:2] == (256, 256)
    async with session.get(f"{emu.stream_base}/v1/streams/{pred['id']}", headers=AUTH) as r:
        assert r.status == 404


async def test_sdxl_shows_progress_while_processing_and_can_be_canceled(
        emu: Emulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Faults(stall_after=3))
    pred = await create(session, emu, SDXL, {"prompt": "slow", "width": 512, "height": 768})
    for _ in range(500):
        body = await get(session, pred["urls"]["get"])
        if " 3/50 " in body["logs"]:
            break
        await asyncio.sleep(0.01)
    assert body["status"] == "processing" and body["output"] is None
    async with session.post(pred["urls"]["cancel"], headers=AUTH) as r:
        assert r.status == 200 and (await r.json())["status"] == "canceled"
    assert emu.wait_for_cancel() == pred["id"]
    await asyncio.sleep(0.05)
    final = await get(session, pred["urls"]["get"])
    assert final["status"] == "canceled" and final["output"] is None and " 4/50 " not in final["logs"]
    assert not emu.files.live()


async def test_file_inputs_of_image_models_are_fetched_too(emu: Emulator, session: aiohttp.ClientSession) -> None:
    dot = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    good = await finished(session, await create(session, emu, SDXL, {"prompt": "p", "image": dot}))
    assert good["status"] == "succeeded" and "img2img mode" in good["logs"]
    bad = await finished(session, await create(session, emu, SDXL, {"prompt": "p", "image": "https://example.com/a.png"}))
    assert bad["status"] == "failed" and "offline" in bad["error"] and bad["output"] is None
    audio = await finished(session, await create(session, emu, MUSICGEN, {"prompt": "p",
                                                                         "input_audio": f"{emu.file_base}/x.wav"}))
    assert audio["status"] == "failed" and "404" in audio["error"]


# -- audio ---------------------------------------------------------------------
async def test_musicgen_returns_one_wav_url(emu: Emulator, session: aiohttp.ClientSession) -> None:
    pred = await create(session, emu, MUSICGEN, {"prompt": "calm piano", "duration": 2}, wait=True)
    assert pred["status"] == "succeeded" and "stream" not in pred["urls"]
    url = pred["output"]
    assert isinstance(url, str) and url.startswith(emu.file_base) and url.endswith("/out.wav")
    status, headers, data = await download(session, url)
    assert status == 200 and headers["Content-Type"] == "audio/wav"
    channels, rate, bits, samples = parse_wav(data)
    assert (channels, rate, bits) == (1, 8000, 16) and len(samples) == 2 * 8000 * 2
    assert max(abs(v) for (v,) in struct.iter_unpack("<h", samples)) > 1000  # not silence
    mp3 = await create(session, emu, MUSICGEN, {"prompt": "x", "duration": 1, "output_format": "mp3"}, wait=True)
    status, headers, data = await download(session, mp3["output"])
    assert headers["Content-Type"] == "audio/mpeg" and data[:2] == b"\xff\xfb" and len(data) % 417 == 0


# -- the Files API -------------------------------------------------------------
async def upload(session: aiohttp.ClientSession, emu: Emulator, data: bytes, filename: str = "photo.png",
                 content_type: str = "image/png", **fields: str) -> tuple[int, Any]:
    form = aiohttp.FormData()  # (a BytesIO: aiohttp warns about large bytes bodies)
    form.add_field("content", io.BytesIO(data), filename=filename, content_type=content_type)
    for name, value in fields.items():
        form.add_field(name, value)
    async with session.post(f"{emu.base_url}/v1/files", data=form, headers=AUTH) as r:
        return r.status, await r.json(content_type=None) if r.status != 413 else await r.text()


async def test_files_api_create_get_list_delete(emu: Emulator, session: aiohttp.ClientSession) -> None:
    data = b"\x89PNG fake bytes \xff\x00"
    status, made = await upload(session, emu, data, metadata='{"customer": 123}')
    assert status == 201
    assert list(made) == ["id", "name", "content_type", "size", "etag", "checksums", "metadata", "created_at",
                          "expires_at", "urls"]  # the recorded key order
    assert made["name"] == "photo.png" and made["content_type"] == "image/png" and made["size"] == len(data)
    assert made["checksums"] == {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
    assert made["etag"] == made["checksums"]["md5"] and made["metadata"] == {"customer": 123}
    assert base64.urlsafe_b64decode(made["id"] + "==").count(b"-") == 4  # a UUID's text, as recorded
    created, expires = (datetime.fromisoformat(made[k].replace("Z", "+00:00")) for k in ("created_at", "expires_at"))
    assert (expires - created).total_seconds() == 24 * 3600 and made["created_at"].endswith("Z")
    assert made["urls"] == {"get": f"{emu.base_url}/v1/files/{made['id']}"}
    assert await get(session, made["urls"]["get"]) == made
    _, second = await upload(session, emu, b"text", filename="a.txt", content_type="text/plain", type="text/x-note")
    assert second["content_type"] == "text/x-note"  # the `type` field wins over the part's type
    listed = await get(session, f"{emu.base_url}/v1/files")
    assert listed["next"] is None and [f["id"] for f in listed["results"]] == [second["id"], made["id"]]
    async with session.delete(made["urls"]["get"], headers=AUTH) as r:
        assert r.status == 204 and await r.read() == b""
    async with session.get(made["urls"]["get"], headers=AUTH) as r:
        assert r.status == 404 and (await r.json(content_type=None)) == {"detail": "Not found.", "status": 404}
    async with session.get(f"{emu.base_url}/v1/files") as r:
        assert r.status == 401


async def test_files_api_refuses_bad_uploads(emu: Emulator, session: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("filename", "x.bin")
    async with session.post(f"{emu.base_url}/v1/files", data=form, headers=AUTH) as r:
        assert r.status in (400, 422)
    status, body = await upload(session, emu, b"x", metadata="{not json")
    assert status == 422 and "metadata" in body["detail"]
    status, body = await upload(session, emu, b"x", filename="n" * 256)
    assert status == 422
    async with session.post(f"{emu.base_url}/v1/files", json={"content": "x"}, headers=AUTH) as r:
        assert r.status == 400


async def test_files_api_takes_more_than_other_routes_but_not_over_100_mib(
        emu: Emulator, session: aiohttp.ClientSession) -> None:
    eleven = bytes(11 * 1024 * 1024)  # over the 10 MiB of a prediction body
    status, made = await upload(session, emu, eleven, filename="big.bin", content_type="application/octet-stream")
    assert status == 201 and made["size"] == len(eleven)
    host, port = emu.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /v1/files HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                 "Content-Type: multipart/form-data; boundary=b\r\n"
                 f"Content-Length: {100 * 1024 * 1024 + 1}\r\n\r\n".encode())
    await writer.drain()
    head = (await asyncio.wait_for(reader.read(4096), 5)).decode()
    writer.close()
    await writer.wait_closed()
    assert head.startswith("HTTP/1.1 413 Request Entity Too Large") and "text/html" in head
    assert "<title>413 Request Entity Too Large</title>" in head


def test_multipart_parser_keeps_binary_parts_exact() -> None:
    payload = b"\r\n--not-the-boundary\r\n\x00\xff" * 3
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"content\"; filename=\"a b.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + payload + b"\r\n--XyZ\r\n"
            b"Content-Disposition: form-data; name=\"filename\"\r\n\r\nname.png\r\n--XyZ--\r\n")
    parts = parse_multipart(body, 'multipart/form-data; boundary="XyZ"')
    assert parts is not None and [(p.name, p.filename, p.content_type) for p in parts] == [
        ("content", "a b.png", "image/png"), ("filename", None, None)]
    assert parts[0].data == payload and parts[1].data == b"name.png"
    assert parse_multipart(body, "application/json") is None
    assert parse_multipart(b"--XyZ\r\nno end", "multipart/form-data; boundary=XyZ") is None


# -- a vision language model ---------------------------------------------------
async def reply_of(session: aiohttp.ClientSession, emu: Emulator, model: str, input: dict[str, Any]) -> str:
    pred = await create(session, emu, model, input)
    text = "".join(await sse_outputs(session, pred["urls"]["stream"]))
    assert (await finished(session, pred))["status"] == "succeeded"
    return text


def facts(data: bytes, kind: str) -> str:
    return f"{len(data)} bytes, type {kind}, sha256 {hashlib.sha256(data).hexdigest()}"


async def test_the_vision_model_states_what_it_received_by_every_route(
        emu: Emulator, session: aiohttp.ClientSession) -> None:
    made = await create(session, emu, FLUX, {"prompt": "input", "output_format": "png"}, wait=True)
    png = (await download(session, made["output"][0]))[2]
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    reply = await reply_of(session, emu, LLAVA, {"image": data_uri, "prompt": "What is this?"})
    assert f"I received an image of {facts(png, 'image/png')}, 256x256 pixels." in reply
    assert "What is this?" in reply
    _, uploaded = await upload(session, emu, b"GIF89a not really", filename="x.gif", content_type="image/gif")
    reply = await reply_of(session, emu, LLAVA, {"image": uploaded["urls"]["get"], "prompt": "and this?"})
    assert facts(b"GIF89a not really", "image/gif") in reply
    reply = await reply_of(session, emu, LLAVA, {"image": made["output"][0], "prompt": "and from the file host?"})
    assert facts(png, "image/png") in reply
    localhost = made["output"][0].replace("127.0.0.1", "localhost")
    assert facts(png, "image/png") in await reply_of(session, emu, LLAVA, {"image": localhost, "prompt": "?"})
    # Language models with an image input of their own say the same.
    claude = await reply_of(session, emu, "anthropic/claude-3.7-sonnet", {"prompt": "hi", "image": data_uri})
    gpt = await reply_of(session, emu, "openai/gpt-4o-mini", {"prompt": "hi", "image_input": [data_uri, data_uri]})
    assert facts(png, "image/png") in claude and gpt.count(facts(png, "image/png")) == 2


async def test_the_vision_model_fails_on_an_image_it_cannot_fetch(emu: Emulator,
                                                                  session: aiohttp.ClientSession) -> None:
    for image, why in (("https://example.com/cat.png", "offline"), (f"{emu.file_base}/pbxt/gone/out-0.png", "404"),
                       ("data:image/png;base64,%%%", "base64"), (f"{emu.base_url}/v1/files/nope", "404")):
        pred = await create(session, emu, LLAVA, {"image": image, "prompt": "?"})
        final = await finished(session, pred)
        assert final["status"] == "failed" and why in final["error"], final["error"]


# -- deployments ---------------------------------------------------------------
async def test_deployments_route_to_their_models(emu: Emulator, session: aiohttp.ClientSession) -> None:
    deployment = await get(session, f"{emu.base_url}/v1/deployments/acme/chat")
    assert deployment["owner"] == "acme" and deployment["name"] == "chat"
    release = deployment["current_release"]
    assert release["model"] == "meta/meta-llama-3-8b-instruct" and release["number"] == 1
    assert set(release["configuration"]) == {"hardware", "min_instances", "max_instances"}
    listed = await get(session, f"{emu.base_url}/v1/deployments")
    assert [d["name"] for d in listed["results"]] == ["pictures", "chat"]
    url = f"{emu.base_url}/v1/deployments/acme/chat/predictions"
    async with session.post(url, json={"input": {"prompt": "Hello"}}, headers={**AUTH, "Prefer": "wait"}) as r:
        assert r.status == 201
        pred = await r.json()
    assert pred["model"] == "meta/meta-llama-3-8b-instruct" and pred["deployment"] == "acme/chat"
    assert pred["version"] == release["version"] and "stream" in pred["urls"]
    assert "meta/meta-llama-3-8b-instruct" in "".join(pred["output"])
    async with session.post(f"{emu.base_url}/v1/deployments/acme/pictures/predictions",
                            json={"input": {"prompt": "p"}}, headers=AUTH) as r:
        picture = await r.json()
    assert picture["model"] == SDXL and "stream" not in picture["urls"]
    assert (await finished(session, picture))["output"][0].endswith("out-0.png")
    for method, path in (("GET", "/v1/deployments/acme/nothing"), ("POST", "/v1/deployments/acme/nothing/predictions")):
        async with session.request(method, emu.base_url + path, json={"input": {}}, headers=AUTH) as r:
            assert r.status == 404 and r.headers["Content-Type"].startswith("application/problem+json")
    async with session.post(url, json={"input": {"prompt": "x", "max_tokens": "many"}}, headers=AUTH) as r:
        assert r.status == 422  # the model's own schema still applies


def test_deployment_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="deployment"):
        Emulator(deployments={"acme/x": "nobody/nothing"})
    with pytest.raises(ValueError, match="deployment"):
        Emulator(deployments={"no-slash": "meta/musicgen"})


def test_cli_serves_deployments_and_says_where_files_are() -> None:
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "replicate_magic.emulator", "--port", "0", "--stream-port", "0",
                             "--deployment", "acme/chat=meta/musicgen"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={"PYTHONPATH": str(root)})
    with proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        base = next(line.split("=", 1)[1].strip() for line in iter(proc.stdout.readline, "")
                    if line.startswith("REPLICATE_BASE_URL="))
        assert ", files on http://127.0.0.1:" in first
        import urllib.request
        request = urllib.request.Request(f"{base}/v1/deployments/acme/chat", headers={"Authorization": "Bearer t"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert json.load(r)["current_release"]["model"] == "meta/musicgen"
        proc.terminate()
        proc.communicate(timeout=10)
    bad = subprocess.run([sys.executable, "-m", "replicate_magic.emulator", "--deployment", "acme/x=none/such"],
                         capture_output=True, text=True, timeout=30, env={"PYTHONPATH": str(root)})
    assert bad.returncode == 2 and "OWNER/NAME=MODEL" in bad.stderr


async def test_text_models_and_their_streams_are_unchanged(emu: Emulator, session: aiohttp.ClientSession) -> None:
    began = time.monotonic()
    pred = await create(session, emu, "meta/meta-llama-3-70b-instruct", {"prompt": "Hi"}, wait=True)
    assert pred["status"] == "succeeded" and isinstance(pred["output"], list) and "stream" in pred["urls"]
    final = await get(session, pred["urls"]["get"])
    assert {"input_token_count", "output_token_count", "tokens_per_second"} <= set(final["metrics"])
    assert time.monotonic() - began < 5
