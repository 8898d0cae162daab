"""projects.yaml `chat:` — which model answers, where its key comes from, where conversations
are kept, and what tokens cost.

    chat:
      model: claude-sonnet-5-5
      api_key_env: ANTHROPIC_API_KEY   # the variable's NAME; the key is read at each request
      base_url: null                   # null: the SDK's default (which honours $ANTHROPIC_BASE_URL)
      max_tokens: 4096                 # per answer
      plan_max_tokens: 16384           # per plan (a plan of many tasks is long)
      max_retries: 2                   # the SDK's retries of 429/5xx before an answer starts
      timeout_seconds: 120             # the longest silence from the API
      dir: null                        # null: data/chats beside the config file's folder
      prices:                          # USD per million tokens; merged over the defaults below
        claude-sonnet-5-5: {input: 2, output: 10}

The key itself is never part of the configuration: it is never logged, stored or sent to the
browser. Without it the chat says how to enable it and everything else works.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")

# USD per million tokens (input, output): Anthropic's list prices (November 2026) of the models
# the SDK names. A dated id (claude-haiku-4-5-20251001) takes the price of its name; a model
# not listed (or priced by tier, like claude-haiku-5-5) has no cost shown until `prices` names it.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "claude-fable-5-1": (10.0, 50.0),
    "claude-fable-5": (10.0, 50.0),
    "claude-mythos-5": (10.0, 50.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-opus-4-8": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4-0": (15.0, 75.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-0": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
}
# The SDK warns that claude-sonnet-4-5 reaches end-of-life on 2026-11-30: the current Sonnet.
DEFAULT_MODEL = "claude-sonnet-5-5"
_DATED = re.compile(r"(.+)-\d{8}")


def _float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    input: float = Field(ge=0, le=10_000)
    output: float = Field(ge=0, le=10_000)

    @field_validator("input", "output", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return _float(value)


class ChatConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = DEFAULT_MODEL
    api_key_env: str = "ANTHROPIC_API_KEY"
    base_url: str | None = None
    max_tokens: int = Field(default=4096, ge=1, le=128_000)
    plan_max_tokens: int = Field(default=16_384, ge=256, le=128_000)
    max_retries: int = Field(default=2, ge=0, le=10)
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    dir: str | None = None
    prices: dict[str, Price] = Field(default_factory=dict)

    @field_validator("timeout_seconds", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return _float(value)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not _MODEL_RE.fullmatch(value):
            raise ValueError("must be a model name such as claude-sonnet-5-5")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _key_env(cls, value: str) -> str:
        if not _ENV_NAME_RE.fullmatch(value):
            raise ValueError("must be the name of an environment variable (letters, digits, _), not the key")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", value):
            raise ValueError("must be an http(s) URL such as https://api.anthropic.com (no credentials)")
        return value.rstrip("/") if value else value

    @field_validator("dir")
    @classmethod
    def _dir(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\0" in value):
            raise ValueError("must be a folder path")
        return value

    @field_validator("prices")
    @classmethod
    def _price_names(cls, value: dict[str, Price]) -> dict[str, Price]:
        for name in value:
            if not _MODEL_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a model name")
        return value

    def with_dir(self, config_file: Path | None) -> ChatConfig:
        """`dir` made absolute: relative to the config file's folder; unset -> data/chats beside
        that folder (config/projects.yaml -> data/chats). Without a file it stays unset (the
        dashboard then keeps chats in a temporary folder)."""
        if config_file is None:
            return self
        base = config_file.parent
        folder = Path(self.dir).expanduser() if self.dir else base.parent / "data" / "chats"
        if not folder.is_absolute():
            folder = base / folder
        return self.model_copy(update={"dir": str(folder)})

    def api_key(self) -> str | None:
        """The key, read now (it may be set or changed while the dashboard runs)."""
        return os.environ.get(self.api_key_env) or None

    def hint(self) -> str:
        return (f"The chat needs an Anthropic API key: start baton-dashboard with the environment variable "
                f"{self.api_key_env} set to it (`chat.api_key_env` in projects.yaml names another variable). "
                "The key is never stored or shown.")

    def price(self, model: str) -> Price | None:
        """The price of `model`: configured over defaults; a dated id (`<name>-YYYYMMDD`) not
        listed itself takes its name's."""
        table = {name: Price(input=i, output=o) for name, (i, o) in DEFAULT_PRICES.items()}
        table.update(self.prices)
        if model in table:
            return table[model]
        dated = _DATED.fullmatch(model)
        return table.get(dated.group(1)) if dated else None

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """USD for this usage, or None when the model's price is unknown."""
        price = self.price(model)
        if price is None:
            return None
        return round((input_tokens * price.input + output_tokens * price.output) / 1_000_000, 6)
