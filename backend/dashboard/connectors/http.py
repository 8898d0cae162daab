"""HTTPConnector: a project's baton-agent, through one shared async HTTP client.

Every call is bounded by the project's timeout as a whole (connect, send, wait, read), so a
hanging agent costs at most that. Anything but a proper answer (refused connection, timeout,
5xx, not JSON, a wrong shape) makes the project unavailable with the reason; an agent's own
4xx error is passed on unchanged.

Once an agent has failed, calls answer "unavailable" at once instead of waiting for it again,
while one background probe at a time asks whether it is back (a circuit breaker): one dead
agent never slows the board down more than once.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ...config import resolve_secret
from ...models import STATUSES
from ...web.sse import sse_event
from ..config import ProjectConfig
from .base import AgentError, Connector, Unavailable, unavailable_overview


MAX_ANSWER_BYTES = 64 * 1024 * 1024
_TASK_KEYS = ("id", "title", "status", "created_at", "updated_at")


class HTTPConnector(Connector):
    mode = "http"

    def __init__(self, project: ProjectConfig, client: httpx.AsyncClient, timeout: float) -> None:
        super().__init__(project)
        self.client = client
        self.timeout = timeout
        self.base = project.agent_url or ""
        token = resolve_secret(project.token)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._down: str | None = None  # why the agent is considered down, while it is
        self._down_path = "/agent/health"  # what failed: the probe asks exactly that again
        self._probe: asyncio.Task | None = None

    # ----- calls, with the circuit breaker -----------------------------------------------

    async def _call(self, method: str, path: str, *, body: Any = None, params: dict | None = None) -> Any:
        if self._down is not None:
            self._start_probe()
            raise Unavailable(f"{self._down} (checking again in the background)")
        try:
            return await self._request(method, path, body=body, params=params)
        except Unavailable as exc:
            self._down, self._down_path = str(exc), (path if method == "GET" else "/agent/health")
            raise

    def _start_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._check_back())

    async def _check_back(self) -> None:
        try:
            await self._request("GET", self._down_path)
        except (Unavailable, AgentError):
            await asyncio.sleep(min(self.timeout, 1.0))  # at most one probe a second while it stays down
            return
        self._down = None

    async def _request(self, method: str, path: str, *, body: Any = None, params: dict | None = None) -> Any:
        """One bounded request: the whole exchange within the timeout, the answer within
        MAX_ANSWER_BYTES, parsed off the event loop when it is large."""
        try:
            async with asyncio.timeout(self.timeout):
                request = self.client.build_request(method, self.base + path, json=body, params=params,
                                                    headers=self.headers)
                resp = await self.client.send(request, stream=True)
                try:
                    raw = await _read_capped(resp)
                finally:
                    await resp.aclose()
        except TimeoutError:
            raise Unavailable(f"no answer from {self.base} within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.base}: {type(exc).__name__}") from None
        try:
            data = json.loads(raw) if len(raw) < 1 << 20 else await asyncio.to_thread(json.loads, raw)
        except ValueError:
            raise Unavailable(f"{self.base} answered HTTP {resp.status_code} with something that is not JSON") from None
        if 200 <= resp.status_code < 300:
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if resp.status_code in (401, 403):
            raise Unavailable(f"{self.base} refused the dashboard ({resp.status_code}): check the project's token")
        if 400 <= resp.status_code < 500 and isinstance(error, dict) and "code" in error:
            raise AgentError(resp.status_code, data)
        message = error.get("message") if isinstance(error, dict) else ""
        raise Unavailable(f"{self.base} failed with HTTP {resp.status_code}" + (f": {message}" if message else ""))

    @staticmethod
    def _expect(data: Any, keys: tuple[str, ...], what: str) -> Any:
        if not isinstance(data, dict) or any(k not in data for k in keys):
            raise Unavailable(f"unexpected answer for {what}")
        return data

    # ----- the interface -----------------------------------------------------------------

    async def health(self) -> dict:
        data = self._expect(await self._call("GET", "/agent/health"), ("status", "version"), "health")
        if data["status"] != "ok":
            raise Unavailable(f"agent reports status {data['status']!r}")
        return data

    async def overview(self) -> dict[str, Any]:
        # Both questions at once: the slowest of the two, not their sum.
        try:
            health, dispatcher = await asyncio.gather(self.health(), self.dispatcher())
        except (Unavailable, AgentError) as exc:
            return unavailable_overview(exc)
        return {"healthy": True, "reason": None, "health": health, "dispatcher": dispatcher,
                "counts": dispatcher.get("counts")}

    async def dispatcher(self) -> dict:
        return self._expect(await self._call("GET", "/agent/dispatcher"), ("state", "workers"), "dispatcher")

    async def dispatcher_action(self, action: str, force: bool) -> dict:
        params = {"force": "true"} if force else None
        return self._expect(await self._call("POST", f"/agent/dispatcher/{q(action)}", params=params),
                            ("state",), "dispatcher")

    async def tasks(self) -> Any:
        data = self._expect(await self._call("GET", "/agent/tasks"), STATUSES, "tasks")
        for status in STATUSES:
            items = data[status]
            if not isinstance(items, list) or not all(
                isinstance(t, dict) and all(isinstance(t.get(k), str) for k in _TASK_KEYS) for t in items
            ):
                raise Unavailable(f"unexpected answer for tasks: a {status} entry is not a task")
        return data

    async def task(self, status: str, filename: str) -> dict:
        return self._expect(await self._call("GET", f"/agent/tasks/{q(status)}/{q(filename)}"), ("id",), "task")

    async def create(self, body: dict) -> dict:
        return self._expect(await self._call("POST", "/agent/tasks", body=body), ("id",), "new task")

    async def bulk(self, body: dict) -> dict:
        return self._expect(await self._call("POST", "/agent/tasks/bulk", body=body), ("tasks",), "new tasks")

    async def rerun(self, task_id: str) -> dict:
        return self._expect(await self._call("POST", f"/agent/tasks/{q(task_id)}/rerun"), ("id",), "task")

    async def cancel(self, task_id: str) -> dict:
        return self._expect(await self._call("POST", f"/agent/tasks/{q(task_id)}/cancel"), ("id",), "task")

    async def events(self, task_id: str, after: int, limit: int) -> dict:
        return self._expect(await self._call("GET", f"/agent/tasks/{q(task_id)}/events",
                                             params={"after": after, "limit": limit}), ("events",), "events")

    async def worktrees(self) -> dict:
        return self._expect(await self._call("GET", "/agent/worktrees"), ("worktrees",), "worktrees")

    async def commits(self, count: int) -> dict:
        return self._expect(await self._call("GET", "/agent/commits", params={"count": count}), ("commits",), "commits")

    async def open_stream(self, task_id: str, after: int) -> AsyncIterator[bytes]:
        """Relay the agent's Server-Sent Events. Connecting and the agent's answer are bounded
        by the timeout (and the breaker); once streaming, silence is fine."""
        if self._down is not None:
            self._start_probe()
            raise Unavailable(f"{self._down} (checking again in the background)")
        request = self.client.build_request("GET", f"{self.base}/agent/tasks/{q(task_id)}/stream",
                                            headers={**self.headers, "Last-Event-ID": str(after)},
                                            timeout=httpx.Timeout(self.timeout, read=None))
        try:
            async with asyncio.timeout(self.timeout):
                resp = await self.client.send(request, stream=True)
        except TimeoutError:
            self._down = f"no answer from {self.base} within {self.timeout:g}s"
            raise Unavailable(self._down) from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.base}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            try:
                raw = await _read_capped(resp)
            finally:
                await resp.aclose()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("error"), dict) and 400 <= resp.status_code < 500:
                raise AgentError(resp.status_code, body)
            raise Unavailable(f"{self.base} answered the stream with HTTP {resp.status_code}")
        return self._relay(resp)

    async def _relay(self, resp: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            yield sse_event("gone", {"message": f"lost the agent's stream: {type(exc).__name__}"}).encode()
        finally:
            await resp.aclose()


def q(segment: str) -> str:
    """One URL path segment, whatever it contains (never a `/` or `..` of its own)."""
    return quote(segment, safe="")


async def _read_capped(resp: httpx.Response) -> bytes:
    chunks, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise Unavailable(f"answer larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MB")
        chunks.append(chunk)
    return b"".join(chunks)
