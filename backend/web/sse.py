"""Server-Sent Events framing, one place for every stream Baton serves."""

from __future__ import annotations

import json
from typing import Any


def sse_event(name: str, data: Any, event_id: int | str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data)}\n\n"
