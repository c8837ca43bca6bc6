"""What a model call costs: the price table shipped as data, overridable in config.

The shipped table (``prices.toml`` beside this module) lists US-dollar list prices of the common
OpenAI, Anthropic and Gemini models *as of its date* (:attr:`PriceTable.as_of`): per million
input, cached-input and output tokens, and per generated image by size. Config corrects or
adds models::

    [prices."gpt-4o-mini"]              # new key (relaybot ≥ budgets)
    input = 0.15
    cached_input = 0.075
    output = 0.60
    images = { "1024x1024" = 0.04 }

    [plugins.usage]                     # the older spelling, still honoured
    prices = { "my-model" = { input = 1, output = 2 } }

``[prices]`` wins over ``[plugins.usage].prices``, which wins over the shipped table. A price
for ``gpt-4o`` also covers dated snapshots (``gpt-4o-2024-08-06``) and router names
(``openai/gpt-4o``). Providers of type ``llama_cpp`` (the bundled local model) cost nothing.

Money is computed in integer micro-dollars (:func:`to_micros`) wherever it is summed, so
budgets compare exact numbers; a call's cost is rounded *up* to the next micro-dollar.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relaybot.core.contracts.errors import ConfigError
from relaybot.core.contracts.models import Usage

__all__ = [
    "LOCAL_PROVIDER_TYPES",
    "ModelPrice",
    "PriceConfig",
    "PriceTable",
    "from_micros",
    "to_micros",
]

SHIPPED = Path(__file__).with_name("prices.toml")
#: provider types whose calls cost nothing (they run on this machine)
LOCAL_PROVIDER_TYPES = frozenset({"llama_cpp"})
#: no token price above this (USD per million) is believable: it is a typo (cents vs dollars …)
MAX_TOKEN_PRICE = 10_000.0
MAX_IMAGE_PRICE = 100.0
#: what may follow a priced model name and still be the same model: a date or version snapshot
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest|preview(?:-\d{2}-\d{2})?)$")


def to_micros(dollars: float) -> int:
    """US dollars as integer micro-dollars, rounded up (a cost is never under-counted)."""
    return math.ceil(round(dollars * 1_000_000, 6))


def from_micros(micros: int) -> float:
    """Integer micro-dollars as US dollars."""
    return micros / 1_000_000


class PriceConfig(BaseModel):
    """One model's price in config (``[prices.MODEL]`` or ``[plugins.usage].prices.MODEL``)."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, le=MAX_TOKEN_PRICE)
    output: float = Field(ge=0, le=MAX_TOKEN_PRICE)
    #: price of prompt tokens read from the provider's cache; default: the input price
    cached_input: float | None = Field(default=None, ge=0, le=MAX_TOKEN_PRICE)
    #: per generated image, by size ("1024x1024" …)
    images: dict[str, float] = Field(default_factory=dict)

    @field_validator("images")
    @classmethod
    def _sane_images(cls, images: dict[str, float]) -> dict[str, float]:
        for size, value in images.items():
            if not 0 <= value <= MAX_IMAGE_PRICE:
                raise ValueError(f"images.{size} must be between 0 and {MAX_IMAGE_PRICE:g} dollars")
        return images

    def to_price(self) -> ModelPrice:
        """The immutable price."""
        return ModelPrice(self.input, self.output, self.cached_input, dict(self.images))


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """US dollars per million tokens (input, output, cached input) and per image by size."""

    input: float
    output: float
    cached_input: float | None = None
    images: Mapping[str, float] = field(default_factory=dict)

    def cost(self, usage: Usage) -> float:
        """The price of ``usage`` in US dollars (cached prompt tokens at the cached price)."""
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        return (
            (usage.input_tokens - cached) * self.input
            + cached * cached_price
            + usage.output_tokens * self.output
        ) / 1_000_000

    def worst_case(self, input_tokens: int, max_output_tokens: int) -> float:
        """The most a call with this prompt and output limit can cost (no cache discount)."""
        return (input_tokens * self.input + max_output_tokens * self.output) / 1_000_000

    def image_cost(self, size: str) -> float | None:
        """The price of one image of ``size``, or ``None`` when the table has none."""
        if size in self.images:
            return self.images[size]
        return max(self.images.values()) if size == "auto" and self.images else None


FREE = ModelPrice(0.0, 0.0, 0.0)


class PriceTable:
    """Prices by model name; see the module docstring for where they come from."""

    def __init__(self, prices: Mapping[str, ModelPrice], *, as_of: str = "") -> None:
        self._prices = dict(prices)
        #: the date of the shipped prices (empty for a table built by hand)
        self.as_of = as_of

    @classmethod
    def shipped(cls) -> PriceTable:
        """The table shipped with relaybot (``prices.toml``)."""
        data = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
        models = {
            name: PriceConfig.model_validate(value).to_price() for name, value in data["models"].items()
        }
        return cls(models, as_of=str(data.get("as_of", "")))

    def with_overrides(self, prices: Mapping[str, ModelPrice]) -> PriceTable:
        """A copy with ``prices`` added or replacing shipped ones."""
        return PriceTable({**self._prices, **prices}, as_of=self.as_of)

    def __contains__(self, model: str) -> bool:
        return self.price_of(model) is not None

    @property
    def models(self) -> list[str]:
        """Every priced model name, sorted."""
        return sorted(self._prices)

    def price_of(self, model: str) -> ModelPrice | None:
        """The price of ``model`` (exact name, router-prefixed name or dated snapshot)."""
        for name in dict.fromkeys((model, model.rsplit("/", 1)[-1])):
            if name in self._prices:
                return self._prices[name]
            base = _SNAPSHOT.sub("", name)
            if base != name and base in self._prices:
                return self._prices[base]
        return None

    def for_call(self, provider_type: str, model: str) -> ModelPrice | None:
        """The price of ``model`` served by a provider of ``provider_type`` (local ones are free)."""
        if provider_type in LOCAL_PROVIDER_TYPES:
            return FREE
        return self.price_of(model)


def price_table(config: Any) -> PriceTable:
    """The shipped table with the config's ``[prices]`` and ``[plugins.usage].prices`` applied.

    Raises :class:`ConfigError` naming the key for a negative, absurd or misspelt ``[prices]``
    entry (``[config.prices]`` is validated with the rest of the config already).
    """
    overrides: dict[str, ModelPrice] = {}
    legacy = config.plugins.settings("usage").get("prices") or {}
    for model, raw in legacy.items() if isinstance(legacy, dict) else ():
        # the older section stays as forgiving as it was: a bad entry is skipped here and
        # reported by the usage plugin at start-up (and a budget refuses an unpriced model)
        try:
            overrides[model] = PriceConfig.model_validate(raw).to_price()
        except (ValidationError, ValueError):
            continue
    for model, value in config.prices.items():
        try:
            overrides[model] = value.to_price()
        except ValueError as exc:
            raise ConfigError(_why(exc), path=config.source, key=f"prices.{model}") from None
    return PriceTable.shipped().with_overrides(overrides)


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
        )
    return str(exc)
