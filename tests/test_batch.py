"""Many prompts at once (issue 12): ``%%replicate --each``, ``replicate_magic.map`` and ``ask``.

In-process IPython and plain Python against the emulator over real sockets: the order of
the results, the bound on predictions in flight, one failing item among many, a 429 waited
out by every worker together, a re-run with ``--cache`` asking only what did not finish,
and the bad inputs that send nothing.
"""

from __future__ import annotations

import asyncio
import time

import pandas as pd
import pytest
from IPython.core.error import UsageError

import replicate_magic
from replicate_magic.emulator import Faults
from replicate_magic.errors import InvalidRequestError
from replicate_magic.limiter import CreateLimiter


def creates(emu) -> list:
    return [r for r in emu.requests if r.method == "POST" and r.path.endswith("/predictions")]


def prompts_sent(emu) -> list[str]:
    return [r.json["input"]["prompt"] for r in creates(emu)]


def reply_to(emu, prompt: str) -> str:
    (prediction,) = [p for p in emu.predictions.values() if p.input.get("prompt") == prompt]
    return "".join(prediction.output)


def run(ip, line: str, cell: str):
    return ip.run_cell_magic("replicate", line, cell)


# -- the items and their results --------------------------------------------------------------------


def test_each_element_is_one_request_and_the_results_keep_the_input_order(ip, env_emu, capsys):
    ip.user_ns["reviews"] = ["great stuff", "awful", "it was fine", "never again"]
    run(ip, "--each reviews -o labels --concurrency 3", "Label this review: {item}")
    labels = ip.user_ns["labels"]
    prompts = [f"Label this review: {r}" for r in ip.user_ns["reviews"]]
    assert sorted(prompts_sent(env_emu)) == sorted(prompts)  # one each, none twice
    assert list(labels) == [reply_to(env_emu, p) for p in prompts]
    assert labels.errors == {} and labels.keys == [0, 1, 2, 3]
    assert all("messages" not in r.json["input"] for r in creates(env_emu))
    assert replicate_magic.history() == []  # independent items: no conversation
    err = capsys.readouterr().err
    assert "4 of 4 answered" in err


def test_a_data_frames_rows_fill_the_fields_and_the_result_is_a_series_with_its_index(ip, env_emu):
    frame = pd.DataFrame({"name": ["tea", "coffee"], "price": [3, 4]}, index=["a", "b"])
    ip.user_ns["menu"] = frame
    run(ip, "--each menu -o said", "{name} costs {price} (row {index})")
    said = ip.user_ns["said"]
    assert isinstance(said, pd.Series) and list(said.index) == ["a", "b"]
    assert said["a"] == reply_to(env_emu, "tea costs 3 (row a)")
    assert said["b"] == reply_to(env_emu, "coffee costs 4 (row b)")
    assert said.attrs["errors"] == {}


def test_a_series_and_a_dict_give_their_keys(ip, env_emu):
    ip.user_ns["cities"] = pd.Series(["Paris", "Oslo"], index=[10, 20])
    run(ip, "--each cities -o about", "One fact about {item}")
    assert list(ip.user_ns["about"].index) == [10, 20]
    ip.user_ns["people"] = {"ada": {"born": 1815}, "alan": {"born": 1912}}
    run(ip, "--each people -o born", "{index} was born in {born}")
    born = ip.user_ns["born"]
    assert born.keys == ["ada", "alan"] and born[1] == reply_to(env_emu, "alan was born in 1912")


def test_code_in_the_template_is_sent_as_typed(ip, env_emu):
    ip.user_ns["words"] = ["x"]
    run(ip, "--each words", "Use `{item}` literally, but fill {item}")
    assert prompts_sent(env_emu) == ["Use `{item}` literally, but fill x"]


# -- failures, bounds and rate limits ---------------------------------------------------------------


