"""Jira Cloud, over REST v3 (PROTOCOLS.md "Jira").

Basic auth with email:api_token. Searches go to `POST /rest/api/3/search/jql` (token
pagination; `fields` always named, or only ids come back), always bounded by the project.
Rich text is ADF both ways (jira/adf.py). Moving an issue means taking one of the transitions
Jira offers from its current status, matched on the status it leads `to`, not its own name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from ...sources.config import SourceConfig
from ..base import (AuthError, BadQuery, CallCounter, Comment, Issue, NotFound, ServerError, TrackerError,
                    WorkflowState)
from ..http import Sleep, TrackerHttp
from .adf import adf_to_text, text_to_adf

PAGE = 100
MAX_PAGES = 1000
FIELDS = ["summary", "description", "status", "priority", "labels", "updated"]
PRIORITIES = {"highest": 1, "high": 2, "medium": 3, "low": 4, "lowest": 4}
API = "/rest/api/3"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    """Jira's own words: {"errorMessages": [...], "errors": {field: message}}."""
    body = _json(response)
    if not isinstance(body, dict):
        return ""
    listed = body.get("errorMessages")
    messages = [str(m) for m in listed if m] if isinstance(listed, list) else []
    errors = body.get("errors")
    if isinstance(errors, dict):
        messages += [f"{field}: {message}" for field, message in errors.items()]
    return "; ".join(messages)[:300]


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    for parse in (lambda v: datetime.strptime(v, "%Y-%m-%dT%H:%M:%S.%f%z"), datetime.fromisoformat):
        try:
            return parse(value)
        except ValueError:
            continue
    return None


