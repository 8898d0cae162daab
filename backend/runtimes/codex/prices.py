"""What a Codex turn costs: Codex reports tokens, never money, so Baton estimates it.

DEFAULT_PRICES are OpenAI's API list prices (USD per million tokens, standard tier) for the
models Codex 0.169 offers, as quoted by public pages read on 2026-11-21 (OpenAI's own pricing
page was not reachable from here). They change: override or add models with `codex.prices` in
agent.yaml. Every cost computed here is marked estimated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .config import Price

DEFAULT_PRICES: dict[str, Price] = {
    "gpt-5.5": Price(input=5.00, cached_input=0.50, output=30.00),
    "gpt-5.4": Price(input=2.50, cached_input=0.25, output=15.00),
    "gpt-5.4-mini": Price(input=0.75, cached_input=0.075, output=4.50),
    "gpt-5.3-codex": Price(input=1.75, cached_input=0.175, output=14.00),
    "gpt-5.2-codex": Price(input=1.75, cached_input=0.175, output=14.00),
    "gpt-5.2": Price(input=1.75, cached_input=0.175, output=14.00),
    "gpt-5.1-codex-max": Price(input=1.25, cached_input=0.125, output=10.00),
    "gpt-5.1-codex": Price(input=1.25, cached_input=0.125, output=10.00),
    "gpt-5.1-codex-mini": Price(input=0.25, cached_input=0.025, output=2.00),
}


@dataclass(frozen=True)
class Usage:
    """One turn's tokens as Codex counts them: `input` INCLUDES `cached`."""

    input: int
    cached: int
    output: int


def price_for(model: str | None, overrides: Mapping[str, Price]) -> Price | None:
    if not model:
        return None
    table = {**DEFAULT_PRICES, **overrides}
    return table.get(model) or table.get(model.lower())


def cost_usd(usage: Usage, price: Price) -> float:
    cached = min(usage.cached, usage.input)
    fresh = usage.input - cached
    return (fresh * price.input + cached * price.cached_input + usage.output * price.output) / 1_000_000
