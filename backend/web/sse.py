"""Server-Sent Events framing, one place for every stream Baton serves."""

from __future__ import annotations

import json
from typing import Any


def sse_event(name: str, data: Any, event_id: int | str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data)}\n\n"


class SSEParser:
    """Reads a Server-Sent Events stream incrementally (WHATWG rules): lines end with CRLF, LF
    or CR (a chunk may split a CRLF), `data:` lines join with newlines, one space after the
    colon is dropped, lines starting with `:` are comments, an event without data is not
    dispatched. `feed()` returns what the chunk completed: (event, data, id) for an event (event
    "message" when unnamed, id None when the event carried none) and ("", None, None) for each
    comment (a keep-alive: the stream is alive)."""

    def __init__(self, max_buffer: int = 16 * 1024 * 1024) -> None:
        self._pending: list[str] = []  # the start of an unfinished line, as it came (joined once it ends)
        self._pending_size = 0
        self._skip_lf = False  # the last chunk ended with CR: a LF starting the next belongs to it
        self._event, self._data, self._id = "", [], None
        self._max = max_buffer

    def feed(self, chunk: str) -> list[tuple[str, str | None, str | None]]:
        if not chunk:
            return []  # keeps a pending CR's claim on the LF that may start the next chunk
        if self._skip_lf and chunk.startswith("\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        if "\n" not in chunk and "\r" not in chunk:
            # Still inside one line: keep the piece; joining on every chunk would make a long
            # line (a reset's window) cost its length squared.
            self._pending.append(chunk)
            self._pending_size += len(chunk)
            self._check_size()
            return []
        text = "".join(self._pending) + chunk
        out: list[tuple[str, str | None, str | None]] = []
        start = 0
        while True:
            cr, lf = text.find("\r", start), text.find("\n", start)
            ends = [i for i in (cr, lf) if i != -1]
            if not ends:
                break
            end = min(ends)
            line = text[start:end]
            if end == cr and end + 1 < len(text) and text[end + 1] == "\n":
                start = end + 2
            else:
                start = end + 1
                if end == cr and end + 1 == len(text):
                    self._skip_lf = True
            self._line(line, out)
        rest = text[start:]
        self._pending, self._pending_size = ([rest] if rest else []), len(rest)
        self._check_size()
        return out

    def _check_size(self) -> None:
        if self._pending_size > self._max:
            raise ValueError(f"an event stream line longer than {self._max} bytes")

    def _line(self, line: str, out: list) -> None:
        if line == "":
            if self._data:
                out.append((self._event or "message", "\n".join(self._data), self._id))
            self._event, self._data, self._id = "", [], None
            return
        if line.startswith(":"):
            out.append(("", None, None))
            return
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
