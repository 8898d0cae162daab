"""The dashboard reads each agent's change stream with backend/web/sse.py: SSEParser, which
follows the WHATWG event-stream rules, whatever way the bytes are cut into chunks."""

from __future__ import annotations

import pytest

from backend.web.sse import SSEParser, sse_event

STREAM = ("id: a.1\r\nevent: changes\r\ndata: {\"x\":\r\ndata:  1}\r\n\r\n"
          ": ka\r\n\r\n"
          "event: state\rdata: two\r\r"
          "data:plain\n\n"
          "event: empty\nid: dropped\n\n"
          "retry: 10\nunknown: field\ndata\n\n")
EXPECTED = [("changes", '{"x":\n 1}', "a.1"), ("", None, None), ("state", "two", None), ("message", "plain", None),
            ("message", "", None)]


def test_fields_comments_and_every_line_ending():
    # Multi-line data joins with \n, one leading space is dropped, CRLF / CR / LF all end a line,
    # a comment is a keep-alive, an event without data is not dispatched, its id not carried on.
    assert SSEParser().feed(STREAM) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_any_chunking_gives_the_same_events(size):
    # A chunk may end between the CR and LF of one line ending: that is still one line end.
    parser = SSEParser()
    got = [item for i in range(0, len(STREAM), size) for item in parser.feed(STREAM[i:i + size])]
    assert got == EXPECTED


def test_reads_what_sse_event_writes():
    text = sse_event("tasks", {"a": "line\nbreak"}, "p:e.3")
    assert SSEParser().feed(text) == [("tasks", '{"a": "line\\nbreak"}', "p:e.3")]


def test_a_line_that_never_ends_is_refused_not_buffered_forever():
    parser = SSEParser(max_buffer=100)
    with pytest.raises(ValueError):
        parser.feed("data: " + "x" * 200)


def test_an_empty_chunk_between_cr_and_lf_is_still_one_line_end():
    # A decoder may hand over an empty piece; the LF after it still belongs to the CR before it,
    # or it would read as a blank line and dispatch the event before its second data line.
    parser = SSEParser()
    got = [item for chunk in ("data: one\r", "", "\ndata: two\n\n") for item in parser.feed(chunk)]
    assert got == [("message", "one\ntwo", None)]
