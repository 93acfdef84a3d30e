"""Cost estimates (replicate_magic.pricing): per token, per second, unknown models, overrides."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import pytest

from replicate_magic.catalog import KNOWN_MODELS
from replicate_magic.pricing import Cost, entry_problem, estimate, format_cost, load_table

TABLE = {
    "models": {
        "meta/meta-llama-3-70b-instruct": {"input_per_million": 0.65, "output_per_million": 2.75,
                                           "read": "2026-12-01", "source": "https://replicate.com/pricing"},
        "someone/sdxl": {"hardware": "gpu-a40-large"},
        "someone/flat": {"per_second": 0.001, "read": "2026-11-30", "label": "my notes"},
    },
    "hardware": {
        "gpu-a40-large": {"name": "Nvidia A40 (Large) GPU", "per_second": 0.000725, "read": "2026-12-01",
                          "source": "https://replicate.com/pricing"},
    },
}
TOKENS = {"input_token_count": 1234, "output_token_count": 567, "predict_time": 3.2}


def test_a_language_model_is_priced_per_input_and_output_token():
    cost = estimate("meta/meta-llama-3-70b-instruct", TOKENS, TABLE)
    assert cost == Cost(pytest.approx((1234 * 0.65 + 567 * 2.75) / 1e6),
                        "1,234 input + 567 output tokens at $0.65/$2.75 per M (replicate.com, 2026-12-01)")
    assert format_cost(cost) == "≈ $0.0024"


def test_other_models_are_priced_per_second_of_their_hardware():
    cost = estimate("someone/sdxl", {"predict_time": 12.5}, TABLE)
    assert cost == Cost(pytest.approx(12.5 * 0.000725),
                        "12.5 s of Nvidia A40 (Large) GPU at $0.000725/s (replicate.com, 2026-12-01)")
    flat = estimate("someone/flat", {"predict_time": 0.25}, TABLE)
    assert flat == Cost(pytest.approx(0.00025), "0.25 s at $0.001/s (my notes, 2026-11-30)")


def test_aliases_and_versions_find_the_model():
    for name in ("llama-3-70b", "meta/meta-llama-3-70b-instruct:5a6809ca6288247d06daf6365557e5e429063f32",
                 " Meta/Meta-Llama-3-70B-Instruct "):
        assert estimate(name, TOKENS, TABLE) == estimate("meta/meta-llama-3-70b-instruct", TOKENS, TABLE)


@pytest.mark.parametrize("model, metrics", [
    ("nobody/unknown", TOKENS),  # no price
    ("", TOKENS),
    ("meta/meta-llama-3-70b-instruct", {"input_token_count": 10}),  # half the counts
    ("meta/meta-llama-3-70b-instruct", {"predict_time": 3.0}),  # a token price needs tokens
    ("meta/meta-llama-3-70b-instruct", {"input_token_count": True, "output_token_count": 1}),
    ("meta/meta-llama-3-70b-instruct", {"input_token_count": -5, "output_token_count": 1}),
    ("someone/sdxl", {"input_token_count": 1, "output_token_count": 1}),  # a time price needs the time
    ("someone/sdxl", {"predict_time": float("nan")}),
    ("someone/sdxl", None),
])
def test_no_estimate_without_a_price_and_the_metrics_it_needs(model, metrics):
    assert estimate(model, metrics, TABLE) is None


def test_an_override_wins_over_the_table():
    overrides = {"meta/meta-llama-3-70b-instruct": {"input_per_million": 1.0, "output_per_million": 2.0}}
    cost = estimate("llama-3-70b", TOKENS, TABLE, overrides)
    assert cost == Cost(pytest.approx((1234 * 1.0 + 567 * 2.0) / 1e6),
                        "1,234 input + 567 output tokens at $1.00/$2.00 per M (your price)")
    assert estimate("mine/model", {"predict_time": 2}, TABLE, {"Mine/Model": {"hardware": "gpu-a40-large"}}) \
        == Cost(pytest.approx(0.00145), "2.0 s of Nvidia A40 (Large) GPU at $0.000725/s (replicate.com, 2026-12-01)")
    # A broken override prices nothing rather than falling back to a price the user replaced.
    assert estimate("meta/meta-llama-3-70b-instruct", TOKENS, TABLE,
                    {"meta/meta-llama-3-70b-instruct": {"input_per_million": "cheap"}}) is None


@pytest.mark.parametrize("entry, problem", [
    ({"input_per_million": 1, "output_per_million": 2}, None),
    ({"per_second": 0.001}, None),
    ({"hardware": "gpu-a40-large"}, None),
    ({"input_per_million": 1}, "output_per_million must be numbers >= 0"),
    ({"input_per_million": -1, "output_per_million": "x"}, "input_per_million and output_per_million must be "
                                                           "numbers >= 0"),
    ({"per_second": None}, "per_second must be a number >= 0"),
    ({"hardware": "gpu-z9000"}, "the hardware 'gpu-z9000' is not in the price table"),
    ({}, "give input_per_million and output_per_million, or per_second, or hardware"),
    ([1, 2], "a price entry must be a mapping"),
])
def test_entry_problem_says_what_is_wrong(entry, problem):
    assert entry_problem(entry, TABLE["hardware"]) == problem


@pytest.mark.parametrize("amount, shown", [
    (0.0012, "≈ $0.0012"), (0.000076, "≈ $0.000076"), (0.42, "≈ $0.42"), (0.099, "≈ $0.099"),
    (1234.5, "≈ $1,234.50"), (0.0, "≈ $0.00"),
])
def test_format_cost(amount, shown):
    assert format_cost(Cost(amount, "")) == shown
    assert format_cost(None) == ""


def test_the_packaged_table_is_dated_sourced_and_valid():
    table = load_table()
    entries = [*table["models"].values(), *table["hardware"].values()]
    for entry in entries:
        assert entry_problem(entry, table["hardware"]) is None
        assert entry["source"].startswith("https://")
        assert date.fromisoformat(entry["read"]) <= date.today()
    assert table["hardware"]["gpu-a100-large"]["per_second"] == 0.0014
    priced = [m for m in KNOWN_MODELS if estimate(m, TOKENS) is not None]
    assert "meta/meta-llama-3-70b-instruct" in priced


def test_importing_the_module_reads_no_file():
    code = "import replicate_magic.pricing as p; print(p.load_table.cache_info().currsize)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "0"
