"""projects.yaml `source:` — a project whose tasks come from an issue tracker.

    projects:
      - id: shop
        agent_url: http://127.0.0.1:9101
        source:
          kind: linear                      # or jira
          base_url: null                    # null: https://api.linear.app/graphql; Jira: https://SITE.atlassian.net (required)
          api_key: $LINEAR_API_KEY          # Linear: a personal API key, always as $VARIABLE
          # email: me@example.com           # Jira: the account's email (or $VARIABLE)
          # api_token: $JIRA_API_TOKEN      # Jira: an API token, always as $VARIABLE
          filter:                           # which issues: Linear team / project (slugId) / labels;
            team: ENG                       #   Jira project (key) / jql (AND-ed) / labels
            labels: [baton]
          active_states: [Todo, In Progress]            # issues here become tasks
          terminal_states: [Done, Canceled, Duplicate]  # an issue here stops and cancels its task
          on_start: In Progress             # optional: move the issue when its task starts,
          on_review: In Review              #   awaits review (or its PR opened),
          on_complete: Done                 #   lands
          poll_seconds: 30
          max_attempts: 5                   # runs of a failing task before it is left failed
          retry_base_seconds: 10            # a failed task is rerun after min(base * 2^(n-1), max)
          retry_max_seconds: 300
          tools: true                       # give agents the tracker_* tools (MCP) for their issue

Secrets are only ever `$VARIABLE` references: the values are read from the dashboard's
environment when the configuration is loaded, never written anywhere, and the variables are
removed from the environment of every agent the dashboard starts.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ENV_REF_RE = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]{0,99}$")
_STATE_RE = re.compile(r"^[^\x00-\x1f\x7f\"\\]{1,100}$")  # quoted into JQL / GraphQL variables: no quotes
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,49}$")  # Linear team key, Jira project key
_SLUG_RE = re.compile(r"^[A-Za-z0-9-]{1,100}$")  # Linear project slugId
LINEAR_URL = "https://api.linear.app/graphql"

DEFAULT_STATES: dict[str, tuple[list[str], list[str]]] = {
    "linear": (["Todo", "In Progress"], ["Done", "Canceled", "Duplicate"]),
    "jira": (["To Do", "In Progress"], ["Done"]),
}


def jql_problem(jql: str) -> str | None:
    """Why extra JQL could reach past the clauses it is AND-ed with, if it could: it is put in
    parentheses, so a `)` that closes more than it opened (`x) OR (project != K`) would escape
    the project bound, and an ORDER BY would break the query. None when it stays inside."""
    depth, quote, escaped, outside = 0, "", False, []
    for char in jql:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return "a `)` closes a parenthesis it did not open (the JQL must stay inside its own clause)"
        outside.append(char if char.isprintable() else " ")
    if quote:
        return "a quoted string is not closed"
    if depth:
        return "a `(` is not closed"
    if re.search(r"\border\s+by\b", "".join(outside), re.IGNORECASE):
        return "ORDER BY is not allowed (Baton orders the search itself)"
    return None


def _float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SourceFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    team: str | None = None  # Linear: the team's key (ENG)
    project: str | None = None  # Linear: the project's slugId; Jira: the project key (SHOP)
    labels: list[str] = Field(default_factory=list, max_length=20)
    jql: str | None = Field(default=None, max_length=2000)  # Jira: more JQL, AND-ed with project and status

    @field_validator("team")
    @classmethod
    def _team(cls, value: str | None) -> str | None:
        if value is not None and not _KEY_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a team key like ENG")
        return value

    @field_validator("jql")
    @classmethod
    def _jql(cls, value: str | None) -> str | None:
        problem = jql_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            if not _STATE_RE.fullmatch(label):
                raise ValueError(f"{label!r}: a label is 1-100 characters without quotes, backslashes or control characters")
        return value


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Literal["linear", "jira"]
    base_url: str | None = None
    api_key: str | None = None  # Linear
    email: str | None = None  # Jira
    api_token: str | None = None  # Jira
    filter: SourceFilter = Field(default_factory=SourceFilter)
    active_states: list[str] | None = None  # None: DEFAULT_STATES[kind]
    terminal_states: list[str] | None = None
    # States where the agent hands its issue over when its work is ready (e.g. Human Review): a
    # task whose issue is there is not stopped; its run ends its turns and lands (WORKFLOW.md).
    handoff_states: list[str] = Field(default_factory=list, max_length=20)
    on_start: str | None = None
    on_review: str | None = None
    on_complete: str | None = None
    poll_seconds: float = Field(default=30.0, ge=1, le=3600)
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_base_seconds: float = Field(default=10.0, gt=0, le=3600)
    retry_max_seconds: float = Field(default=300.0, gt=0, le=86400)
    tools: bool = True

    @field_validator("poll_seconds", "retry_base_seconds", "retry_max_seconds", mode="before")
    @classmethod
    def _number(cls, value):
        return _float(value)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials (use api_key / api_token as $VARIABLE)")
        return value.rstrip("/")

    @field_validator("api_key", "api_token")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_REF_RE.fullmatch(value):
            # Never echo the value: it may be the secret itself.
            raise ValueError("must name an environment variable, like $LINEAR_API_KEY (secrets are never written in the file)")
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not (_ENV_REF_RE.fullmatch(value) or re.fullmatch(r"[^\s@]{1,100}@[^\s@]{1,200}", value)):
            raise ValueError(f"{value!r} is not an email address or $VARIABLE")
        return value

    @field_validator("handoff_states")
    @classmethod
    def _handoff(cls, value: list[str]) -> list[str]:
        for state in value:
            if not _STATE_RE.fullmatch(state):
                raise ValueError(f"{state!r}: a state name is 1-100 characters without quotes, backslashes or control characters")
        return value

    @field_validator("active_states", "terminal_states")
    @classmethod
    def _states(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one state")
        for state in value:
            if not _STATE_RE.fullmatch(state):
                raise ValueError(f"{state!r}: a state name is 1-100 characters without quotes, backslashes or control characters")
        return value

    @field_validator("on_start", "on_review", "on_complete")
    @classmethod
    def _state(cls, value: str | None) -> str | None:
        if value is not None and not _STATE_RE.fullmatch(value):
            raise ValueError(f"{value!r}: a state name is 1-100 characters without quotes, backslashes or control characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SourceConfig:
        active, terminal = DEFAULT_STATES[self.kind]
        if self.active_states is None:
            self.active_states = list(active)
        if self.terminal_states is None:
            self.terminal_states = list(terminal)
        both = sorted(set(self.active_states) & set(self.terminal_states))
        if both:
            raise ValueError(f"active_states and terminal_states both name {', '.join(both)}")
        named = sorted(set(self.handoff_states) & (set(self.active_states) | set(self.terminal_states)))
        if named:
            raise ValueError(f"handoff_states: {', '.join(named)} is also an active or terminal state")
        if self.on_start is not None and self.on_start not in self.active_states:
            raise ValueError(f"on_start: {self.on_start!r} must be one of active_states "
                             "(an issue moved out of them would stop its own task)")
        for key in ("on_review", "on_complete"):
            state = getattr(self, key)
            if state is not None and state in self.active_states:
                raise ValueError(f"{key}: {state!r} is one of active_states: the issue would look unfinished")
        if self.kind == "linear":
            if self.api_key is None:
                raise ValueError("api_key: required for Linear, as $VARIABLE (a personal API key)")
            if self.email is not None or self.api_token is not None:
                raise ValueError("email and api_token are for Jira; Linear takes api_key")
            if self.filter.jql is not None:
                raise ValueError("filter.jql is for Jira; Linear filters by team, project and labels")
            if self.filter.team is None and self.filter.project is None:
                raise ValueError("filter: Linear needs team (a team key) or project (a project slugId)")
            if self.filter.project is not None and not _SLUG_RE.fullmatch(self.filter.project):
                raise ValueError(f"filter.project: {self.filter.project!r} is not a Linear project slugId")
        else:
            if self.base_url is None:
                raise ValueError("base_url: required for Jira, e.g. https://your-site.atlassian.net")
            if self.email is None or self.api_token is None:
                raise ValueError("email and api_token: required for Jira (api_token as $VARIABLE)")
            if self.api_key is not None:
                raise ValueError("api_key is for Linear; Jira takes email and api_token")
            if self.filter.team is not None:
                raise ValueError("filter.team is for Linear; Jira filters by project, jql and labels")
            if self.filter.project is None:
                raise ValueError("filter.project: Jira needs a project key (searches must be bounded)")
            if not _KEY_RE.fullmatch(self.filter.project):
                raise ValueError(f"filter.project: {self.filter.project!r} is not a Jira project key like SHOP")
        return self

    # ----- what the code uses ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.base_url or LINEAR_URL

    def secret_vars(self) -> list[str]:
        """The environment variables this source reads (agents never inherit them)."""
        return [v[1:] for v in (self.api_key, self.api_token, self.email) if v is not None and v.startswith("$")]

    def missing_vars(self, environ: dict[str, str] | os._Environ = os.environ) -> list[str]:
        return [name for name in self.secret_vars() if not environ.get(name)]

    def credential(self, environ: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
        """{api_key} or {email, api_token}, read now from the environment (missing: "")."""
        def value(ref: str | None) -> str:
            if ref is None:
                return ""
            return environ.get(ref[1:], "") if ref.startswith("$") else ref
        if self.kind == "linear":
            return {"api_key": value(self.api_key)}
        return {"email": value(self.email), "api_token": value(self.api_token)}

    def allowed_states(self) -> list[str]:
        """The states a task's tracker tools may move its issue to: every state named here."""
        named = [*self.active_states, *self.terminal_states, *self.handoff_states, self.on_start, self.on_review, self.on_complete]
        return list(dict.fromkeys(s for s in named if s))

    def retry_delay(self, failures: int) -> float:
        """Symphony's backoff: min(base * 2^(n-1), max) seconds after the n-th failure."""
        return min(self.retry_base_seconds * 2 ** max(0, failures - 1), self.retry_max_seconds)
