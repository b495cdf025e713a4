"""The versioned price table: per provider and model (input and output tokens) and per tool call.

Loaded from the `prices.toml` shipped in this package, or from the file named by
RUNLOOM_PRICES_FILE. Costs are computed in `Decimal` (exact for the table's decimal prices)
and rounded to `QUANTUM`; the wire carries floats.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from runloom.contracts.events import Usage

QUANTUM = Decimal("0.000000001")
"""Costs are kept to a billionth of a dollar."""
MTOK = Decimal(1_000_000)


class PriceTableError(ValueError):
    """The price table file is missing, malformed or incomplete."""


@dataclass(frozen=True, kw_only=True)
class ModelPrice:
    input_per_mtok: Decimal
    """USD per million input tokens."""
    output_per_mtok: Decimal
    """USD per million output tokens."""


@dataclass(frozen=True, kw_only=True)
class PriceTable:
    version: str
    """Recorded with every ledger row and committed reservation."""
    models: dict[tuple[str, str], ModelPrice] = field(default_factory=dict)
    """(provider, model) -> price."""
    tools: dict[str, Decimal] = field(default_factory=dict)
    """tool -> USD per call."""
    default_model: ModelPrice
    """Price of a provider/model missing from the table."""
    default_tool: Decimal
    """Price of a tool call missing from the table."""

    def model_price(self, provider: str | None, model: str | None) -> ModelPrice:
        return self.models.get((provider or "", model or ""), self.default_model)

    def tool_price(self, tool: str | None) -> Decimal:
        return self.tools.get(tool or "", self.default_tool)

    def provider_cost(
        self, provider: str | None, model: str | None, input_tokens: int, output_tokens: int
    ) -> Decimal:
        p = self.model_price(provider, model)
        cost = (p.input_per_mtok * input_tokens + p.output_per_mtok * output_tokens) / MTOK
        return _q(cost)

    def tool_cost(self, tool: str | None, calls: int = 1) -> Decimal:
        return _q(self.tool_price(tool) * calls)

    def cost(
        self,
        kind: str,
        usage: Usage,
        *,
        provider: str | None = None,
        model: str | None = None,
        tool: str | None = None,
    ) -> Decimal:
        """The cost of a metered call's actual usage."""
        if kind == "tool":
            return self.tool_cost(tool, max(usage.tool_calls, 1))
        total = self.provider_cost(provider, model, usage.input_tokens, usage.output_tokens)
        if usage.tool_calls and tool:
            total += self.tool_cost(tool, usage.tool_calls)
        return total


def _q(value: Decimal) -> Decimal:
    return value.quantize(QUANTUM, rounding=ROUND_HALF_UP)


def _dec(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceTableError(f"{where}: expected a number, got {value!r}")
    d = Decimal(str(value))
    if not d.is_finite() or d < 0:
        raise PriceTableError(f"{where}: a price must be a finite number >= 0, got {value!r}")
    return d


def _model_price(raw: Any, where: str) -> ModelPrice:
    if not isinstance(raw, dict):
        raise PriceTableError(f"{where}: expected a table with input_per_mtok and output_per_mtok")
    try:
        return ModelPrice(
            input_per_mtok=_dec(raw["input_per_mtok"], f"{where}.input_per_mtok"),
            output_per_mtok=_dec(raw["output_per_mtok"], f"{where}.output_per_mtok"),
        )
    except KeyError as exc:
        raise PriceTableError(f"{where}: missing {exc.args[0]}") from None


def parse_prices(doc: dict[str, Any], source: str = "prices") -> PriceTable:
    """Build a PriceTable from a parsed TOML document."""
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        raise PriceTableError(f"{source}: 'version' (a non-empty string) is required")
    default = doc.get("default")
    if not isinstance(default, dict):
        raise PriceTableError(f"{source}: a [default] table is required")
    models: dict[tuple[str, str], ModelPrice] = {}
    for provider, by_model in (doc.get("providers") or {}).items():
        if not isinstance(by_model, dict):
            raise PriceTableError(f"{source}: providers.{provider} must be a table of models")
        for model, raw in by_model.items():
            models[(provider, model)] = _model_price(raw, f"{source}: providers.{provider}.{model}")
    tools = {
        name: _dec(value, f"{source}: tools.{name}")
        for name, value in (doc.get("tools") or {}).items()
    }
    return PriceTable(
        version=version,
        models=models,
        tools=tools,
        default_model=_model_price(default, f"{source}: default"),
        default_tool=_dec(default.get("per_call"), f"{source}: default.per_call"),
    )


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Load the table from `path`, else RUNLOOM_PRICES_FILE, else the packaged prices.toml."""
    path = path or os.environ.get("RUNLOOM_PRICES_FILE") or None
    if path is None:
        text = (resources.files("runloom.billing_client") / "prices.toml").read_text(
            encoding="utf-8"
        )
        source = "runloom/billing_client/prices.toml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceTableError(f"RUNLOOM_PRICES_FILE={path}: cannot read it ({exc})") from None
        source = str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"{source}: not valid TOML ({exc})") from None
    return parse_prices(doc, source)


@lru_cache(maxsize=1)
def default_prices() -> PriceTable:
    """The process-wide table (read once)."""
    return load_prices()