def test_one_failing_item_is_reported_and_the_others_stand(ip, env_emu, capsys):
    ip.user_ns["items"] = ["one", "two [[emulator:fail]]", "three"]  # the emulator fails that one
    run(ip, "--each items -o out --concurrency 3", "Say {item}")
    out = ip.user_ns["out"]
    assert out[0] == reply_to(env_emu, "Say one") and out[2] == reply_to(env_emu, "Say three")
    assert out[1] is None and list(out.errors) == [1]
    assert out.errors[1].startswith("The model failed: ")
    assert prompts_sent(env_emu).count("Say two [[emulator:fail]]") == 1  # a model's failure is not retried
    err = capsys.readouterr().err
    assert "2 of 3 answered · 1 failed" in err and f"Failed: 1: {out.errors[1]}" in err


def test_a_transient_failure_is_tried_again(ip, env_emu):
    ip.user_ns["items"] = ["warm"]
    run(ip, "--each items", "Say {item}")  # the model's schema is known now: the next request is a create
    ip.user_ns["items"] = ["again"]
    env_emu.inject(Faults(server_error=1))
    run(ip, "--each items -o out", "Say {item}")
    assert prompts_sent(env_emu).count("Say again") == 2  # a 500 to the create, then a second try
    assert ip.user_ns["out"][0] == reply_to(env_emu, "Say again")


def test_no_more_than_n_predictions_are_in_flight(ip, env_emu):
    ip.user_ns["items"] = [f"item {n}" for n in range(12)]
    env_emu.inject(Faults(tokens_per_second=40))
    run(ip, "--each items -o out --concurrency 4", "Say {item}")
    spans = sorted((p.created_ns, p.completed_ns) for p in env_emu.predictions.values())
    most = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert most <= 4
    assert all(v is not None for v in ip.user_ns["out"])


def test_the_limiter_paces_creates_and_a_pause_holds_every_worker():
    async def scenario() -> tuple[list[float], list[float]]:
        limiter = CreateLimiter(rate=600, burst=2)  # 10 a second, 2 at once
        start = time.monotonic()

        async def one() -> float:
            await limiter.acquire()
            return time.monotonic() - start

        paced = await asyncio.gather(*(one() for _ in range(6)))
        limiter.pause(0.3)
        paused_at = time.monotonic() - start
        after = await asyncio.gather(*(one() for _ in range(3)))
        return sorted(paced), [t - paused_at for t in after]

    paced, after = asyncio.run(scenario())
    assert paced[1] < 0.05 and paced[2] >= 0.08 and paced[5] >= 0.38  # a burst of 2, then 10 a second
    assert min(after) >= 0.29  # nobody went during the pause


def test_429s_are_waited_out_and_every_item_answers(ip, env_emu, capsys):
    ip.user_ns["items"] = [f"n{n}" for n in range(6)]
    env_emu.inject(Faults(rate_limit=3, retry_after=0.5))
    run(ip, "--each items -o out --concurrency 6", "Say {item}")
    assert all(v is not None for v in ip.user_ns["out"])
    throttled = [r for r in creates(env_emu)]
    assert len(throttled) == 6 + 3  # three 429s, each create tried again once


def test_a_rerun_with_cache_asks_only_what_is_not_in_the_log(ip, env_emu):
    ip.user_ns["items"] = ["a", "b", "c"]
    run(ip, "--each items --cache -o first", "Say {item}")
    ip.user_ns["items"] = ["a", "b", "c", "d"]
    before = len(creates(env_emu))
    run(ip, "--each items --cache -o second", "Say {item}")
    assert prompts_sent(env_emu)[before:] == ["Say d"]
    assert list(ip.user_ns["second"][:3]) == list(ip.user_ns["first"])


