"""Shared by the chat tests: a real dashboard (uvicorn) over a real agent, the stand-in Messages
API as the model, and helpers that speak the chat's Server-Sent Events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx

from backend.web.sse import SSEParser
from fakes.messages_standin import MessagesStandIn

KEY = "sk-ant-test-0123456789-do-not-leak"
KEY_ENV = "BATON_TEST_CHAT_KEY"


@dataclass
class ChatWorld:
    client: httpx.Client
    api: MessagesStandIn
    agent: object
    chats_dir: Path
    project: str = "alpha"

    def url(self, *parts: str) -> str:
        return "/".join([f"/api/projects/{self.project}/chats", *parts]).rstrip("/")

    def new_chat(self, title: str | None = None) -> str:
        resp = self.client.post(self.url(), json={"title": title} if title else {})
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]

    def send(self, chat_id: str, text: str, attachments: list[str] | None = None) -> list[tuple[str, dict]]:
        """Send a message; every event of the answer's stream, in order."""
        body = {"text": text, **({"attachments": attachments} if attachments else {})}
        with self.client.stream("POST", self.url(chat_id, "messages"), json=body) as resp:
            assert resp.status_code == 200, resp.read().decode()
            assert resp.headers["content-type"].startswith("text/event-stream")
            return read_events(resp)

    def chat(self, chat_id: str) -> dict:
        resp = self.client.get(self.url(chat_id))
        assert resp.status_code == 200, resp.text
        return resp.json()


class EventReader:
    """Events of an open answer stream, read as far as a test needs, then on."""

    def __init__(self, resp: httpx.Response) -> None:
        self._chunks = resp.iter_text()
        self._parser = SSEParser()
        self._ready: list[tuple[str, dict]] = []

    def __iter__(self):
        while True:
            while self._ready:
                yield self._ready.pop(0)
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return
            self._ready += [(name, json.loads(raw)) for name, raw, _ in self._parser.feed(chunk) if name]

    def until(self, name: str) -> list[tuple[str, dict]]:
        """Every event up to and including the first `name` (AssertionError if the stream ends first)."""
        seen = []
        for event in self:
            seen.append(event)
            if event[0] == name:
                return seen
        raise AssertionError(f"the stream ended without a {name!r} event: {seen}")

    def rest(self) -> list[tuple[str, dict]]:
        return list(self)


def read_events(resp: httpx.Response) -> list[tuple[str, dict]]:
    return EventReader(resp).rest()


def chat_config(api_url: str, chats_dir: Path, **more) -> dict:
    return {"base_url": api_url, "api_key_env": KEY_ENV, "dir": str(chats_dir), "max_retries": 0,
            "timeout_seconds": 30, **more}
