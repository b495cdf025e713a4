"""The price table: packaged default, file override, clear errors, exact costs."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from runloom.billing_client import PriceTableError, load_prices
from runloom.contracts.events import Usage


def test_packaged_table_prices_the_offline_provider_above_zero():
    prices = load_prices()
    assert prices.version
    offline = prices.provider_cost("offline", "extractive", 1000, 1000)
    assert Decimal(0) < offline < Decimal("0.01")


def test_unknown_model_and_tool_fall_back_to_the_default_prices():
    prices = load_prices()
    assert prices.model_price("acme", "giant") == prices.default_model
    assert prices.tool_cost("teleport") == prices.default_tool


def test_cost_of_usage_is_exact():
    prices = load_prices()
    cost = prices.cost(
        "provider", Usage(input_tokens=3, output_tokens=7), provider="offline", model="extractive"
    )
    assert cost == Decimal("0.000031")  # 3 * $1/M + 7 * $4/M
    assert prices.cost("tool", Usage(tool_calls=3), tool="web_fetch") == Decimal("0.003")


def test_prices_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "prices.toml"
    path.write_text(
        'version = "test-2"\n'
        "[default]\ninput_per_mtok = 1\noutput_per_mtok = 1\nper_call = 0.5\n"
        "[providers.offline.extractive]\ninput_per_mtok = 10\noutput_per_mtok = 20\n"
    )
    monkeypatch.setenv("RUNLOOM_PRICES_FILE", str(path))
    prices = load_prices()
    assert prices.version == "test-2"
    assert prices.provider_cost("offline", "extractive", 1_000_000, 0) == Decimal(10)
    assert prices.tool_cost("anything") == Decimal("0.5")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = ", "not valid TOML"),
        ("[default]\nper_call = 1\n", "'version'"),
        ('version = "v"\n', "[default]"),
        (
            'version = "v"\n[default]\ninput_per_mtok = -1\noutput_per_mtok = 1\nper_call = 0\n',
            "default.input_per_mtok: a price must be a finite number >= 0",
        ),
        (
            'version = "v"\n[default]\ninput_per_mtok = 1\noutput_per_mtok = 1\nper_call = 0\n'
            "[providers.openai.x]\ninput_per_mtok = 1\n",
            "providers.openai.x: missing output_per_mtok",
        ),
    ],
)
def test_a_bad_table_says_what_is_wrong(tmp_path: Path, text: str, message: str):
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceTableError, match=None) as info:
        load_prices(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_a_missing_file_names_the_variable(tmp_path: Path):
    with pytest.raises(PriceTableError, match="cannot read it"):
        load_prices(tmp_path / "nope.toml")