def test_every_item_is_logged_on_its_own_row_though_written_together(ip, env_emu, own_log):
    ip.user_ns["items"] = [f"row {n}" for n in range(12)]
    run(ip, "--each items -o out --concurrency 4", "Say {item}")
    logged = {e["prompt"]: e for e in replicate_magic.log()}
    assert sorted(logged) == sorted(f"Say row {n}" for n in range(12))
    out = ip.user_ns["out"]
    assert all(logged[f"Say row {n}"]["reply"] == out[n] for n in range(12))
    assert all(e["status"] == "succeeded" and e["metrics"].get("predict_time") for e in logged.values())
    assert replicate_magic.log(search="row 7")[0]["prompt"] == "Say row 7"  # in the text index too


def test_a_log_that_cannot_be_written_is_one_line_in_the_summary_and_the_replies_stand(ip, env_emu, own_log,
                                                                                          capsys):
    own_log.write_bytes(b"this is not a database" * 100)
    ip.user_ns["items"] = ["a", "b", "c"]
    run(ip, "--each items -o out", "Say {item}")
    assert all(ip.user_ns["out"])
    err = capsys.readouterr().err
    assert "3 of 3 answered" in err
    assert "The log: 3 not logged: The log at " in err and "is not a replicate_magic database" in err
    assert err.count("not logged") == 1


def test_a_placeholder_whose_value_holds_the_token_is_kept_as_typed_and_the_summary_says_so(ip, env_emu, capsys):
    from .conftest import TOKEN

    ip.user_ns["rows"] = [{"name": "tea", "note": "fine"}, {"name": "key", "note": f"it is {TOKEN}"}]
    run(ip, "--each rows -o out", "Describe {name}: {note}")
    assert sorted(prompts_sent(env_emu)) == ["Describe key: {note}", "Describe tea: fine"]
    assert all(TOKEN not in r.json["input"]["prompt"] for r in creates(env_emu))
    err = capsys.readouterr().err
    assert "2 of 2 answered" in err and TOKEN not in err
    assert "Note: not expanded in 1 of 2 items, since the value holds the API token: {note}" in err


# -- bad input: one line, nothing sent --------------------------------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    ([], "--each data: it is empty; there is nothing to ask"),
    (42, "--each data: a int is not a list, tuple, dict, pandas Series or DataFrame, nor anything iterable"),
    ("text", "--each data: a str is one prompt's text, not a list of items"),
    ([{"a": 1}, {"b": 2}], "--each data: item 1 has no field 'a' (the template uses {a}); nothing was sent"),
])
def test_bad_data_is_one_line_and_sends_nothing(ip, env_emu, value, message):
    ip.user_ns["data"] = value
    with pytest.raises(InvalidRequestError) as caught:
        run(ip, "--each data", "Tell me {a}" if isinstance(value, list) and value else "Say {item}")
    assert str(caught.value).startswith(message)
    assert creates(env_emu) == []


def test_a_missing_variable_and_a_bad_concurrency_are_one_line(ip, env_emu):
    with pytest.raises(InvalidRequestError, match="no variable 'nothing' in the notebook"):
        run(ip, "--each nothing", "Say {item}")
    ip.user_ns["items"] = [1]
    with pytest.raises(UsageError, match="argument --concurrency: invalid value 0"):
        run(ip, "--each items --concurrency 0", "Say {item}")
    with pytest.raises(UsageError, match="argument --concurrency: invalid value 100000"):
        run(ip, "--each items --concurrency 100000", "Say {item}")
    assert creates(env_emu) == []


def test_a_huge_batch_needs_yes(ip, env_emu):
    ip.user_ns["many"] = range(1_000_001)
    with pytest.raises(InvalidRequestError, match=r"^1,000,001 items would create 1,000,001 predictions"):
        run(ip, "--each many", "Say {item}")
    assert creates(env_emu) == []


# -- the Python API -------------------------------------------------------------------------------


def test_map_and_ask_from_plain_python(env_emu):
    results = replicate_magic.map("Say {item}", ["x", "y"], max_tokens=3, concurrency=2)
    assert list(results) == [reply_to(env_emu, "Say x"), reply_to(env_emu, "Say y")]
    reply = replicate_magic.ask("Hello there", no_history=True)
    assert reply == reply_to(env_emu, "Hello there")
    with pytest.raises(ValueError, match="temperature: invalid value"):
        replicate_magic.ask("Hi", temperature=-1)
    with pytest.raises(TypeError, match="unknown setting colour"):
        replicate_magic.ask("Hi", colour="red")


