"""Linear, over its GraphQL API (PROTOCOLS.md "Linear").

A personal API key goes in `Authorization` as it is (no `Bearer`). Linear validates queries
strictly, so every query declares exactly the variables it uses, ids are `String!` (the id
filter's comparator takes `[ID!]`), and filters are built from the configured parts only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from ...sources.config import SourceConfig
from ..base import (AuthError, BadQuery, CallCounter, Comment, Issue, NotFound, ServerError, TrackerError,
                    WorkflowState)
from ..http import Sleep, TrackerHttp

PAGE = 100
MAX_PAGES = 1000  # 100,000 issues: a bound for a tracker that keeps saying "one more page"
ISSUE_FIELDS = ("id identifier title description url priority updatedAt "
                "state { id name type } labels { nodes { name } } team { id key }")
PAGE_INFO = "pageInfo { hasNextPage endCursor }"


class _Shape(Exception):
    """Linear answered, but not in the shape asked for."""


class _UnknownState(NotFound):
    """Linear does not know the state id sent (a workflow edited since its states were read)."""


def _codes(body: Any) -> list[tuple[str, str, str]]:
    """(code, message, what people are told) of each GraphQL error in an answer."""
    errors = body.get("errors") if isinstance(body, dict) else None
    found = []
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            continue
        extensions = error.get("extensions") if isinstance(error.get("extensions"), dict) else {}
        message = str(error.get("message") or "")
        found.append((str(extensions.get("code") or extensions.get("type") or ""), message,
                      str(extensions.get("userPresentableMessage") or message)))
    return found


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _rate_limited(response: httpx.Response) -> bool:
    # Linear says RATELIMITED with HTTP 400 or 429: the code decides, not the status.
    if response.status_code == 429:
        return True
    if response.status_code >= 500:
        return False
    return any(code == "RATELIMITED" for code, _, _ in _codes(_json(response)))


def _error_text(response: httpx.Response) -> str:
    return "; ".join(told for _, _, told in _codes(_json(response)))[:300]


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


class LinearTracker:
    kind = "linear"

    def __init__(self, config: SourceConfig, credential: dict[str, str], *,
                 transport: httpx.AsyncBaseTransport | None = None, max_wait: float = 60.0,
                 sleep: Sleep = asyncio.sleep, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.counter = CallCounter()
        key = (credential.get("api_key") or "").strip()
        self._key_name = (config.api_key or "api_key").lstrip("$")
        missing = None if key else f"Linear: no API key: the environment variable {self._key_name} is not set"
        self._http = TrackerHttp(
            name="Linear", base_url=config.url, counter=self.counter, secrets=(key,), missing=missing,
            headers={"Authorization": key, "Content-Type": "application/json"} if key else {},
            is_rate_limited=_rate_limited, error_text=_error_text,
            transport=transport, max_wait=max_wait, sleep=sleep, clock=clock)
        self._team_of: dict[str, str] = {}  # issue id -> team key, learnt from every issue read
        self._states: dict[str, list[WorkflowState]] = {}  # team key -> its workflow states

    @property
    def rate_limits(self) -> dict | None:
        """The latest rate-limit facts the tracker sent (headers or a limited answer), if any."""
        return self._http.rate_limits

    async def aclose(self) -> None:
        await self._http.aclose()

    # ----- reading issues ----------------------------------------------------------------

    async def active_issues(self, states: list[str]) -> list[Issue]:
        if not states:
            return []
        declared, parts, variables = ["$after: String", "$states: [String!]!"], [], {"states": list(states)}
        wanted = self.config.filter
        if wanted.team:
            declared.append("$team: String!")
            parts.append("team: { key: { eq: $team } }")
            variables["team"] = wanted.team
        if wanted.project:
            declared.append("$project: String!")
            parts.append("project: { slugId: { eq: $project } }")
            variables["project"] = wanted.project
        if wanted.labels:
            declared.append("$labels: [String!]!")
            parts.append("labels: { some: { name: { in: $labels } } }")
            variables["labels"] = list(wanted.labels)
        parts.append("state: { name: { in: $states } }")
        query = (f"query ActiveIssues({', '.join(declared)}) {{ issues(first: {PAGE}, after: $after, "
                 f"filter: {{ {', '.join(parts)} }}) {{ nodes {{ {ISSUE_FIELDS} }} {PAGE_INFO} }} }}")
        return await self._issue_pages("active_issues", query, variables)

    async def issues_by_ids(self, ids: list[str]) -> list[Issue]:
        query = (f"query IssuesByIds($ids: [ID!]!, $after: String) {{ issues(first: {PAGE}, after: $after, "
                 f"filter: {{ id: {{ in: $ids }} }}) {{ nodes {{ {ISSUE_FIELDS} }} {PAGE_INFO} }} }}")
        unique = list(dict.fromkeys(ids))
        found: list[Issue] = []
        for start in range(0, len(unique), PAGE):
            found += await self._issue_pages("issues_by_ids", query, {"ids": unique[start:start + PAGE]})
        return found

    async def get_issue(self, issue_id: str) -> Issue:
        query = f"query GetIssue($id: String!) {{ issue(id: $id) {{ {ISSUE_FIELDS} }} }}"
        data = await self._graphql("get_issue", query, {"id": issue_id}, missing=issue_id)
        node = data.get("issue")
        if node is None:
            raise self._not_found(issue_id)
        return self._parse("get_issue", lambda: self._issue(node))

    async def _issue_pages(self, operation: str, query: str, variables: dict[str, Any]) -> list[Issue]:
        issues: list[Issue] = []
        after = None
        for _ in range(MAX_PAGES):
            data = await self._graphql(operation, query, {**variables, "after": after})
            nodes, after, more = self._parse(operation, lambda: self._page(data["issues"]))
            issues += self._parse(operation, lambda: [self._issue(node) for node in nodes])
            if not more:
                return issues
        raise ServerError(f"Linear kept answering more pages of {operation} after {MAX_PAGES}")

    # ----- states ---------------------------------------------------------------------------

    async def workflow_states(self) -> list[WorkflowState]:
        teams = [self.config.filter.team] if self.config.filter.team else await self._project_teams()
        states: dict[str, WorkflowState] = {}
        for team in teams:
            for state in await self._team_states(team):
                states.setdefault(state.name, state)
        return list(states.values())

    async def _project_teams(self) -> list[str]:
        """Teams of a project-only filter: those of the issues read so far, else of its first issue."""
        if not self._team_of:
            query = ("query ProjectTeam($project: String!) { issues(first: 1, filter: { project: { slugId: "
                     "{ eq: $project } } }) { nodes { id team { id key } } } }")
            data = await self._graphql("project_team", query, {"project": self.config.filter.project})
            self._team_of.update(self._parse("project_team", lambda: {
                str(node["id"]): str(node["team"]["key"]) for node in data["issues"]["nodes"]}))
        return list(dict.fromkeys(self._team_of.values()))

    async def _team_states(self, team: str, *, fresh: bool = False) -> list[WorkflowState]:
        if fresh or team not in self._states:
            query = ("query TeamStates($team: String!) { workflowStates(filter: { team: { key: { eq: $team } } }) "
                     "{ nodes { id name type } } }")
            data = await self._graphql("workflow_states", query, {"team": team})
            self._states[team] = self._parse("workflow_states", lambda: [
                WorkflowState(id=str(node["id"]), name=str(node["name"]), type=node.get("type"))
                for node in data["workflowStates"]["nodes"]])
        return self._states[team]

    # ----- writing ------------------------------------------------------------------------------

    async def move(self, issue: Issue, state_name: str) -> Issue:
        if issue.state == state_name:
            return issue
        team = self.config.filter.team or self._team_of.get(issue.id)
        if team is None:
            issue = await self.get_issue(issue.id)  # learns its team
            team = self._team_of.get(issue.id)
            if issue.state == state_name:
                return issue
            if team is None:
                raise ServerError(f"Linear did not say which team {issue.identifier} belongs to")
        state = _named(await self._team_states(team), state_name)
        if state is None:  # a state added since we looked?
            state = _named(await self._team_states(team, fresh=True), state_name)
        if state is None:
            names = ", ".join(s.name for s in self._states[team]) or "none"
            raise NotFound(f"Linear team {team} has no state {state_name!r} (states: {names})")
        if state.name == issue.state:
            return issue
        try:
            data = await self._update_state(issue, state)
        except _UnknownState:
            # The cached id is gone (the team's workflow was edited, or Linear's ids changed):
            # read the team's states again and try once more with the fresh id.
            self._states.pop(team, None)
            fresh = _named(await self._team_states(team), state_name)
            if fresh is None:
                names = ", ".join(s.name for s in self._states[team]) or "none"
                raise NotFound(f"Linear team {team} has no state {state_name!r} any more (states: {names})") from None
            if fresh.name == issue.state:
                return issue
            state = fresh
            try:
                data = await self._update_state(issue, state)
            except _UnknownState:
                self._states.pop(team, None)
                raise NotFound(f"Linear does not know the workflow state {state.name!r} of team {team} "
                               f"(id {state.id}), though it just listed it") from None
        payload = self._parse("move", lambda: data["issueUpdate"])
        if not self._parse("move", lambda: payload["success"]):
            raise ServerError(f"Linear did not move {issue.identifier} to {state.name!r} (success: false)")
        node = payload.get("issue")
        if node is None:
            return dataclasses.replace(issue, state=state.name, state_type=state.type)
        return self._parse("move", lambda: self._issue(node))

    async def _update_state(self, issue: Issue, state: WorkflowState) -> dict:
        query = (f"mutation MoveIssue($id: String!, $stateId: String!) {{ issueUpdate(id: $id, "
                 f"input: {{ stateId: $stateId }}) {{ success issue {{ {ISSUE_FIELDS} }} }} }}")
        return await self._graphql("move", query, {"id": issue.id, "stateId": state.id}, missing=issue.id,
                                   entities={"WorkflowState": _UnknownState})

    async def comments(self, issue_id: str) -> list[Comment]:
        query = (f"query IssueComments($id: String!, $after: String) {{ issue(id: $id) {{ comments(first: {PAGE}, "
                 f"after: $after) {{ nodes {{ id body createdAt }} {PAGE_INFO} }} }} }}")
        found: list[Comment] = []
        after = None
        for _ in range(MAX_PAGES):
            data = await self._graphql("comments", query, {"id": issue_id, "after": after}, missing=issue_id)
            if data.get("issue") is None:
                raise self._not_found(issue_id)
            nodes, after, more = self._parse("comments", lambda: self._page(data["issue"]["comments"]))
            found += self._parse("comments", lambda: [self._comment(node) for node in nodes])
            if not more:
                # Oldest first, whatever order the pages came in.
                return sorted(found, key=_oldest_first)
        raise ServerError(f"Linear kept answering more pages of comments after {MAX_PAGES}")

    async def add_comment(self, issue_id: str, body: str) -> Comment:
        query = ("mutation AddComment($issueId: String!, $body: String!) { commentCreate(input: "
                 "{ issueId: $issueId, body: $body }) { success comment { id body createdAt } } }")
        data = await self._graphql("add_comment", query, {"issueId": issue_id, "body": body},
                                   missing=issue_id, idempotent=False)
        payload = self._parse("add_comment", lambda: data["commentCreate"])
        if not self._parse("add_comment", lambda: payload["success"]) or not payload.get("comment"):
            raise ServerError(f"Linear did not add the comment to {issue_id} (success: false)")
        return self._parse("add_comment", lambda: self._comment(payload["comment"]))

    # ----- the wire -------------------------------------------------------------------------------

    async def _graphql(self, operation: str, query: str, variables: dict[str, Any], *,
                       missing: str | None = None, idempotent: bool = True,
                       entities: dict[str, type[TrackerError]] | None = None) -> dict:
        """`data` of a successful answer, or the typed error. `missing`: the id an
        "Entity not found" is about; `entities`: the error raised instead when Linear names
        another entity it did not find ("Entity not found: WorkflowState")."""
        response = await self._http.send(operation, "POST", self.config.url,
                                          json={"query": query, "variables": variables},
                                          idempotent=idempotent)
        body = _json(response)
        errors = _codes(body)
        if response.status_code == 401 and not errors:
            errors = [("AUTHENTICATION_ERROR", "HTTP 401", "HTTP 401")]
        for code, raw, told in errors:
            message = self._http.scrub(told)
            if code == "AUTHENTICATION_ERROR" or response.status_code == 401:
                raise AuthError(f"Linear refused the API key in {self._key_name}: {message}")
            if code == "FORBIDDEN" or response.status_code == 403:
                raise AuthError(f"Linear does not allow this with the API key in {self._key_name}: {message}")
            if code == "GRAPHQL_VALIDATION_FAILED":
                raise BadQuery(f"Linear refused the query {operation}: {message}")
            if code == "INPUT_ERROR" and "entity not found" in raw.lower():
                # "Entity not found: WorkflowState" (the user message: "…referenced WorkflowState.")
                named = next((error for entity, error in (entities or {}).items()
                              if re.search(rf"\b{entity}\b", f"{raw} {told}")), None)
                if named is not None:
                    raise named(f"Linear: {message}")
                raise self._not_found(missing) if missing else NotFound(f"Linear: {message}")
            if code in ("INPUT_ERROR", "BAD_USER_INPUT"):
                raise BadQuery(f"Linear refused {operation}: {message}")
        if errors:
            raise ServerError(f"Linear answered {operation} with an error: "
                              + self._http.scrub("; ".join(told for _, _, told in errors))[:300])
        if response.status_code == 403:
            raise AuthError(f"Linear does not allow this with the API key in {self._key_name}")
        if response.status_code >= 400:
            raise BadQuery(f"Linear refused {operation}: HTTP {response.status_code}")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            if isinstance(body, dict) and "data" in body and missing:
                raise self._not_found(missing)
            raise ServerError(f"Linear answered {operation} without data")
        return data

    def _not_found(self, issue_id: str) -> NotFound:
        return NotFound(f"Linear has no issue {issue_id!r} (or the API key cannot see it)")

    def _parse(self, operation: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except TrackerError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, _Shape):
            raise ServerError(f"Linear answered {operation} in an unexpected shape") from None

    @staticmethod
    def _page(connection: dict) -> tuple[list, str | None, bool]:
        nodes = connection["nodes"]
        info = connection["pageInfo"]
        more = bool(info.get("hasNextPage"))
        cursor = info.get("endCursor")
        if not isinstance(nodes, list) or (more and not cursor):
            raise _Shape()
        return nodes, cursor, more

    def _issue(self, node: dict) -> Issue:
        team = node.get("team")
        if isinstance(team, dict) and team.get("key"):
            self._team_of[str(node["id"])] = str(team["key"])
        priority = node.get("priority")
        state = node["state"]
        return Issue(
            id=str(node["id"]), identifier=str(node["identifier"]), title=str(node["title"]),
            description=node.get("description") or "", url=node.get("url"),
            state=str(state["name"]), state_type=state.get("type"),
            priority=int(priority) if isinstance(priority, (int, float)) and 1 <= priority <= 4 else None,
            labels=tuple(str(label["name"]) for label in (node.get("labels") or {}).get("nodes") or []),
            updated_at=_time(node.get("updatedAt")))

    @staticmethod
    def _comment(node: dict) -> Comment:
        return Comment(id=str(node["id"]), body=node.get("body") or "", created_at=_time(node.get("createdAt")))


def _oldest_first(comment: Comment) -> float:
    return comment.created_at.timestamp() if comment.created_at else float("inf")


def _named(states: list[WorkflowState], name: str) -> WorkflowState | None:
    """The state called `name`: exactly, else ignoring case (people write "todo")."""
    for state in states:
        if state.name == name:
            return state
    folded = name.casefold()
    return next((state for state in states if state.name.casefold() == folded), None)