def _quoted(value: str) -> str:
    """A JQL string literal (the configuration already refuses quotes; this is the belt)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _oldest_first(comment: Comment) -> float:
    return comment.created_at.timestamp() if comment.created_at else float("inf")


class JiraTracker:
    kind = "jira"

    def __init__(self, config: SourceConfig, credential: dict[str, str], *,
                 transport: httpx.AsyncBaseTransport | None = None, max_wait: float = 60.0,
                 sleep: Sleep = asyncio.sleep, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.counter = CallCounter()
        self.base_url = config.url
        email = (credential.get("email") or "").strip()
        token = (credential.get("api_token") or "").strip()
        self._token_name = (config.api_token or "api_token").lstrip("$")
        unset = [ref.lstrip("$") if ref and ref.startswith("$") else field
                 for field, ref, value in (("email", config.email, email), ("api_token", config.api_token, token))
                 if not value]
        missing = (f"Jira: no credentials: the environment variable{'s' if len(unset) > 1 else ''} "
                   f"{' and '.join(unset)} {'are' if len(unset) > 1 else 'is'} not set") if unset else None
        self._http = TrackerHttp(
            name="Jira", base_url=self.base_url, counter=self.counter, secrets=(token,), missing=missing,
            auth=httpx.BasicAuth(email, token) if not unset else None, error_text=_error_text,
            transport=transport, max_wait=max_wait, sleep=sleep, clock=clock)

    @property
    def rate_limits(self) -> dict | None:
        """The latest rate-limit facts the tracker sent (headers or a limited answer), if any."""
        return self._http.rate_limits

    async def aclose(self) -> None:
        await self._http.aclose()

    # ----- reading issues ----------------------------------------------------------------

    def jql(self, states: list[str]) -> str:
        wanted = self.config.filter
        parts = [f"project = {_quoted(wanted.project or '')}",
                 f"status IN ({','.join(_quoted(s) for s in states)})"]
        if wanted.labels:
            parts.append(f"labels IN ({','.join(_quoted(label) for label in wanted.labels)})")
        if wanted.jql:
            parts.append(f"({wanted.jql})")
        return " AND ".join(parts) + " ORDER BY created ASC"

    async def active_issues(self, states: list[str]) -> list[Issue]:
        if not states:
            return []
        body: dict[str, Any] = {"jql": self.jql(states), "fields": FIELDS, "maxResults": PAGE}
        issues: list[Issue] = []
        seen_tokens: set[str] = set()
        for _ in range(MAX_PAGES):
            page = await self._call("active_issues", "POST", f"{API}/search/jql", json=body)
            token = self._parse("active_issues", lambda: page.get("nextPageToken"))
            issues += self._parse("active_issues", lambda: [self._issue(node) for node in page["issues"]])
            if page.get("isLast", not token) or not token or token in seen_tokens:
                return issues
            seen_tokens.add(token)
            body = {**body, "nextPageToken": token}
        raise ServerError(f"Jira kept answering more pages of the search after {MAX_PAGES}")

    async def issues_by_ids(self, ids: list[str]) -> list[Issue]:
        unique = list(dict.fromkeys(ids))
        found: list[Issue] = []
        for start in range(0, len(unique), PAGE):
            page = await self._call("issues_by_ids", "POST", f"{API}/issue/bulkfetch",
                                    json={"issueIdsOrKeys": unique[start:start + PAGE], "fields": FIELDS})
            # issueErrors lists the ids Jira does not know (or we may not see): left out.
            found += self._parse("issues_by_ids", lambda: [self._issue(node) for node in page["issues"]])
        return found

    async def get_issue(self, issue_id: str) -> Issue:
        node = await self._call("get_issue", "GET", f"{API}/issue/{quote(issue_id, safe='')}",
                                params={"fields": ",".join(FIELDS)}, missing=issue_id)
        return self._parse("get_issue", lambda: self._issue(node))

    async def workflow_states(self) -> list[WorkflowState]:
        project = quote(self.config.filter.project or "", safe="")
        types = await self._call("workflow_states", "GET", f"{API}/project/{project}/statuses")
        states: dict[str, WorkflowState] = {}

        def read() -> None:
            for issue_type in types:  # each issue type lists its statuses: the same status repeats
                for status in issue_type["statuses"]:
                    category = status.get("statusCategory")
                    states.setdefault(str(status["id"]), WorkflowState(
                        id=str(status["id"]), name=str(status["name"]),
                        type=category.get("key") if isinstance(category, dict) else None))
        self._parse("workflow_states", read)
        return list(states.values())

    # ----- writing ------------------------------------------------------------------------------

    async def move(self, issue: Issue, state_name: str) -> Issue:
        if issue.state.casefold() == state_name.casefold():
            return issue
        path = f"{API}/issue/{quote(issue.id, safe='')}/transitions"
        answer = await self._call("transitions", "GET", path, missing=issue.id)
        # (transition id, the status it leads to, that status's category)
        transitions = self._parse("transitions", lambda: [
            (str(t["id"]), str(t["to"]["name"]), (t["to"].get("statusCategory") or {}).get("key"))
            for t in answer["transitions"]])
        target = state_name.casefold()
        chosen = next((t for t in transitions if t[1].casefold() == target), None)
        if chosen is None:
            current = await self.get_issue(issue.id)  # ours may be stale: is it there already?
            if current.state.casefold() == target:
                return current
            available = ", ".join(to for _, to, _ in transitions) or "none"
            raise NotFound(f"Jira: {issue.identifier} has no transition to {state_name!r} "
                           f"from {current.state!r} (available: {available})")
        transition_id, to, category = chosen
        await self._call("move", "POST", path, json={"transition": {"id": transition_id}},
                         missing=issue.id, idempotent=False)
        return dataclasses.replace(issue, state=to, state_type=category or issue.state_type)

    async def comments(self, issue_id: str) -> list[Comment]:
        path = f"{API}/issue/{quote(issue_id, safe='')}/comment"
        found: list[Comment] = []
        start = 0
        for _ in range(MAX_PAGES):
            page = await self._call("comments", "GET", path, params={"startAt": start, "maxResults": PAGE},
                                    missing=issue_id)
            batch = self._parse("comments", lambda: [self._comment(node) for node in page["comments"]])
            found += batch
            start += len(batch)
            total = page.get("total")
            if not batch or not isinstance(total, int) or start >= total:
                return sorted(found, key=_oldest_first)
        raise ServerError(f"Jira kept answering more pages of comments after {MAX_PAGES}")

    async def add_comment(self, issue_id: str, body: str) -> Comment:
        node = await self._call("add_comment", "POST", f"{API}/issue/{quote(issue_id, safe='')}/comment",
                                json={"body": text_to_adf(body)}, missing=issue_id, idempotent=False)
        return self._parse("add_comment", lambda: self._comment(node))

    # ----- the wire -------------------------------------------------------------------------------

    async def _call(self, operation: str, method: str, path: str, *, json: Any = None,
                    params: dict[str, Any] | None = None, missing: str | None = None,
                    idempotent: bool = True) -> Any:
        """The answer's JSON (None for 204), or the typed error. `missing`: the issue a 404 is about."""
        response = await self._http.send(operation, method, self.base_url + path, json=json, params=params,
                                          idempotent=idempotent)
        status = response.status_code
        detail = self._http.scrub(_error_text(response))
        said = f": {detail}" if detail else ""
        if status == 401:
            raise AuthError(f"Jira refused the email and API token in {self._token_name}{said}")
        if status == 403:
            raise AuthError(f"Jira does not allow {operation} with these credentials{said}")
        if status == 404:
            raise NotFound(f"Jira has no issue {missing!r} (or these credentials cannot see it){said}"
                           if missing else f"Jira: not found ({operation}){said}")
        if status >= 400:
            raise BadQuery(f"Jira refused {operation} ({status}){said}")
        if status == 204 or not response.content:
            return None
        body = _json(response)
        if body is None:
            raise ServerError(f"Jira answered {operation} with something that is not JSON")
        return body

    def _parse(self, operation: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except TrackerError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError):
            raise ServerError(f"Jira answered {operation} in an unexpected shape") from None

    def _issue(self, node: dict) -> Issue:
        fields = node["fields"]
        status = fields["status"]
        category = status.get("statusCategory")
        priority = fields.get("priority")
        name = priority.get("name") if isinstance(priority, dict) else None
        description = fields.get("description")
        key = str(node["key"])
        return Issue(
            id=str(node["id"]), identifier=key, title=str(fields.get("summary") or ""),
            description=adf_to_text(description) if description else "",
            url=f"{self.base_url}/browse/{key}",
            state=str(status["name"]), state_type=category.get("key") if isinstance(category, dict) else None,
            priority=PRIORITIES.get(name.casefold()) if isinstance(name, str) else None,
            labels=tuple(str(label) for label in fields.get("labels") or []),
            updated_at=_time(fields.get("updated")))

    @staticmethod
    def _comment(node: dict) -> Comment:
        body = node.get("body")
        return Comment(id=str(node["id"]), body=adf_to_text(body) if body else "",
                       created_at=_time(node.get("created")))
