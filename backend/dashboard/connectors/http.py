"""HTTPConnector: a project's baton-agent, through one shared async HTTP client.

Every call is bounded by the project's timeout as a whole (connect, send, wait, read), so a
hanging agent costs at most that. Anything but a proper answer (refused connection, timeout,
5xx, not JSON, a wrong shape) makes the project unavailable with the reason; an agent's own
4xx error is passed on unchanged.

Once an agent has failed, calls answer "unavailable" at once instead of waiting for it again,
while one background probe at a time asks whether it is back (a circuit breaker): one dead
agent never slows the board down more than once. (A proper error answer, such as 503
store_corrupt, is passed on as the reason but does not trip the breaker: the agent is there.)

The agent must be the configured project: its health names a `project_id`, asked before every
write and alongside every read (concurrent callers share one health request, so a board refresh
asks once). A read whose health names another project (say, an agent that took the port since
the last call) is dropped: nothing of that agent is served under this project's name.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ...attachments import MAX_FILE_BYTES
from ...changefeed import parse_cursor
from ...config import resolve_secret
from ...models import STATUSES
from ...web.sse import SSEParser, sse_event
from ..config import ProjectConfig
from .base import AgentError, ChangeEvent, Connector, Unavailable, health_problems, state_overview, unavailable_overview


MAX_ANSWER_BYTES = 64 * 1024 * 1024
UPLOAD_SECONDS = 600.0  # an attachment upload goes at the browser's pace (attachments block)
STREAM_SILENCE_SECONDS = 50.0  # the agent's change stream sends a keep-alive every 15 s
_TASK_KEYS = ("id", "title", "status", "created_at", "updated_at")
_HEALTH = "/agent/health"


class AgentFailed(Unavailable):
    """The agent answered, with a well-formed 5xx error of its own: not a reason to stop asking."""


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
        self._identity: str | None = None  # why the agent is not this project, while it is not
        self._health_pending: asyncio.Future | None = None  # the health request under way, shared

    @property
    def identity_problem(self) -> str | None:
        return self._identity

    # ----- calls, with the circuit breaker -----------------------------------------------

    async def _call(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                    headers: dict[str, str] | None = None) -> Any:
        if path == _HEALTH:
            return await self._send(method, path, body=body, params=params, headers=headers)
        if method != "GET":
            await self.health()  # a write goes nowhere before the agent said who it is
            return await self._send(method, path, body=body, params=params, headers=headers)
        # A read asks who answers at the same time (no added latency); another project's answer
        # is dropped, however recently this one was confirmed: the port may have changed hands.
        who, answer = await asyncio.gather(self.health(), self._send(method, path, params=params, headers=headers),
                                           return_exceptions=True)
        for result in (who, answer):
            if isinstance(result, BaseException):
                raise result
        return answer

    async def _send(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                    headers: dict[str, str] | None = None) -> Any:
        if self._down is not None:
            self._start_probe()
            raise Unavailable(f"{self._down} (checking again in the background)")
        try:
            return await self._request(method, path, body=body, params=params, headers=headers)
        except AgentFailed:
            raise
        except Unavailable as exc:
            self._down, self._down_path = str(exc), (path if method == "GET" else _HEALTH)
            raise

    async def _health_answer(self) -> Any:
        """GET /agent/health; callers that ask while one is under way share its answer."""
        pending = self._health_pending
        if pending is None:
            pending = self._health_pending = asyncio.ensure_future(self._call("GET", _HEALTH))
            pending.add_done_callback(self._health_done)
        return await asyncio.shield(pending)  # one caller giving up does not cancel the others'

    def _health_done(self, done: asyncio.Future) -> None:
        if self._health_pending is done:
            self._health_pending = None
        if not done.cancelled():
            done.exception()  # marks it retrieved even if every waiter gave up

    def _note_identity(self, health: dict) -> None:
        expected = self.project.expected_project_id
        got = health.get("project_id")
        if got == expected:
            self._identity = None
        else:
            serves = (f"serves project {got!r}" if isinstance(got, str) and got
                      else "does not name its project (no project_id in its health: an older baton-agent?)")
            self._identity = (f"the agent at {self.base} {serves}, not {expected!r} "
                              "(set project_id in its agent.yaml or agent_project_id here)")

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

    async def _request(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                       headers: dict[str, str] | None = None) -> Any:
        """One bounded request: the whole exchange within the timeout, the answer within
        MAX_ANSWER_BYTES, parsed off the event loop when it is large."""
        try:
            async with asyncio.timeout(self.timeout):
                request = self.client.build_request(method, self.base + path, json=body, params=params,
                                                    headers={**self.headers, **(headers or {})})
                resp = await self.client.send(request, stream=True)
                try:
                    raw = await _read_capped(resp)
                finally:
                    await resp.aclose()
        except TimeoutError:
            raise Unavailable(f"no answer from {self.base} within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.base}: {type(exc).__name__}") from None
        if resp.status_code == 204:
            return None  # No Content (a DELETE): nothing to parse
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
        failure = AgentFailed if isinstance(message, str) and message else Unavailable
        raise failure(f"{self.base} failed with HTTP {resp.status_code}" + (f": {message}" if message else ""))

    @staticmethod
    def _expect(data: Any, keys: tuple[str, ...], what: str) -> Any:
        if not isinstance(data, dict) or any(k not in data for k in keys):
            raise Unavailable(f"unexpected answer for {what}")
        return data

    # ----- the interface -----------------------------------------------------------------

    async def health(self) -> dict:
        data = self._expect(await self._health_answer(), ("status", "version"), "health")
        self._note_identity(data)
        if self._identity is not None:
            raise Unavailable(self._identity)
        if data["status"] not in ("ok", "degraded"):  # degraded: still serving, with problems to show
            raise Unavailable(f"agent reports status {data['status']!r}")
        return data

    async def overview(self) -> dict[str, Any]:
        # Both questions at once: the slowest of the two, not their sum.
        try:
            health, dispatcher = await asyncio.gather(self.health(), self.dispatcher())
        except (Unavailable, AgentError) as exc:
            return unavailable_overview(exc)
        return {"healthy": True, "reason": None, "health": health, "dispatcher": dispatcher,
                "counts": dispatcher.get("counts"), "problems": health_problems(health)}

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

    async def changes(self, since: str | None, window: int) -> dict:
        params: dict[str, Any] = {"window": window}
        if since is not None:
            params["since"] = since
        return _checked_changes(await self._call("GET", "/agent/changes", params=params))

    async def board(self, window: int) -> tuple[dict[str, Any], dict | Exception]:
        """One request: the window with the agent's state (health, dispatcher, usage) beside it.
        The health inside names the project, so no separate health request is needed to know
        who answered (at 20 projects, a third of the requests a board read made)."""
        try:
            changes = _checked_changes(await self._send("GET", "/agent/changes",
                                                        params={"window": window, "state": "true"}))
            state = changes.get("state")
            if (not isinstance(state, dict) or not isinstance(state.get("health"), dict)
                    or not isinstance(state.get("dispatcher"), dict)):
                raise Unavailable("unexpected answer for changes: no state (an older baton-agent?)")
            self._note_identity(state["health"])
            if self._identity is not None:
                raise Unavailable(self._identity)
        except (Unavailable, AgentError) as exc:
            # The usual questions then say best why (who answers, whether it is there at all).
            return await self.overview(), exc
        overview = state_overview(state)
        overview.pop("tasks_error")
        return overview, changes

    async def summaries(self, status: str, after: str | None, limit: int, q: str | None) -> dict:
        params: dict[str, Any] = {"status": status, "limit": limit}
        if after is not None:
            params["after"] = after
        if q:
            params["q"] = q
        data = self._expect(await self._call("GET", "/agent/summaries", params=params), ("tasks", "more"), "summaries")
        if not _summaries_ok(data["tasks"]):
            raise Unavailable("unexpected answer for summaries: an entry is not a task summary")
        return data

    async def follow_changes(self, since: str | None, window: int) -> AsyncIterator[ChangeEvent]:
        """The agent's change stream, parsed. Who answers is asked first and again in every
        `state` event: another project's agent ends the stream before anything of it is passed on."""
        await self.health()
        if self._down is not None:
            self._start_probe()
            raise Unavailable(f"{self._down} (checking again in the background)")
        params: dict[str, Any] = {"window": window}
        headers = dict(self.headers)
        if since is not None:
            params["since"] = since
            headers["Last-Event-ID"] = since
        # Silence longer than a few of the agent's keep-alives (15 s) means the connection is gone.
        request = self.client.build_request("GET", f"{self.base}/agent/changes/stream", params=params, headers=headers,
                                            timeout=httpx.Timeout(self.timeout, read=STREAM_SILENCE_SECONDS))
        try:
            async with asyncio.timeout(self.timeout):
                resp = await self.client.send(request, stream=True)
        except TimeoutError:
            raise Unavailable(f"no answer from {self.base} within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.base}: {type(exc).__name__}") from None
        try:
            if resp.status_code in (401, 403):
                raise Unavailable(f"{self.base} refused the dashboard ({resp.status_code}): check the project's token")
            if resp.status_code != 200:
                raise Unavailable(f"{self.base} answered the change stream with HTTP {resp.status_code}")
            parser = SSEParser()
            confirmed = False  # no task of this stream is passed on before its `state` named the project
            try:
                async for text in resp.aiter_text():
                    for event, raw, event_id in parser.feed(text):
                        item = self._change_event(event, raw, event_id)
                        if event == "state":
                            confirmed = True  # _change_event raised if it named another project
                        elif event == "changes" and not confirmed:
                            raise Unavailable(f"{self.base} sent changes before saying which project it serves")
                        yield item
            except httpx.ReadTimeout:
                raise Unavailable(f"no word from {self.base} in {STREAM_SILENCE_SECONDS:g}s on its change stream"
                                  ) from None
            except httpx.HTTPError as exc:
                raise Unavailable(f"lost the agent's change stream: {type(exc).__name__}") from None
            except ValueError as exc:
                raise Unavailable(f"{self.base} sent a broken change stream: {exc}") from None
            raise Unavailable(f"{self.base} ended its change stream")
        finally:
            await resp.aclose()

    def _change_event(self, event: str, raw: str | None, event_id: str | None) -> tuple[str, dict | None, str | None]:
        if event == "":
            return "", None, None
        try:
            data = json.loads(raw or "")
        except ValueError:
            raise Unavailable(f"{self.base} sent a {event!r} event that is not JSON") from None
        if event == "state":
            health = data.get("health") if isinstance(data, dict) else None
            if not isinstance(health, dict) or not isinstance(data.get("dispatcher"), dict):
                raise Unavailable("unexpected state on the agent's change stream")
            self._note_identity(health)
            if self._identity is not None:
                raise Unavailable(self._identity)
        elif event == "changes":
            data = _checked_changes(data)
        return event, data, event_id

    async def runtimes(self) -> dict:
        data = self._expect(await self._call("GET", "/agent/runtimes"), ("default", "runtimes"), "runtimes")
        if not isinstance(data["runtimes"], list) or not all(
                isinstance(r, dict) and isinstance(r.get("name"), str) for r in data["runtimes"]):
            raise Unavailable("unexpected answer for runtimes: an entry is not a runtime")
        return data

    async def create(self, body: dict, idempotency_key: str | None = None) -> dict:
        return self._expect(await self._call("POST", "/agent/tasks", body=body, headers=_key(idempotency_key)),
                            ("id",), "new task")

    async def bulk(self, body: dict, idempotency_key: str | None = None) -> dict:
        return self._expect(await self._call("POST", "/agent/tasks/bulk", body=body, headers=_key(idempotency_key)),
                            ("tasks",), "new tasks")

    async def rerun(self, task_id: str) -> dict:
        return self._expect(await self._call("POST", f"/agent/tasks/{q(task_id)}/rerun"), ("id",), "task")

    async def cancel(self, task_id: str, reason: str | None = None) -> dict:
        body = {"reason": reason} if reason is not None else None  # no body at all without one, as before
        return self._expect(await self._call("POST", f"/agent/tasks/{q(task_id)}/cancel", body=body), ("id",), "task")

    async def source_report(self, task_id: str, body: dict) -> dict:
        data = self._expect(await self._call("POST", f"/agent/tasks/{q(task_id)}/source/reports", body=body),
                            ("granted", "task"), "source report")
        if not isinstance(data["granted"], bool) or not isinstance(data["task"], dict):
            raise Unavailable("unexpected answer for source report")
        return data

    async def workflow_refresh(self) -> dict:
        return self._expect(await self._call("POST", "/api/v1/refresh"), ("queued",), "refresh")

    async def message(self, task_id: str, body: dict) -> dict:
        return self._expect(await self._call("POST", f"/agent/tasks/{q(task_id)}/messages", body=body),
                            ("task", "message", "delivery"), "message")

    async def approve(self, task_id: str, body: dict) -> dict:
        return self._expect(await self._call("POST", f"/agent/tasks/{q(task_id)}/approve", body=body), ("id",), "task")

    async def request_changes(self, task_id: str, body: dict) -> dict:
        return self._expect(await self._call("POST", f"/agent/tasks/{q(task_id)}/request-changes", body=body),
                            ("id",), "task")

    async def reject(self, task_id: str, body: dict) -> dict:
        return self._expect(await self._call("POST", f"/agent/tasks/{q(task_id)}/reject", body=body), ("id",), "task")

    async def diff(self, task_id: str, context: int) -> dict:
        return self._expect(await self._call("GET", f"/agent/tasks/{q(task_id)}/diff", params={"context": context}),
                            ("files", "stats"), "diff")

    async def refresh_pr(self, task_id: str) -> dict:
        return self._expect(await self._call("POST", f"/agent/tasks/{q(task_id)}/pr/refresh"), ("id",), "task")

    async def events(self, task_id: str, after: int, limit: int) -> dict:
        return self._expect(await self._call("GET", f"/agent/tasks/{q(task_id)}/events",
                                             params={"after": after, "limit": limit}), ("events",), "events")

    async def worktrees(self) -> dict:
        return self._expect(await self._call("GET", "/agent/worktrees"), ("worktrees",), "worktrees")

    async def commits(self, count: int) -> list:
        data = await self._call("GET", "/agent/commits", params={"count": count})
        if not isinstance(data, list) or not all(isinstance(c, dict) and "sha" in c for c in data):
            raise Unavailable("unexpected answer for commits")
        return data

    # ----- chat -----
    async def context(self) -> dict:
        return self._expect(await self._call("GET", "/agent/context"),
                            ("project_id", "tree", "commits", "open_tasks"), "context")

    # ----- plans -----
    def _plan(self, data: Any) -> dict:
        return self._expect(data, ("id", "state", "revision", "tasks", "task_status"), "plan")

    async def list_plans(self) -> dict:
        data = self._expect(await self._call("GET", "/agent/plans"), ("plans", "invalid"), "plans")
        if not isinstance(data["plans"], list) or not isinstance(data["invalid"], list):
            raise Unavailable("unexpected answer for plans")
        return data

    async def create_plan(self, body: dict) -> dict:
        return self._plan(await self._call("POST", "/agent/plans", body=body))

    async def get_plan(self, plan_id: str) -> dict:
        return self._plan(await self._call("GET", f"/agent/plans/{q(plan_id)}"))

    async def update_plan(self, plan_id: str, body: dict) -> dict:
        return self._plan(await self._call("PUT", f"/agent/plans/{q(plan_id)}", body=body))

    async def approve_plan(self, plan_id: str, body: dict) -> dict:
        return self._plan(await self._call("POST", f"/agent/plans/{q(plan_id)}/approve", body=body))

    async def reopen_plan(self, plan_id: str) -> dict:
        return self._plan(await self._call("POST", f"/agent/plans/{q(plan_id)}/reopen"))

    async def run_plan(self, plan_id: str, body: dict | None = None) -> dict:
        return self._plan(await self._call("POST", f"/agent/plans/{q(plan_id)}/run", body=body))

    async def delete_plan(self, plan_id: str) -> None:
        await self._call("DELETE", f"/agent/plans/{q(plan_id)}")

    # ----- attachments -----
    async def upload_attachments(self, task_id: str, content_type: str, body: AsyncIterator[bytes]) -> dict:
        """The browser's multipart body passed through to the agent as it arrives (the agent
        checks and caps it). Connecting is bounded by the timeout; the upload itself by
        UPLOAD_SECONDS, since it goes at the browser's pace. A failed upload does not mark the
        agent down (the browser may just have gone)."""
        await self.health()
        url = f"{self.base}/agent/tasks/{q(task_id)}/attachments"
        request = self.client.build_request("POST", url, content=body,
                                            headers={**self.headers, "Content-Type": content_type},
                                            timeout=httpx.Timeout(UPLOAD_SECONDS, connect=self.timeout))
        status, raw = await self._exchange(request, MAX_ANSWER_BYTES)
        return self._expect(self._answer(status, raw), ("attachments",), "attachments")

    async def attachments(self, task_id: str) -> dict:
        return self._expect(await self._call("GET", f"/agent/tasks/{q(task_id)}/attachments"), ("attachments",),
                            "attachments")

    async def attachment_file(self, task_id: str, name: str) -> bytes:
        from ...models import check_attachment_name
        try:
            check_attachment_name(name)  # `.` or `..` would leave the attachments path (see q)
        except ValueError:
            raise AgentError(404, {"error": {"status": 404, "code": "not_found",
                                             "message": f"task {task_id} has no attachment {name[:120]!r}"}}) from None
        await self.health()
        url = f"{self.base}/agent/tasks/{q(task_id)}/attachments/{q(name)}"
        request = self.client.build_request("GET", url, headers=self.headers,
                                            timeout=httpx.Timeout(self.timeout, read=UPLOAD_SECONDS))
        status, raw = await self._exchange(request, MAX_FILE_BYTES + 1)
        if status != 200:
            self._answer(status, raw)  # raises the agent's error
            raise Unavailable(f"{self.base} answered the download with HTTP {status}")
        if len(raw) > MAX_FILE_BYTES:
            raise Unavailable(f"{self.base} sent an attachment larger than {MAX_FILE_BYTES} bytes")
        return raw

    async def _exchange(self, request: httpx.Request, cap: int) -> tuple[int, bytes]:
        """Send, and read at most `cap` bytes of the answer (an error answer is small anyway)."""
        try:
            async with asyncio.timeout(UPLOAD_SECONDS):
                resp = await self.client.send(request, stream=True)
                try:
                    chunks, size = [], 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        chunks.append(chunk)
                        if size > cap:
                            break
                    return resp.status_code, b"".join(chunks)
                finally:
                    await resp.aclose()
        except TimeoutError:
            raise Unavailable(f"no answer from {self.base} within {UPLOAD_SECONDS:g}s") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.base}: {type(exc).__name__}") from None

    def _answer(self, status: int, raw: bytes) -> Any:
        """A JSON answer as _request reads it: the data, the agent's own 4xx, or Unavailable."""
        try:
            data = json.loads(raw)
        except ValueError:
            raise Unavailable(f"{self.base} answered HTTP {status} with something that is not JSON") from None
        if 200 <= status < 300:
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if status in (401, 403):
            raise Unavailable(f"{self.base} refused the dashboard ({status}): check the project's token")
        if 400 <= status < 500 and isinstance(error, dict) and "code" in error:
            raise AgentError(status, data)
        message = error.get("message") if isinstance(error, dict) else ""
        raise Unavailable(f"{self.base} failed with HTTP {status}" + (f": {message}" if message else ""))

    async def open_stream(self, task_id: str, after: int) -> AsyncIterator[bytes]:
        """Relay the agent's Server-Sent Events. Connecting and the agent's answer are bounded
        by the timeout (and the breaker); once streaming, silence is fine."""
        await self.health()  # first: not one event of another project's agent is relayed
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


