"""Text helpers every runtime's parser uses to keep events short (the raw log keeps it all)."""

from __future__ import annotations

import json
from typing import Any

SUMMARY_CHARS = 200  # a tool call's input, a command
OUTPUT_CHARS = 500  # a tool's output, an error


def clip(text: str, limit: int = SUMMARY_CHARS) -> str:
    """One line of at most `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize_input(value: Any, keys: tuple[str, ...]) -> str:
    """A tool call's input in short: the first of `keys` (the fields that say most, in the
    CLI's own names) that holds text, else the whole input as JSON."""
    if isinstance(value, dict):
        for key in keys:
            if isinstance(value.get(key), str):
                return clip(value[key])
        return clip(json.dumps(value, ensure_ascii=False, sort_keys=True))
    return clip(str(value))
