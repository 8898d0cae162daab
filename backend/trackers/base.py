"""The contract between Baton and an issue tracker (Linear, Jira).

A tracker client answers in Baton's words (`Issue`, `Comment`, `WorkflowState`) and fails with
one of the typed errors below, whatever the tracker said. Every client is async (httpx), counts
the HTTP requests it made (`calls`, for the sync engine's health and the benchmark), honours
the tracker's rate limits itself (waits what it is told, then gives up with `RateLimited`), and
never logs or returns its credentials.

The trackers Baton knows are listed in `backend/trackers/__init__.py`; each lives in its own
folder, and `tests/trackers/test_contract.py` runs the same tests against every one of them
(through its stand-in server in tests/fakes/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Issue:
    id: str  # the tracker's own id (Linear: UUID; Jira: numeric id as a string)
    identifier: str  # what people call it: ABC-12
    title: str
    description: str  # plain text or Markdown ("" when none); Jira's ADF is converted
    url: str | None
    state: str  # the workflow state's name: "In Progress"
    state_type: str | None = None  # Linear: triage|backlog|unstarted|started|completed|canceled; Jira: new|indeterminate|done
    priority: int | None = None  # 1 urgent … 4 low; None: none/unknown
    labels: tuple[str, ...] = ()
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Comment:
    id: str
    body: str  # plain text or Markdown (Jira's ADF converted)
    created_at: datetime | None = None


@dataclass(frozen=True)
class WorkflowState:
    id: str
    name: str
    type: str | None = None


class TrackerError(Exception):
    """Base of every tracker failure. `message` is for people: it names the tracker and what
    went wrong, never a credential."""

    kind = "tracker_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after  # seconds, when the tracker said (rate limits, 503s)


class AuthError(TrackerError):
    kind = "auth"  # 401/403, Linear AUTHENTICATION_ERROR/FORBIDDEN; a missing credential too


class NotFound(TrackerError):
    kind = "not_found"  # an unknown issue, state or transition target


class RateLimited(TrackerError):
    kind = "rate_limited"  # still limited after the waits the client allows itself


class BadQuery(TrackerError):
    kind = "bad_query"  # the tracker refused the request itself (GraphQL validation, bad JQL, 400)


class ServerError(TrackerError):
    kind = "server"  # 5xx, a timeout, a refused connection, an answer that is not what was asked


@dataclass
class CallCounter:
    calls: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)

    def count(self, operation: str) -> None:
        self.calls += 1
        self.by_operation[operation] = self.by_operation.get(operation, 0) + 1


class Tracker(Protocol):
    kind: str  # "linear" | "jira", as written in projects.yaml `source.kind`
    counter: CallCounter  # HTTP requests made, retries included

    async def active_issues(self, states: list[str]) -> list[Issue]:
        """Every issue matching the source's filter whose state is one of `states` (all pages)."""
        ...

    async def issues_by_ids(self, ids: list[str]) -> list[Issue]:
        """The issues with these ids that exist (any state); unknown ids are left out."""
        ...

    async def get_issue(self, issue_id: str) -> Issue:
        """One issue (NotFound when it does not exist)."""
        ...

    async def workflow_states(self) -> list[WorkflowState]:
        """The states issues of this source can be in (Linear: the team's; Jira: the project's)."""
        ...

    async def move(self, issue: Issue, state_name: str) -> Issue:
        """Move the issue to the state named `state_name` (a no-op when it is there already).
        NotFound when no such state, or (Jira) no transition to it from the current status."""
        ...

    async def comments(self, issue_id: str) -> list[Comment]:
        """The issue's comments, oldest first (all pages)."""
        ...

    async def add_comment(self, issue_id: str, body: str) -> Comment:
        """Add a comment (Markdown-ish plain text; Jira gets it as ADF paragraphs)."""
        ...

    async def aclose(self) -> None: ...
