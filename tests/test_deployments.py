"""``-m deployments/OWNER/NAME``: a prediction on one of the user's deployments.

Against the emulator over real sockets: the create goes through the deployments route
(no version: the deployment runs its current release), the inputs follow the schema of the
model version that release runs, and a bad name, an unknown deployment or one without a
release is one line with nothing created. The magic, the CLI, the panel, the provider and a
real kernel all take the name.
"""

from __future__ import annotations

import asyncio

import pytest
from IPython.core.error import UsageError

import replicate_magic
from replicate_magic import Replicate
from replicate_magic import __main__ as cli
from replicate_magic.client import ReplicateClient
from replicate_magic.emulator import Emulator
from replicate_magic.errors import InvalidRequestError, ResponseError
from replicate_magic.inputs import ModelRef, parse_model
from replicate_magic.pricing import Cost, estimate, format_cost
from replicate_magic.schemas import default_schemas

from .conftest import TOKEN
from .kernel_harness import KERNEL_NAMES, KernelSession, kernel_env, plain

DEPLOYMENTS = {
    "acme/chat": "meta/meta-llama-3-8b-instruct",  # takes max_tokens and a prompt
    "acme/gpt": "openai/gpt-4o-mini",  # takes messages and max_completion_tokens
    "acme/empty": None,  # no current release
}
CHAT = "deployments/acme/chat"


@pytest.fixture
def emu():
    """This module's emulator (it replaces conftest's for ``env_emu`` and ``ip``): with deployments."""
    with Emulator(token=TOKEN, tokens_per_second=0.0, deployments=DEPLOYMENTS) as emulator:
        yield emulator


def ask(ip, line: str, cell: str):
    return ip.run_cell_magic("replicate", line, cell)


def creates(emu) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")]


def gets(emu) -> list[str]:
    return [r.path for r in emu.requests if r.method == "GET" and r.server == "api"]


# -- names -----------------------------------------------------------------------------------------


def test_a_deployment_name_parses_and_prints_as_typed():
    ref = parse_model(" deployments/acme/chat ")
    assert ref == ModelRef("acme", "chat", deployment=True)
    assert (str(ref), ref.slug, ref.version) == (CHAT, "acme/chat", None)
    assert not parse_model("acme/chat").deployment


@pytest.mark.parametrize("bad", ["deployments/x", "deployments/a/b/c", "deployments/", "deployments//b",
                                 "deployments/a/b:0123abc", "deployments/a b/c"])
def test_a_malformed_deployment_name_is_refused(bad):
    with pytest.raises(InvalidRequestError, match=r"^Deployment '.*' is not 'deployments/owner/name'$"):
        parse_model(bad)


@pytest.mark.parametrize("bad", ["deployments/x", "deployments/a/b/c", "deployments/a/b:v1"])
def test_a_malformed_deployment_name_is_a_one_line_usage_error_before_any_request(ip, env_emu, bad):
    with pytest.raises(UsageError) as caught:
        ask(ip, f"-m {bad}", "Hi")
    assert str(caught.value) == f"argument -m/--model: Deployment {bad!r} is not 'deployments/owner/name'"
    assert list(env_emu.requests) == []


def test_the_configured_model_may_be_a_deployment_and_a_malformed_one_fails_in_one_line(ip, env_emu):
    ip.run_line_magic("config", f"ReplicateMagics.model = {CHAT!r}")
    try:
        ask(ip, "--no-history", "Hi")
    finally:
        ip.run_line_magic("config", 'ReplicateMagics.model = "meta/meta-llama-3-70b-instruct"')
    assert [r.path for r in creates(env_emu)] == ["/v1/deployments/acme/chat/predictions"]
    before = len(env_emu.requests)
    ip.run_line_magic("config", 'ReplicateMagics.model = "deployments/x"')
    try:
        with pytest.raises(InvalidRequestError, match=r"^Deployment 'deployments/x' is not") as caught:
            ask(ip, "", "Hi")
    finally:
        ip.run_line_magic("config", 'ReplicateMagics.model = "meta/meta-llama-3-70b-instruct"')
    assert "\n" not in str(caught.value) and len(env_emu.requests) == before


# -- the magic ---------------------------------------------------------------------------------------