def _summaries_ok(items: Any) -> bool:
    return isinstance(items, list) and all(
        isinstance(t, dict) and all(isinstance(t.get(k), str) for k in ("id", "status", "sort")) for t in items)


def _checked_changes(data: Any) -> dict:
    """An /agent/changes answer (or `changes` event) of the right shape, or Unavailable."""
    if (not isinstance(data, dict) or not isinstance(data.get("cursor"), str) or not isinstance(data.get("reset"), bool)
            or not _summaries_ok(data.get("tasks")) or not isinstance(data.get("removed", []), list)
            or not all(isinstance(i, str) for i in data.get("removed", []))):
        raise Unavailable("unexpected answer for changes: not a change set")
    try:
        parse_cursor(data["cursor"])  # the relay compares cursors, and sends this one back as `since`
    except ValueError:
        raise Unavailable("unexpected answer for changes: not a change set (its cursor)") from None
    return data


def _key(idempotency_key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}


def q(segment: str) -> str:
    """One URL path segment, its `/`, `?`, `#` and `%` encoded. Not dots: `.` and `..` stay dot
    segments, which httpx resolves, so callers pass only checked values (task ids, attachment
    names: never all dots)."""
    return quote(segment, safe="")


async def _read_capped(resp: httpx.Response) -> bytes:
    chunks, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise Unavailable(f"answer larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MB")
        chunks.append(chunk)
    return b"".join(chunks)
