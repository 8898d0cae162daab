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
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ...config import resolve_secret
from ...models import STATUSES
from ...web.sse import sse_event
from ..config import ProjectConfig
from .base import AgentError, Connector, Unavailable


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
        self._probe: asyncio.Task | None = None

    async def _call(self, method: str, path: str, *, body: Any = None, params: dict | None = None) -> Any:
        if self._down is not None:
            self._start_probe()
            raise Unavailable(f"{self._down} (checking again in the background)")
        try:
            return await self._request(method, path, body=body, params=params)
        except Unavailable as exc:
            self._down = str(exc)
            raise

    def _start_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._check_back())

    async def _check_back(self) -> None:
        try:
            await self._request("GET", "/agent/health")
        except (Unavailable, AgentError):
            await asyncio.sleep(min(self.timeout, 1.0))  # at most one probe a second while it stays down
            return
        self._down = None

    async def _request(self, method: str, path: str, *, body: Any = None, params: dict | None = None) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                resp = await self.client.request(method, self.base + path, json=body, params=params,
                                                 headers=self.headers, timeout=self.timeout)
        except TimeoutError:
            raise Unavailable(f"no answer from {self.base} within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.base}: {type(exc).__name__}") from None
        try:
            data = resp.json()
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

    async def health(self) -> dict:
        data = self._expect(await self._call("GET", "/agent/health"), ("status", "version"), "health")
        if data["status"] != "ok":
            raise Unavailable(f"agent reports status {data['status']!r}")
        return data

    async def overview(self) -> dict[str, Any]:
        # Both questions at once: the slowest of the two, not their sum.
        try:
            health, dispatcher = await asyncio.gather(self.health(), self.dispatcher())
        except Unavailable as exc:
            return {"healthy": False, "reason": str(exc), "health": None, "dispatcher": None, "counts": None}
        return {"healthy": True, "reason": None, "health": health, "dispatcher": dispatcher,
                "counts": dispatcher.get("counts")}

    async def dispatcher(self) -> dict:
        return self._expect(await self._call("GET", "/agent/dispatcher"), ("state", "workers"), "dispatcher")

    async def dispatcher_action(self, action: str, force: bool) -> dict:
        params = {"force": "true"} if force else None
        return self._expect(await self._call("POST", f"/agent/dispatcher/{action}", params=params),
                            ("state",), "dispatcher")

    async def tasks(self) -> Any:
        return self._expect(await self._call("GET", "/agent/tasks"), STATUSES, "tasks")

    async def task(self, status: str, filename: str) -> dict:
        return self._expect(await self._call("GET", f"/agent/tasks/{status}/{filename}"), ("id",), "task")

    async def create(self, body: dict) -> dict:
        return self._expect(await self._call("POST", "/agent/tasks", body=body), ("id",), "new task")

    async def bulk(self, body: dict) -> dict:
        return self._expect(await self._call("POST", "/agent/tasks/bulk", body=body), ("tasks",), "new tasks")

    async def rerun(self, task_id: str) -> dict:
        return self._expect(await self._call("POST", f"/agent/tasks/{task_id}/rerun"), ("id",), "task")

    async def cancel(self, task_id: str) -> dict:
        return self._expect(await self._call("POST", f"/agent/tasks/{task_id}/cancel"), ("id",), "task")

    async def events(self, task_id: str, after: int, limit: int) -> dict:
        return self._expect(await self._call("GET", f"/agent/tasks/{task_id}/events",
                                             params={"after": after, "limit": limit}), ("events",), "events")

    async def worktrees(self) -> dict:
        return self._expect(await self._call("GET", "/agent/worktrees"), ("worktrees",), "worktrees")

    async def commits(self, count: int) -> dict:
        return self._expect(await self._call("GET", "/agent/commits", params={"count": count}), ("commits",), "commits")

    async def stream(self, task_id: str, after: int) -> AsyncIterator[bytes]:
        """Relay the agent's Server-Sent Events; if the agent goes away, say so and end."""
        headers = {**self.headers, "Last-Event-ID": str(after)}
        timeout = httpx.Timeout(self.timeout, read=None)  # an idle stream is fine, a dead agent is not
        try:
            async with self.client.stream("GET", f"{self.base}/agent/tasks/{task_id}/stream",
                                          headers=headers, timeout=timeout) as resp:
                if resp.status_code != 200:
                    body = await resp.aread()
                    detail = body[:300].decode("utf-8", "replace")
                    yield sse_event("error", {"message": f"agent answered HTTP {resp.status_code}: {detail}"}).encode()
                    return
                async for chunk in resp.aiter_raw():
                    yield chunk
        except httpx.HTTPError as exc:
            yield sse_event("error", {"message": f"lost the agent's stream: {type(exc).__name__}"}).encode()