def test_the_prediction_is_created_through_the_deployment_and_streams_into_the_magic(ip, env_emu, capsys):
    ask(ip, f"-m {CHAT}", "Write a haiku about the sea.")
    printed = capsys.readouterr().out
    (create,) = creates(env_emu)
    assert create.path == "/v1/deployments/acme/chat/predictions"
    assert set(create.json) == {"input", "stream"} and create.json["stream"] is True  # no version
    assert not [r for r in env_emu.requests if r.method == "POST" and r.path.startswith("/v1/models/")]
    (prediction,) = env_emu.predictions.values()
    reply = "".join(prediction.output)
    assert prediction.deployment == "acme/chat" and reply in printed
    assert CHAT in printed.splitlines()[-1]  # the metrics line names it as typed
    assert replicate_magic.history()[-1] == {"role": "assistant", "content": reply}
    # The schema is the one of the version the deployment's current release runs.
    version = env_emu.predictions[prediction.id].version
    assert gets(env_emu)[:2] == ["/v1/deployments/acme/chat", f"/v1/models/meta/meta-llama-3-8b-instruct/versions/{version}"]


def test_inputs_follow_the_deployed_models_own_schema(ip, env_emu):
    ask(ip, f"--no-history -m {CHAT} --max-tokens 9", "Hi")
    sent = creates(env_emu)[-1].json["input"]
    assert sent["max_tokens"] == 9 and "max_new_tokens" not in sent  # llama-3's key, not a guess
    ask(ip, '--no-history -m deployments/acme/gpt --max-tokens 9 -s "be brief"', "Hi")
    sent = creates(env_emu)[-1].json["input"]
    assert sent["max_completion_tokens"] == 9 and "prompt" not in sent
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi"}]
    with pytest.raises(InvalidRequestError, match=r"temperature=3.0 is outside what this model takes \(0 to 2\)"):
        ask(ip, "--no-history -m deployments/acme/gpt -t 3", "Hi")
    assert len(creates(env_emu)) == 2  # the bound is checked before anything is created


def test_the_schema_is_cached_under_the_deployments_name_and_follows_a_new_release(ip, env_emu, monkeypatch):
    ask(ip, f"--no-history -m {CHAT} --max-tokens 5", "One")
    ask(ip, f"--no-history -m {CHAT} --max-tokens 5", "Two")
    assert gets(env_emu).count("/v1/deployments/acme/chat") == 1
    assert default_schemas.fresh((env_emu.base_url, CHAT)) is not None
    env_emu.deploy("acme/chat", "openai/gpt-4o-mini")  # re-released with another model
    monkeypatch.setattr(default_schemas, "ttl", 0.0)  # the cached entry is now too old
    ask(ip, f"--no-history -m {CHAT} --max-tokens 5", "Three")
    assert gets(env_emu).count("/v1/deployments/acme/chat") == 2
    assert creates(env_emu)[-1].json["input"]["max_completion_tokens"] == 5


def test_cache_replays_a_deployment_turn(ip, env_emu, capsys):
    ask(ip, f"--no-history --cache -m {CHAT}", "Tide pools")
    first = capsys.readouterr().out
    ask(ip, f"--no-history --cache -m {CHAT}", "Tide pools")
    again = capsys.readouterr().out
    assert len(creates(env_emu)) == 1
    (prediction,) = env_emu.predictions.values()
    assert "".join(prediction.output) in first and "".join(prediction.output) in again
    assert "replayed" in again


def test_an_unknown_deployment_is_one_line_naming_it_and_nothing_is_created(ip, env_emu):
    with pytest.raises(ResponseError) as caught:
        ask(ip, "-m deployments/acme/nothing", "Hi")
    message = str(caught.value)
    assert caught.value.status == 404 and "\n" not in message
    assert message == (f"Replicate has no deployment acme/nothing at {env_emu.base_url} (REPLICATE_BASE_URL; "
                       "is that the API you meant?): HTTP 404. Next: check its name and account on "
                       "replicate.com/deployments (-m deployments/owner/name).")
    assert creates(env_emu) == [] and replicate_magic.history() == []


def test_a_deployment_without_a_release_is_one_line_and_nothing_is_created(ip, env_emu):
    with pytest.raises(InvalidRequestError) as caught:
        ask(ip, "-m deployments/acme/empty", "Hi")
    assert str(caught.value) == ("Deployment deployments/acme/empty has no current release with a model version "
                                 "to run; nothing was sent. Next: release one on replicate.com/deployments.")
    assert creates(env_emu) == []


async def test_the_emulator_refuses_a_prediction_for_a_deployment_without_a_release(env_emu):
    client = await ReplicateClient.connect()
    with pytest.raises(ResponseError, match="HTTP 422 Invalid version or not permitted") as caught:
        await client.create_prediction(ModelRef("acme", "empty", deployment=True), {"prompt": "Hi"})
    assert caught.value.status == 422 and len(env_emu.predictions) == 0


# -- the CLI, the panel, the provider ----------------------------------------------------------------


