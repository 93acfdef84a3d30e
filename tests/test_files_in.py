"""Files and images sent *in*: ``-i KEY=@PATH``, ``-i KEY=@{name}`` and ``--image``.

Against the emulator over real sockets: its vision model (yorickvp/llava-13b) states the
size, type and sha256 of each image it fetched, so a reply proves the bytes arrived exact;
its Files API keeps what was uploaded (``emu.uploads``). The in-process shell, the CLI and a
real kernel each send a file; the local log is read back to see what it keeps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import shlex
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

import replicate_magic
from replicate_magic import __main__ as cli
from replicate_magic.attachments import (
    DATA_URI_LIMIT,
    MAX_FILE_SIZE,
    Attachment,
    FileSource,
    as_references,
    content_type_of,
    image_key,
    reference_hash,
    sniff,
)
from replicate_magic.client import ReplicateClient
from replicate_magic.emulator import Emulator, Faults
from replicate_magic.errors import InvalidRequestError, ResponseError
from replicate_magic.inputs import Settings, build_input
from replicate_magic.options import parse_cell_options
from replicate_magic.uploads import forget_uploads, sendable

from .conftest import TOKEN
from .kernel_harness import KERNEL_NAMES, KernelSession, kernel_env, plain

LLAVA = "yorickvp/llava-13b"  # one image input, "image" (format: uri)
GPT = "openai/gpt-4o-mini"  # image_input: an array of URIs
CLAUDE = "anthropic/claude-3.7-sonnet"  # image: one URI
TEXT_ONLY = "meta/meta-llama-3-70b-instruct"


@pytest.fixture(autouse=True)
def no_uploads_known():
    """Each test starts as a new kernel would: no upload made yet (emulators reuse ports)."""
    forget_uploads()
    yield
    forget_uploads()


def png(width: int = 4, height: int = 3, shade: int = 0) -> bytes:
    """A valid 8-bit RGB PNG, different for each ``shade``."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + bytes((x * 40 + shade) % 256 for x in range(width * 3)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def big_png(size: int = DATA_URI_LIMIT + 200_000) -> bytes:
    """PNG magic and noise: over the data URI limit, typed image/png by its first bytes."""
    return png()[:8] + os.urandom(size - 8)


def facts(data: bytes, kind: str = "image/png") -> str:
    """What the emulated vision model says of an image it received."""
    return f"{len(data)} bytes, type {kind}, sha256 {hashlib.sha256(data).hexdigest()}"