def test_the_async_twins_run_on_the_callers_loop(env_emu):
    async def both() -> tuple[str, list]:
        return (await replicate_magic.ask_async("Async hello", no_history=True),
                await replicate_magic.map_async("Async {item}", [1, 2]))

    reply, mapped = asyncio.run(both())
    assert reply == reply_to(env_emu, "Async hello")
    assert list(mapped) == [reply_to(env_emu, "Async 1"), reply_to(env_emu, "Async 2")]


@pytest.fixture
def strict_emu(monkeypatch):
    """An emulator that throttles creates hard: 60 a minute, 3 at once."""
    from replicate_magic.emulator import Emulator

    from .conftest import TOKEN

    with Emulator(token=TOKEN, create_rate_limit=60, create_burst=3) as emulator:
        monkeypatch.setenv("REPLICATE_BASE_URL", emulator.base_url)
        monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
        yield emulator


def test_after_a_429_every_worker_waits_for_retry_after(ip, strict_emu):
    ip.run_line_magic("config", "ReplicateMagics.create_rate = 6000")  # ours lets them go: the API throttles
    try:
        ip.user_ns["items"] = [f"n{n}" for n in range(6)]
        run(ip, "--each items -o out --concurrency 6", "Say {item}")
    finally:
        ip.run_line_magic("config", "ReplicateMagics.create_rate = 600")
    assert all(v is not None for v in ip.user_ns["out"])
    throttled, accepted = list(strict_emu.throttled), list(strict_emu.create_times)
    assert throttled and len(accepted) == 6
    attempts = sorted(throttled + accepted)
    # Creates already on their way when a 429 came are answered within a moment of it; any
    # later one went out before Retry-After (1 s here) had passed: a worker that did not wait.
    early = [(t, a) for t in throttled for a in attempts if t + 0.05 < a < t + 0.9]
    assert early == []


def test_each_with_several_models_gives_a_table_of_items_by_models(ip, env_emu):
    small, large = "meta/meta-llama-3-8b-instruct", "meta/meta-llama-3-70b-instruct"
    ip.user_ns["menu"] = pd.DataFrame({"dish": ["tea", "ramen"]}, index=["t", "r"])
    run(ip, f"--each menu -m {small} -m {large} -o table", "Describe {dish}")
    table = ip.user_ns["table"]
    assert isinstance(table, pd.DataFrame) and list(table.columns) == [small, large]
    assert list(table.index) == ["t", "r"]
    by_model = {(p.model, p.input["prompt"]): "".join(p.output) for p in env_emu.predictions.values()}
    assert table.loc["r", large] == by_model[(large, "Describe ramen")]
    assert table.loc["t", small] == by_model[(small, "Describe tea")]
    ip.user_ns["words"] = ["a"]
    run(ip, f"--each words -m {small} -m {large} -o rows", "Say {item}")
    said = {(p.model, p.input["prompt"]): "".join(p.output) for p in env_emu.predictions.values()}
    assert ip.user_ns["rows"] == [{small: said[(small, "Say a")], large: said[(large, "Say a")]}]
    assert ip.user_ns["rows"].keys == [0]


def test_a_data_frame_in_an_each_template_is_described_not_written_out(ip, env_emu):
    ip.user_ns["prices"] = pd.DataFrame({"dish": [f"dish {n}" for n in range(50_000)], "price": range(50_000)})
    ip.user_ns["questions"] = ["cheapest", "dearest"]
    run(ip, "--each questions", "Which dish is {item}? {prices}")
    sent = prompts_sent(env_emu)
    assert len(sent) == 2 and all("50,000 rows x 2 columns" in p and "more rows)" in p for p in sent)
    assert all("dish 49999" not in p for p in sent)
