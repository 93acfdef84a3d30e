"""Output files (issue 11): downloaded once without the token, shown, kept, saved, replayed.

In-process IPython against the emulator over real sockets; the emulator's image, audio and
non-streaming models publish real files on a file host of their own (another port, as
replicate.delivery is another host).
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from replicate_magic.emulator import Faults
from replicate_magic.files import FileOutput, fetchable
from replicate_magic.outputs import file_urls, image_size, parse_data_uri, progress_of, sniff

FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"
MUSICGEN = "meta/musicgen"


def served(emu, url: str) -> bytes:
    """The bytes the file host holds for ``url``."""
    stored = emu.files.get(urlsplit(url).path)
    assert stored is not None, url
    return stored.data


def output_urls(emu) -> list[str]:
    (prediction,) = emu.predictions.values()
    return list(prediction.output)


def run(ip, line: str, prompt: str = "a red fox in the snow"):
    return ip.run_cell_magic("replicate", line, prompt)


# -- what the bytes say (pure) --------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_types_come_from_the_bytes_and_sizes_from_the_header():
    assert sniff(_png(3, 2)) == "image/png"
    assert image_size(_png(100_000, 100_000), "image/png") == (100_000, 100_000)
    assert sniff(b"<html><script>alert(1)</script>") == "application/octet-stream"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "audio/wav"
    assert parse_data_uri("data:image/png;base64,iVBORw0KGgo=") == ("image/png", b"\x89PNG\r\n\x1a\n")
    assert parse_data_uri("data:image/png;base64,not base64!") is None
    assert progress_of(" 40%|████      | 20/50 [00:01<00:01, 16.47it/s]\nnext") == (20, 50)


def test_only_file_outputs_are_files():
    urls = ["https://replicate.delivery/pbxt/a/out-0.png", "https://replicate.delivery/pbxt/b/out-1.png"]
    assert file_urls(urls, "files") == urls
    assert file_urls(urls, "text") is None  # a text model's output is text, whatever it says
    assert file_urls(["Hello", " world"], "other") is None
    assert file_urls("https://replicate.delivery/x/out.wav", "other") == ["https://replicate.delivery/x/out.wav"]


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://replicate.delivery/pbxt/x/out-0.png", True),
    ("https://pbxt.replicate.delivery/x/out-0.png", True),
    ("https://evil.example/out-0.png", False),
    ("https://user:pw@replicate.delivery/x.png", False),
    ("http://replicate.delivery/x.png", False),  # plain http leaves the machine
    ("http://127.0.0.1:9/x.png", False),  # loopback only when the API itself is local
    ("file:///etc/passwd", False),
])
def test_downloads_go_only_to_hosts_of_replicates_files(url, allowed):
    assert fetchable(url, "https://api.replicate.com") is allowed


def test_an_api_on_this_machine_may_have_its_files_on_this_machine():
    assert fetchable("http://127.0.0.1:9/x.png", "http://127.0.0.1:8/")
    assert not fetchable("http://10.0.0.1/x.png", "http://127.0.0.1:8/")


# -- outputs in the magic -------------------------------------------------------------------------


def test_images_come_as_files_in_order_with_the_served_bytes_and_never_the_token(ip, env_emu, capsys):
    run(ip, f"-m {FLUX} -i num_outputs=2 -o images")
    images = ip.user_ns["images"]
    urls = output_urls(env_emu)
    assert [f.url for f in images] == urls
    assert [f.read() for f in images] == [served(env_emu, u) for u in urls]
    assert [f.content_type for f in images] == ["image/webp", "image/webp"]
    assert [f.name for f in images] == ["out-0.webp", "out-1.webp"]
    assert env_emu.file_host_authorizations == 0  # the file host never saw the token
    out = capsys.readouterr().out
    assert "[out-0.webp · " in out and "[out-1.webp · " in out  # a terminal lists them
    assert "2 files" in out and "tokens" not in out  # time, not tokens
    assert "http" not in out.split("[out-0.webp")[0]  # the URLs are not glued into a reply


def test_each_file_is_downloaded_once_when_shown_saved_and_read(ip, env_emu, tmp_path):
    run(ip, f"-m {SDXL} -o one --save {tmp_path}")
    (image,) = ip.user_ns["one"]  # sdxl's output is an array of URIs: a list, even of one
    stored = env_emu.files.get(urlsplit(image.url).path)
    saved = sorted(tmp_path.iterdir())
    prediction_id = next(iter(env_emu.predictions))
    assert [p.name for p in saved] == [f"{prediction_id}-out-0.png"]
    assert saved[0].read_bytes() == image.read() == stored.data
    image.read()
    image.save(tmp_path / "again.png")
    assert stored.downloads == 1


def test_a_single_file_output_is_one_object(ip, env_emu):
    run(ip, f"-m {MUSICGEN} -i duration=1 -o song", "a short jingle")
    song = ip.user_ns["song"]
    assert isinstance(song, FileOutput)  # musicgen's Output is one URI
    assert song.content_type == "audio/wav" and song.read()[:4] == b"RIFF"
    bundle = song._repr_mimebundle_()
    assert '<audio controls src="data:audio/wav;base64,' in bundle["text/html"]


def test_a_model_that_does_not_stream_shows_its_progress(ip, env_emu, capsys):
    env_emu.inject(Faults(tokens_per_second=40))
    run(ip, f"-m {SDXL} -i num_inference_steps=20")
    err = capsys.readouterr().err
    assert "[processing · " in err and "/20 steps (" in err, err


def test_a_download_that_breaks_is_tried_again(ip, env_emu):
    env_emu.inject(Faults(file_drop_after=100, file_error=1))
    run(ip, f"-m {FLUX} -o images")
    (image,) = ip.user_ns["images"]
    assert image.problem is None
    assert image.read() == served(env_emu, image.url)


def test_a_download_that_stalls_is_one_line_and_the_turn_stands(ip, env_emu, capsys):
    env_emu.inject(Faults(file_stall_after=10, drop_every_connection=True))
    run(ip, f"-m {FLUX} --timeout 0.5 -o images")
    (image,) = ip.user_ns["images"]
    assert image.problem is not None and "after 3 tries" in image.problem and "out-0.webp" in image.problem
    assert "no data for 0.5 s" in image.problem
    assert f"[out-0.webp: {image.problem}]" in capsys.readouterr().out


def test_a_file_on_another_host_is_shown_not_fetched(ip, env_emu):
    env_emu.inject(Faults(tokens=["https://evil.example/out-0.png"]))
    run(ip, f"-m {FLUX} -o images")
    (image,) = ip.user_ns["images"]
    assert image.problem == "not fetched: https://evil.example/out-0.png is not a host of Replicate's files"
    html = image._repr_mimebundle_()["text/html"]
    assert "<img" not in html and 'href="https://evil.example/out-0.png"' in html


def test_what_a_file_is_comes_from_its_bytes_not_the_servers_header(ip, env_emu):
    env_emu.inject(Faults(file_body=b"<script>alert(1)</script>", file_content_type="image/png"))
    run(ip, f"-m {SDXL} -o images")
    (page,) = ip.user_ns["images"]
    assert page.content_type == "application/octet-stream"
    html = page._repr_mimebundle_()["text/html"]
    assert "<img" not in html and "<script>" not in html and "&lt;" not in html  # not even as text


def test_an_image_too_large_to_decode_is_not_shown(ip, env_emu):
    env_emu.inject(Faults(file_body=_png(100_000, 100_000)))
    run(ip, f"-m {SDXL} -o images")
    (bomb,) = ip.user_ns["images"]
    assert bomb.pixels == (100_000, 100_000)
    html = bomb._repr_mimebundle_()["text/html"]
    assert "<img" not in html and "100000 x 100000 pixels: too large to show" in html


def test_a_file_over_the_embed_limit_goes_to_disk_and_is_linked(ip, env_emu):
    ip.run_line_magic("config", "ReplicateMagics.embed_limit = 0.001")  # 1 KB
    try:
        run(ip, f"-m {FLUX} -o images")
    finally:
        ip.run_line_magic("config", "ReplicateMagics.embed_limit = 20")  # the shell outlives the test
    (image,) = ip.user_ns["images"]
    assert not image.in_memory and image.path is not None and image.path.is_file()
    assert image.read() == served(env_emu, image.url)
    html = image._repr_mimebundle_()["text/html"]
    assert "<img" not in html and f"saved to {image.path}" in html


def test_a_replay_shows_the_files_after_the_host_forgot_them(ip, env_emu, capsys):
    run(ip, f"-m {FLUX} -i seed=7 --cache -o first")
    env_emu.forget_files()
    before = len(env_emu.predictions)
    run(ip, f"-m {FLUX} -i seed=7 --cache -o again")
    assert len(env_emu.predictions) == before  # nothing asked, nothing billed
    assert [f.read() for f in ip.user_ns["again"]] == [f.read() for f in ip.user_ns["first"]]
    assert "replayed from the log" in capsys.readouterr().out


def test_a_file_turn_is_not_a_chat_turn(ip, env_emu):
    run(ip, "", "Hello")  # a text turn in the default conversation
    run(ip, f"-m {FLUX}", "a red fox")
    (prediction,) = [p for p in env_emu.predictions.values() if p.input.get("prompt") == "a red fox"]
    assert prediction.input["prompt"] == "a red fox"  # no history glued into an image prompt
    history = __import__("replicate_magic").history()
    assert [m["content"] for m in history if m["role"] == "user"] == ["Hello"]


# -- the provider ----------------------------------------------------------------------------------


def test_the_provider_yields_one_url_per_file(env_emu):
    from replicate_magic import Replicate

    async def chunks() -> list[str]:
        stream = Replicate.create_async_generator(FLUX, [{"role": "user", "content": "a fox"}],
                                                  extra_data={"num_outputs": 3})
        return [chunk async for chunk in stream]

    got = asyncio.run(chunks())
    assert got == output_urls(env_emu) and len(got) == 3


def test_saving_into_a_directory_that_cannot_be_made_is_one_line(ip, env_emu, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    run(ip, f"-m {FLUX} -o images --save {blocker / 'sub'}")
    (image,) = ip.user_ns["images"]
    assert image.problem is None and image.read() == served(env_emu, image.url)  # the file stands
    assert image.note is not None and image.note.startswith(f"not saved: cannot write to {blocker / 'sub'} (")
    assert not Path(blocker / "sub").exists()