def data_uri(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def ask(ip: Any, line: str, cell: str = "What is in this picture?") -> None:
    ip.run_cell_magic("replicate", line, cell)


def at(path: Path) -> str:
    """``@path`` quoted for the magic line."""
    return shlex.quote(f"@{path}")


def sent_inputs(emu: Emulator) -> list[dict[str, Any]]:
    """The input of every prediction created, in order (whole: the recorded bodies are cut)."""
    return [p.input for p in emu.predictions.values()]


def upload_requests(emu: Emulator) -> list[Any]:
    return [r for r in emu.requests if r.method == "POST" and r.path == "/v1/files"]


# -- sending a file -------------------------------------------------------------------------------


def test_a_file_reaches_the_vision_model_byte_exact_as_a_data_uri(ip, env_emu, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(data := png())
    ask(ip, f"-m {LLAVA} --no-history -i image={at(photo)}")
    assert f"I received an image of {facts(data)}, 4x3 pixels." in capsys.readouterr().out
    (sent,) = sent_inputs(env_emu)
    assert sent["image"] == data_uri(data)
    assert upload_requests(env_emu) == []  # small: no upload


def test_a_file_over_the_limit_is_uploaded_and_its_url_is_what_the_model_gets(ip, env_emu, tmp_path, capsys):
    photo = tmp_path / "big.png"
    photo.write_bytes(data := big_png())
    ask(ip, f"-m {LLAVA} --no-history -i image={at(photo)}")
    assert facts(data) in capsys.readouterr().out
    (upload,) = upload_requests(env_emu)
    assert upload.headers["Authorization"] == f"Bearer {TOKEN}"  # the Files API is the API's own host
    assert upload.headers["Content-Type"].startswith("multipart/form-data")
    (stored,) = env_emu.uploads.live()
    assert (stored.data, stored.name, stored.content_type) == (data, "big.png", "image/png")
    (sent,) = sent_inputs(env_emu)
    assert sent["image"] == f"{env_emu.base_url}/v1/files/{stored.key}"  # urls.get of the upload


def test_the_same_file_twice_is_uploaded_once(ip, env_emu, tmp_path, capsys):
    photo = tmp_path / "big.png"
    photo.write_bytes(big_png())
    for _ in range(2):
        ask(ip, f"-m {LLAVA} --no-history -i image={at(photo)}")
    first, second = sent_inputs(env_emu)
    assert len(upload_requests(env_emu)) == 1
    assert first["image"] == second["image"]


def test_an_upload_close_to_its_expiry_is_made_again(ip, tmp_path, monkeypatch, capsys):
    with Emulator(token=TOKEN, upload_lifetime=600.0) as short:  # expires within the hour's margin
        monkeypatch.setenv("REPLICATE_BASE_URL", short.base_url)
        photo = tmp_path / "big.png"
        photo.write_bytes(data := big_png())
        for _ in range(2):
            ask(ip, f"-m {LLAVA} --no-history -i image={at(photo)}")
        assert len(upload_requests(short)) == 2
        assert capsys.readouterr().out.count(facts(data)) == 2


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_a_bytes_variable_is_sent_as_its_bytes(ip, env_emu, capsys, wrap):
    data = png(shade=7)
    ip.user_ns["img"] = wrap(data)
    ask(ip, f"-m {LLAVA} --no-history -i image=@{{img}}")
    assert facts(data) in capsys.readouterr().out
    assert sent_inputs(env_emu)[0]["image"] == data_uri(data)


def test_a_path_variable_is_read_when_the_cell_runs(ip, env_emu, tmp_path, capsys):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(png(shade=1))
    second.write_bytes(png(shade=2))
    ip.user_ns["where"] = str(first)
    ask(ip, f"-m {LLAVA} --no-history -i image=@{{where}}")
    ip.user_ns["where"] = second  # a pathlib.Path, changed between cells: the value at run time counts
    ask(ip, f"-m {LLAVA} --no-history -i image=@{{where}}")
    out = capsys.readouterr().out
    assert facts(png(shade=1)) in out and facts(png(shade=2)) in out


def test_a_pil_image_is_sent_as_png(ip, env_emu, capsys):
    import PIL.Image as image_module  # pillow is a test dependency: its absence is a failure
    picture = image_module.new("RGB", (8, 5), (200, 30, 10))
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG")
    ip.user_ns["pic"] = picture
    ask(ip, f"-m {LLAVA} --no-history --image @{{pic}}")
    assert f"{facts(encoded.getvalue())}, 8x5 pixels" in capsys.readouterr().out
    assert replicate_magic.log(1)[0]["input"]["image"]["file"] == "pic.png"


def upload_directly(emu: Emulator, data: bytes) -> str:
    """``urls.get`` of a file uploaded without this package (aiohttp, on a loop of its own)."""
    import aiohttp

    async def upload() -> str:
        form = aiohttp.FormData()
        form.add_field("content", io.BytesIO(data), filename="x.png", content_type="image/png")
        async with aiohttp.ClientSession() as session, session.post(
                f"{emu.base_url}/v1/files", data=form, headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
            return (await answer.json())["urls"]["get"]

    return asyncio.run(upload())


def test_a_url_passes_through_as_text(ip, env_emu, capsys):
    url = upload_directly(env_emu, data := png(shade=3))
    ask(ip, f"-m {LLAVA} --no-history -i image={url}")
    assert sent_inputs(env_emu)[-1]["image"] == url
    assert facts(data) in capsys.readouterr().out


# -- --image --------------------------------------------------------------------------------------


def test_image_goes_to_the_vision_models_own_image_input(ip, env_emu, tmp_path, capsys):
    photo = tmp_path / "cat.png"
    photo.write_bytes(data := png(shade=9))
    ask(ip, f"-m {LLAVA} --no-history --image {shlex.quote(str(photo))}")
    assert facts(data) in capsys.readouterr().out
    assert sent_inputs(env_emu)[0]["image"] == data_uri(data)


def test_several_images_go_to_an_array_input(ip, env_emu, tmp_path, capsys):
    one, two = tmp_path / "1.png", tmp_path / "2.png"
    one.write_bytes(png(shade=1))
    two.write_bytes(png(shade=2))
    ask(ip, f"-m {GPT} --no-history --image {one} --image {two}")
    out = capsys.readouterr().out
    assert facts(png(shade=1)) in out and facts(png(shade=2)) in out
    assert sent_inputs(env_emu)[0]["image_input"] == [data_uri(png(shade=1)), data_uri(png(shade=2))]


def test_data_uris_share_one_budget_and_the_rest_is_uploaded(ip, env_emu, tmp_path, capsys):
    one, two = tmp_path / "1.png", tmp_path / "2.png"
    one.write_bytes(first := big_png(600_000))  # 800 kB as a data URI: the next one no longer fits
    two.write_bytes(second := big_png(600_000))
    ask(ip, f"-m {GPT} --no-history --image {one} --image {two}")
    (stored,) = env_emu.uploads.live()
    assert sent_inputs(env_emu)[0]["image_input"] == [data_uri(first), f"{env_emu.base_url}/v1/files/{stored.key}"]
    assert stored.data == second
    out = capsys.readouterr().out
    assert facts(first) in out and facts(second) in out


def test_two_images_for_a_one_image_model_is_one_line_and_sends_nothing(ip, env_emu, tmp_path):
    one, two = tmp_path / "1.png", tmp_path / "2.png"
    one.write_bytes(png(shade=1))
    two.write_bytes(png(shade=2))
    with pytest.raises(InvalidRequestError, match=r"takes one image \(its input image\), and 2 were given") as caught:
        ask(ip, f"-m {CLAUDE} --no-history --image {one} --image {two}")
    assert CLAUDE in str(caught.value) and "\n" not in str(caught.value)
    assert not env_emu.predictions and upload_requests(env_emu) == []


def test_image_for_a_text_only_model_is_one_line_and_creates_nothing(ip, env_emu, tmp_path):
    photo = tmp_path / "cat.png"
    photo.write_bytes(big_png())  # an upload would be wasted too
    with pytest.raises(InvalidRequestError) as caught:
        ask(ip, f"-m {TEXT_ONLY} --no-history --image {photo}")
    message = str(caught.value)
    assert message.startswith(f"{TEXT_ONLY} takes no image") and "Next:" in message and "\n" not in message
    assert not env_emu.predictions and upload_requests(env_emu) == []


# -- refusals -------------------------------------------------------------------------------------


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "pipe")  # opening it would wait for a writer forever
    return tmp_path / "pipe"


def _too_big(tmp_path: Path) -> str:
    path = tmp_path / "huge.bin"
    with open(path, "wb") as file:
        file.truncate(MAX_FILE_SIZE + 1)  # sparse: nothing is written, and nothing must be read
    return f"-i image=@{path}"


@pytest.mark.parametrize("make, message", [
    (lambda tmp: f"-i image=@{tmp / 'nope.png'}", r"-i image=@.*nope\.png: no file .*nope\.png \(looked in "),
    (lambda tmp: f"-i image=@{tmp}", r"is a directory, not a file"),
    (_too_big, r"huge\.bin is 100,000,001 bytes, over the 100 MB Replicate takes for a file"),
    (lambda tmp: "-i image=@{missing}", r"-i image=@\{missing\}: there is no variable missing"),
    (lambda tmp: "--image @{numbers}", r"--image @\{numbers\}: numbers is a list; .*bytes, a path"),
    (lambda tmp: f"--image {tmp / 'gone.png'}", r"--image @.*gone\.png: no file"),
    (lambda tmp: f"--image {_fifo(tmp)}", r"pipe is not a regular file"),
])
def test_a_bad_file_is_one_line_and_nothing_is_sent(ip, env_emu, tmp_path, make, message):
    ip.user_ns["numbers"] = [1, 2, 3]
    with pytest.raises(InvalidRequestError, match=message) as caught:
        ask(ip, f"-m {LLAVA} --no-history {make(tmp_path)}")
    assert "nothing was sent" in str(caught.value) and "\n" not in str(caught.value)
    assert env_emu.requests == []  # not even the schema: files are read before the turn starts


def test_an_unreadable_file_is_one_line(ip, env_emu, tmp_path):
    if os.geteuid() == 0:  # root reads every file whatever its mode; this one fails for anyone
        secret, why = "/proc/self/mem", r"/proc/self/mem cannot be read \(Input/output error\)"
    else:
        path = tmp_path / "secret.png"
        path.write_bytes(png())
        path.chmod(0)
        secret, why = str(path), r"secret\.png cannot be read \(permission denied\)"
    with pytest.raises(InvalidRequestError, match=why):
        ask(ip, f"-m {LLAVA} --no-history -i image=@{secret}")
    assert env_emu.requests == []


def test_an_upload_that_fails_is_one_line_without_the_token_and_creates_nothing(ip, env_emu, tmp_path, capsys):
    small = tmp_path / "small.png"
    small.write_bytes(png())
    ask(ip, f"-m {LLAVA} --no-history -i image={at(small)}")  # the schema is known now: the upload comes next
    photo = tmp_path / "big.png"
    photo.write_bytes(big_png())
    env_emu.inject(Faults(html_error=1))
    with pytest.raises(ResponseError) as caught:
        ask(ip, f"-m {LLAVA} --no-history -i image={at(photo)}")
    message = str(caught.value)
    assert message.startswith("Could not upload big.png (1.2 MB); nothing was sent: Replicate answered HTTP 502")
    assert "\n" not in message and TOKEN not in message
    assert len(env_emu.predictions) == 1 and len(upload_requests(env_emu)) == 1  # tried once: a POST is not retried


def test_a_file_for_an_input_the_model_does_not_declare_is_not_sent_and_is_named(ip, env_emu, tmp_path, capsys):
    photo = tmp_path / "big.png"
    photo.write_bytes(big_png())
    ask(ip, f"-m {TEXT_ONLY} --no-history -i photo={at(photo)} -i seed=3", "Hi")
    (sent,) = sent_inputs(env_emu)
    assert "photo" not in sent and sent["seed"] == 3  # other undeclared inputs pass, as before
    assert upload_requests(env_emu) == []
    assert "not taken by this model: photo (a file)" in capsys.readouterr().out


# -- the local log and replay ---------------------------------------------------------------------


def _logged_texts(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return "\n".join(row[0] for row in db.execute("SELECT input FROM exchanges"))


def test_the_log_keeps_a_short_reference_and_cache_replays_with_no_request(ip, env_emu, tmp_path, own_log, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(data := png(40, 30))
    ask(ip, f"-m {LLAVA} --no-history --cache -i image={at(photo)}")
    (row,) = replicate_magic.log()
    assert row["input"]["image"] == {"file": "photo.png", "sha256": hashlib.sha256(data).hexdigest(),
                                     "size": len(data), "type": "image/png"}
    assert "base64" not in _logged_texts(own_log)
    first = capsys.readouterr().out
    asked = len(env_emu.requests)
    ask(ip, f"-m {LLAVA} --no-history --cache -i image={at(photo)}")
    again = capsys.readouterr().out
    assert len(env_emu.requests) == asked  # no request at all
    assert "replayed from the log" in again and facts(data) in first and facts(data) in again


def test_a_new_upload_url_does_not_defeat_replay(ip, env_emu, tmp_path, own_log, capsys):
    photo = tmp_path / "big.png"
    photo.write_bytes(data := big_png())
    ask(ip, f"-m {LLAVA} --no-history --cache -i image={at(photo)}")
    forget_uploads()  # a new kernel: the next ask uploads again, to a new URL
    ask(ip, f"-m {LLAVA} --no-history --refresh -i image={at(photo)}")
    first, second = sent_inputs(env_emu)
    assert first["image"] != second["image"] and len(upload_requests(env_emu)) == 2
    logged = [row["input"] for row in replicate_magic.log()]
    assert logged[0] == logged[1] and reference_hash(logged[0]["image"]) == hashlib.sha256(data).hexdigest()
    assert env_emu.base_url not in _logged_texts(own_log)  # the URLs are not what is logged
    forget_uploads()
    asked = len(env_emu.requests)
    ask(ip, f"-m {LLAVA} --no-history --cache -i image={at(photo)}")
    assert len(env_emu.requests) == asked and "replayed from the log" in capsys.readouterr().out


# -- the CLI and a real kernel --------------------------------------------------------------------


def test_the_cli_sends_a_file_and_refuses_variables(tmp_path, capsys, monkeypatch):
    for name in ("REPLICATE_API_TOKEN", "REPLICATE_BASE_URL"):
        monkeypatch.setenv(name, "unused")  # so that the CLI's own changes are undone after the test
    photo = tmp_path / "photo.png"
    photo.write_bytes(data := png(shade=5))
    assert cli.main(["--emulator", "-m", LLAVA, "--image", str(photo), "What", "is", "this?"]) == 0
    assert facts(data) in capsys.readouterr().out
    assert cli.main(["--emulator", "-m", LLAVA, "-i", "image=@{img}", "What?"]) == 1
    assert "-i image=@{img}: variables exist only in a notebook" in capsys.readouterr().err


@pytest.mark.parametrize("kernel_name", KERNEL_NAMES)
def test_a_file_reaches_the_model_from_a_real_kernel(emu, tmp_path, kernel_name):
    from jupyter_client.kernelspec import find_kernel_specs

    if kernel_name not in find_kernel_specs():
        pytest.fail(f"kernelspec {kernel_name!r} is not installed: run the tests with bin/test")
    photo = tmp_path / "photo.png"
    photo.write_bytes(data := png(16, 9))
    env = kernel_env(tmp_path, REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=emu.base_url)
    with KernelSession(env, cwd=str(tmp_path), kernel_name=kernel_name) as kernel:
        kernel.ok("%load_ext replicate_magic")
        cell = kernel.ok(f"%%replicate -m {LLAVA} --no-history -i image=@photo.png\nWhat is this?")
        replies = [plain(m) for m in cell.of_type("display_data", "update_display_data")]
        assert any(f"I received an image of {facts(data)}, 16x9 pixels." in text for text in replies)
        assert TOKEN not in kernel.iopub_text()
    assert [p.input["image"] for p in emu.predictions.values()] == [data_uri(data)]


# -- the parts, one by one ------------------------------------------------------------------------


@pytest.mark.parametrize("head, kind", [
    (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff\xe0", "image/jpeg"), (b"GIF89a", "image/gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
    (b"ID3\x04", "audio/mpeg"), (b"\xff\xfb\x90\x00", "audio/mpeg"), (b"OggS\x00", "audio/ogg"),
    (b"fLaC\x00", "audio/flac"), (b"\x00\x00\x00\x18ftypisom", "video/mp4"), (b"\x00\x00\x00\x18ftypM4A ", "audio/mp4"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm"), (b"%PDF-1.7", "application/pdf"),
])
def test_the_type_comes_from_the_bytes_first(head, kind):
    assert sniff(head + bytes(32)) == kind
    assert content_type_of(head + bytes(32), "misnamed.txt") == kind


def test_then_from_the_name_then_octet_stream():
    assert sniff(b"plain words") is None
    assert content_type_of(b"plain words", "notes.txt") == "text/plain"
    assert content_type_of(b"plain words", "notes.csv") == "text/csv"
    assert content_type_of(b"\x00\x01", "blob") == "application/octet-stream"


def test_the_line_parses_files_as_sources_read_later():
    options = parse_cell_options("-i image=@photo.png -i v=@{img} -i handle='\"@me\"' -i n=3 --image a.png --image @{p}")
    assert options.inputs == {"image": FileSource(path="photo.png"), "v": FileSource(variable="img"),
                              "handle": "@me", "n": 3}
    assert options.images == (FileSource(path="a.png"), FileSource(variable="p"))
    for bad in ("-i image=@", "-i image=@{1x}", "--image @"):
        with pytest.raises(UsageError, match=r"allowed: @PATH|not a variable name"):
            parse_cell_options(bad)


def test_the_image_input_is_found_by_the_models_own_names():
    uri = {"type": "string", "format": "uri"}
    assert image_key({"prompt": {"type": "string"}, "image": uri}) == "image"
    assert image_key({"image_input": {"type": "array", "items": uri}, "max_image_resolution": {"type": "number"}}) \
        == "image_input"
    assert image_key({"input_image": uri}) == "input_image"
    assert image_key({"reference_image_1": uri, "mask_image": uri}) == "reference_image_1"  # named like one, a URI
    assert image_key({"prompt": {"type": "string"}, "max_image_resolution": {"type": "number"}}) is None


def test_references_follow_the_schema():
    photo = Attachment.of(png(), "photo.png")
    props = {"prompt": {"type": "string"}, "notes": {"type": "string"},
             "frames": {"type": "array", "items": {"type": "string", "format": "uri"}}}
    placed, dropped = as_references({"notes": photo, "frames": photo, "extra": photo, "seed": 1}, props)
    assert placed == {"notes": photo.reference(), "frames": [photo.reference()], "seed": 1}  # a plain string takes it
    assert dropped == ["extra (a file)"]
    assert as_references({"extra": photo}, None) == ({"extra": photo.reference()}, [])  # no schema: as asked
    inputs, ignored = build_input([{"role": "user", "content": "hi"}], Settings(extra={"notes": photo}), props)
    assert inputs["notes"] == photo.reference() and ignored == []
    assert json.dumps(inputs)  # the keyed form is plain JSON


async def test_only_references_to_this_requests_files_are_replaced(emu):
    photo = Attachment.of(png(), "photo.png")
    someone_elses = {**photo.reference(), "sha256": "0" * 64}
    client = await ReplicateClient.connect(TOKEN, base_url=emu.base_url)
    inputs = {"image": photo.reference(), "other": someone_elses, "list": [photo.reference(), "x"]}
    sent = await sendable(client, inputs, [photo])
    assert sent == {"image": data_uri(png()), "other": someone_elses, "list": [data_uri(png()), "x"]}
    assert await sendable(client, inputs, []) is inputs
    assert emu.requests == []  # small files need no request