def test_the_cli_runs_a_deployment(env_emu, capsys):
    assert cli.main(["-m", CHAT, "--max-tokens", "30", "Hello", "there"]) == 0
    shown = capsys.readouterr()
    (create,) = creates(env_emu)
    assert create.path == "/v1/deployments/acme/chat/predictions" and create.json["input"]["max_tokens"] == 30
    (prediction,) = env_emu.predictions.values()
    assert "".join(prediction.output) in shown.out and CHAT in shown.err


def test_the_cli_says_a_bad_or_unknown_deployment_in_one_line(env_emu, capsys):
    assert cli.main(["-m", "deployments/x", "Hi"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "usage error: argument -m/--model: Deployment 'deployments/x' is not 'deployments/owner/name' "
        "(see python -m replicate_magic --help)"]
    assert cli.main(["-m", "deployments/acme/nothing", "Hi"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: Replicate has no deployment acme/nothing at ")
    assert creates(env_emu) == []


def test_the_panels_model_box_takes_a_deployment(env_emu):
    from replicate_magic.conversation import kernel_store
    from replicate_magic.panel import ChatPanel

    kernel_store.clear()
    panel = ChatPanel()
    try:
        panel._picker.value = CHAT  # typed into the model box
        panel._prompt.value = "Hi"
        panel._send_button.click()
        asyncio.run(asyncio.wait_for(panel.model.wait(), 10))
    finally:
        panel.close()
        kernel_store.clear()
    (create,) = creates(env_emu)
    assert create.path == "/v1/deployments/acme/chat/predictions"


async def test_the_provider_takes_a_deployment(env_emu):
    tokens = [t async for t in Replicate.create_async_generator(
        CHAT, [{"role": "user", "content": "Hi"}], max_tokens=12)]
    (create,) = creates(env_emu)
    assert create.path == "/v1/deployments/acme/chat/predictions" and create.json["input"]["max_tokens"] == 12
    (prediction,) = env_emu.predictions.values()
    assert "".join(tokens) == "".join(prediction.output)


# -- cost -----------------------------------------------------------------------------------------------

TABLE = {"models": {}, "hardware": {"gpu-t4": {"name": "Nvidia T4 GPU", "per_second": 0.000225,
                                               "read": "2026-12-01", "label": "replicate.com"}}}


def test_a_deployment_is_priced_by_its_hardware_as_a_floor():
    cost = estimate(CHAT, {"predict_time": 2.0}, TABLE, hardware="gpu-t4")
    assert cost == Cost(pytest.approx(0.00045), "2.0 s of Nvidia T4 GPU at $0.000225/s (replicate.com, 2026-12-01); "
                        "setup and idle time not counted", floor=True)
    assert format_cost(cost) == "≥ $0.00045"
    assert estimate(CHAT, {"predict_time": 2.0}, TABLE) is None  # hardware not known: no estimate
    assert estimate(CHAT, {"predict_time": 2.0}, TABLE, hardware="gpu-unknown") is None
    assert estimate(CHAT, {}, TABLE, hardware="gpu-t4") is None
    # A price the user gave for the deployment itself wins, and is no floor.
    own = estimate(CHAT, {"predict_time": 2.0}, TABLE, {CHAT: {"per_second": 0.001}}, hardware="gpu-t4")
    assert own is not None and not own.floor and own.amount == pytest.approx(0.002)


def test_the_metrics_line_of_a_deployment_turn_shows_its_floor_price(ip, env_emu, capsys):
    ask(ip, f"--no-history -m {CHAT}", "Hi")
    assert "≥ $" in capsys.readouterr().out.splitlines()[-1]  # the emulator's deployments run on gpu-t4


# -- a real kernel ------------------------------------------------------------------------------------


def test_a_deployment_streams_in_a_real_kernel(tmp_path, emu):
    env = kernel_env(tmp_path, REPLICATE_API_TOKEN=TOKEN, REPLICATE_BASE_URL=emu.base_url)
    with KernelSession(env, cwd=str(tmp_path), kernel_name=KERNEL_NAMES[0]) as kernel:  # enter starts it
        kernel.ok("%load_ext replicate_magic")
        cell = kernel.ok(f"%%replicate -m {CHAT}\nWrite a haiku about rivers.")
        missing = kernel.run("%%replicate -m deployments/acme/nothing\nHi")
    (prediction,) = emu.predictions.values()
    replies = [plain(m) for m in cell.of_type("display_data", "update_display_data")]
    assert "".join(prediction.output) in replies
    assert [r.path for r in creates(emu)] == ["/v1/deployments/acme/chat/predictions"]
    assert missing.status == "error" and missing.reply["ename"] == "ResponseError"
    (error,) = missing.of_type("error")
    assert len(error.content["traceback"]) == 1 and "no deployment acme/nothing" in error.content["traceback"][0]
    assert TOKEN not in kernel.iopub_text()
