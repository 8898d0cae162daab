"""A local stand-in for the part of Linear's GraphQL API Baton uses (PROTOCOLS.md "Linear"), as
strict as Linear where it matters: queries are validated by graphql-core against the SDL below
(unknown fields or arguments, unused variables, `$id: ID!` where Linear says `String!`,
`[String!]` where an IDComparator wants `[ID!]`: HTTP 400 GRAPHQL_VALIDATION_FAILED).

    python tests/fakes/linear_standin.py --port P --api-key KEY [--team ENG] [--seed FILE] [--ready-file F]

API: `POST /graphql` (or `/`), `Authorization: KEY` exactly (a `Bearer KEY`, another key or none:
401 AUTHENTICATION_ERROR). An unknown issue or state id: HTTP 200, `data: null`, INPUT_ERROR
"Entity not found: Issue". Every answer carries X-RateLimit-Requests-Limit/-Remaining/-Reset
(epoch ms). Injected rate limits answer HTTP 400 (or the `status` asked for, e.g. 429) with code
RATELIMITED and Retry-After; outages answer 503.
Teams have Linear's default states (Backlog, Todo, In Progress, In Review, Done, Canceled,
Duplicate); a team or project named in a seeded issue is created on the fly. `issues` are ordered
by createdAt (or updatedAt), newest first, `first` defaults to 50 (at most 250).
Admin API (seed, move, stats, failure injection): see tracker_standin.py.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone

from graphql import GraphQLError, build_schema, execute, parse, validate
from graphql.language import OperationDefinitionNode

# Run as a script (a process of its own): its folder is on sys.path.
from tracker_standin import AdminError, BaseHandler, Clock, Faults, IssueIndex, Stats, run

SDL = """
scalar DateTime
scalar DateTimeOrDuration

enum PaginationOrderBy { createdAt updatedAt }

type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String endCursor: String }

type Query {
  viewer: User!
  issue(id: String!): Issue!
  issues(first: Int, after: String, filter: IssueFilter, orderBy: PaginationOrderBy, includeArchived: Boolean): IssueConnection!
  workflowStates(first: Int, after: String, filter: WorkflowStateFilter, orderBy: PaginationOrderBy, includeArchived: Boolean): WorkflowStateConnection!
  team(id: String!): Team!
  teams(first: Int, after: String, filter: TeamFilter, orderBy: PaginationOrderBy, includeArchived: Boolean): TeamConnection!
}

type Mutation {
  issueUpdate(id: String!, input: IssueUpdateInput!): IssuePayload!
  commentCreate(input: CommentCreateInput!): CommentPayload!
}

type User { id: ID! name: String! displayName: String! email: String! active: Boolean! }

type Team {
  id: ID! key: String! name: String!
  states(first: Int, after: String, filter: WorkflowStateFilter, orderBy: PaginationOrderBy, includeArchived: Boolean): WorkflowStateConnection!
}
type TeamConnection { nodes: [Team!]! pageInfo: PageInfo! }

type Project { id: ID! name: String! slugId: String! url: String! }

type WorkflowState { id: ID! name: String! type: String! position: Float! color: String! team: Team! }
type WorkflowStateConnection { nodes: [WorkflowState!]! pageInfo: PageInfo! }

type IssueLabel { id: ID! name: String! color: String! }
type IssueLabelConnection { nodes: [IssueLabel!]! pageInfo: PageInfo! }

type Comment { id: ID! body: String! url: String! createdAt: DateTime! updatedAt: DateTime! user: User issue: Issue }
type CommentConnection { nodes: [Comment!]! pageInfo: PageInfo! }

type Issue {
  id: ID! identifier: String! number: Float! title: String! description: String url: String!
  priority: Float! priorityLabel: String! branchName: String!
  createdAt: DateTime! updatedAt: DateTime!
  state: WorkflowState! team: Team! project: Project
  labels(first: Int, after: String, filter: IssueLabelFilter, orderBy: PaginationOrderBy, includeArchived: Boolean): IssueLabelConnection!
  comments(first: Int, after: String, filter: CommentFilter, orderBy: PaginationOrderBy, includeArchived: Boolean): CommentConnection!
}
type IssueConnection { nodes: [Issue!]! pageInfo: PageInfo! }

type IssuePayload { success: Boolean! lastSyncId: Float! issue: Issue }
type CommentPayload { success: Boolean! lastSyncId: Float! comment: Comment! }

input IssueUpdateInput { title: String description: String stateId: String priority: Int labelIds: [String!] assigneeId: String }
input CommentCreateInput { id: String issueId: String body: String parentId: String }

input StringComparator {
  eq: String neq: String in: [String!] nin: [String!] eqIgnoreCase: String neqIgnoreCase: String
  contains: String containsIgnoreCase: String notContains: String startsWith: String endsWith: String
}
input NullableStringComparator {
  eq: String neq: String in: [String!] nin: [String!] eqIgnoreCase: String neqIgnoreCase: String
  contains: String containsIgnoreCase: String notContains: String startsWith: String endsWith: String null: Boolean
}
input IDComparator { eq: ID neq: ID in: [ID!] nin: [ID!] }
input DateComparator { eq: DateTimeOrDuration neq: DateTimeOrDuration gt: DateTimeOrDuration gte: DateTimeOrDuration lt: DateTimeOrDuration lte: DateTimeOrDuration }
input NumberComparator { eq: Float neq: Float in: [Float!] nin: [Float!] gt: Float gte: Float lt: Float lte: Float }

input TeamFilter { id: IDComparator key: StringComparator name: StringComparator and: [TeamFilter!] or: [TeamFilter!] }
input NullableProjectFilter { id: IDComparator slugId: StringComparator name: StringComparator null: Boolean and: [NullableProjectFilter!] or: [NullableProjectFilter!] }
input WorkflowStateFilter { id: IDComparator name: StringComparator type: StringComparator team: TeamFilter and: [WorkflowStateFilter!] or: [WorkflowStateFilter!] }
input IssueLabelFilter { id: IDComparator name: StringComparator and: [IssueLabelFilter!] or: [IssueLabelFilter!] }
input IssueLabelCollectionFilter { id: IDComparator name: StringComparator some: IssueLabelFilter every: IssueLabelFilter and: [IssueLabelCollectionFilter!] or: [IssueLabelCollectionFilter!] }
input CommentFilter { id: IDComparator body: StringComparator createdAt: DateComparator and: [CommentFilter!] or: [CommentFilter!] }
input IssueFilter {
  id: IDComparator number: NumberComparator title: StringComparator description: NullableStringComparator
  priority: NumberComparator createdAt: DateComparator updatedAt: DateComparator
  team: TeamFilter project: NullableProjectFilter state: WorkflowStateFilter labels: IssueLabelCollectionFilter
  and: [IssueFilter!] or: [IssueFilter!]
}
"""

DEFAULT_STATES = [("Backlog", "backlog", "#bec2c8"), ("Todo", "unstarted", "#e2e2e2"),
                  ("In Progress", "started", "#f2c94c"), ("In Review", "started", "#0f783c"),
                  ("Done", "completed", "#5e6ad2"), ("Canceled", "canceled", "#95a2b3"),
                  ("Duplicate", "canceled", "#95a2b3")]
PRIORITY_LABELS = ["No priority", "Urgent", "High", "Medium", "Low"]
MAX_FIRST = 250
REQUESTS_PER_HOUR = 5000
ORG = "acme"


class LinearError(Exception):
    """An error Linear reports in `errors[]` (HTTP 200 unless the caller says otherwise)."""

    def __init__(self, message: str, code: str = "INPUT_ERROR", kind: str = "invalid input",
                 user_message: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.kind = message, code, kind
        self.user_message = user_message or message


def not_found(what: str) -> LinearError:
    return LinearError(f"Entity not found: {what}", user_message=f"Could not find referenced {what}.")


# ----- the world ---------------------------------------------------------------------------------

class Team:
    def __init__(self, key: str, name: str) -> None:
        self.id, self.key, self.name = str(uuid.uuid4()), key, name
        self.states = [State(self, name_, type_, float(i), color) for i, (name_, type_, color) in enumerate(DEFAULT_STATES)]
        self.next_number = 1


class State:
    def __init__(self, team: Team, name: str, type_: str, position: float, color: str) -> None:
        self.id, self.team, self.name, self.type = str(uuid.uuid4()), team, name, type_
        self.position, self.color = position, color


class Project:
    def __init__(self, slug: str) -> None:
        self.id, self.slugId, self.name = str(uuid.uuid4()), slug, slug.replace("-", " ").title()
        self.url = f"https://linear.app/{ORG}/project/{slug}"


class Label:
    def __init__(self, name: str) -> None:
        self.id, self.name, self.color = str(uuid.uuid4()), name, "#bec2c8"


class User:
    def __init__(self, name: str, email: str) -> None:
        self.id, self.name, self.email, self.active = str(uuid.uuid4()), name, email, True
        self.displayName = name.split()[0].lower()


class Comment:
    def __init__(self, issue, body: str, user: User, at: datetime) -> None:
        self.id, self.issue, self.body, self.user = str(uuid.uuid4()), issue, body, user
        self.createdAt = self.updatedAt = at
        self.url = f"{issue.url}#comment-{self.id[:8]}"


class Issue:
    def __init__(self, team: Team, title: str, state: State, at: datetime) -> None:
        self.id, self.team, self.title, self.state = str(uuid.uuid4()), team, title, state
        self.number = float(team.next_number)
        team.next_number += 1
        self.identifier = f"{team.key}-{int(self.number)}"
        self.description: str | None = None
        self.priority = 0.0
        self.project: Project | None = None
        self.labels: list[Label] = []
        self.comments: list[Comment] = []
        self.history: list[dict] = []
        self.createdAt = self.updatedAt = at
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "issue"
        self.url = f"https://linear.app/{ORG}/issue/{self.identifier}/{slug}"
        self.branchName = f"dev/{self.identifier.lower()}-{slug}"

    @property
    def priorityLabel(self) -> str:
        return PRIORITY_LABELS[int(self.priority)]


class World(IssueIndex):
    key_field = "identifier"

    def __init__(self, api_key: str, teams: list[str]) -> None:
        self.api_key = api_key
        self.lock = threading.RLock()
        self.stats, self.faults, self.clock = Stats(), Faults(), Clock()
        self.teams: dict[str, Team] = {}
        self.projects: dict[str, Project] = {}
        self.labels: dict[str, Label] = {}
        self.issues: dict[str, Issue] = {}  # by id, in creation order
        self.viewer = User("Baton Bot", "baton@example.com")
        self.human = User("Pat Person", "pat@example.com")
        self.sync_id = 1000.0
        self.window_start, self.window_used = time.time(), 0
        for key in teams:
            self.team(key)
        self.base_url = ""

    # ----- lookups ---------------------------------------------------------------------------

    def team(self, key: str) -> Team:
        if key not in self.teams:
            if not re.fullmatch(r"[A-Z][A-Z0-9]{0,6}", key):
                raise AdminError(400, f"team key {key!r}: Linear keys are like ENG")
            self.teams[key] = Team(key, key.title())
        return self.teams[key]

    def project(self, slug: str | None) -> Project | None:
        if slug is None:
            return None
        return self.projects.setdefault(slug, Project(slug))

    def label(self, name: str) -> Label:
        return self.labels.setdefault(name.lower(), Label(name))

    def state_named(self, issue: Issue, name: str) -> State:
        for state in issue.team.states:
            if state.name.lower() == str(name).lower():
                return state
        raise AdminError(400, f"{issue.team.key} has no state {name!r} ({', '.join(s.name for s in issue.team.states)})")

    def all_states(self) -> list[State]:
        return [s for team in self.teams.values() for s in team.states]

    # ----- changes ---------------------------------------------------------------------------

    def set_state(self, issue: Issue, state, by: str) -> None:
        if not isinstance(state, State):
            state = self.state_named(issue, state)
        if state is not issue.state:
            at = self.clock.now()
            issue.history.append({"from": issue.state.name, "to": state.name, "by": by, "at": _iso(at)})
            issue.state, issue.updatedAt = state, at

    def add_comment(self, issue: Issue, body: str, by: str) -> Comment:
        comment = Comment(issue, str(body), self.viewer if by == "api" else self.human, self.clock.now())
        issue.comments.append(comment)
        return comment

    def update(self, issue: Issue, body: dict) -> None:
        if "title" in body:
            issue.title = str(body["title"])
        if "description" in body:
            issue.description = body["description"]
        if "labels" in body:
            issue.labels = [self.label(name) for name in body["labels"]]
        if "priority" in body:
            issue.priority = float(_priority(body["priority"]))
        issue.updatedAt = self.clock.now()

    def delete(self, issue: Issue) -> None:
        del self.issues[issue.id]

    def seed(self, body: dict) -> dict:
        for team in body.get("teams", []):
            self.team(team["key"] if isinstance(team, dict) else team)
        created = []
        default_team = next(iter(self.teams))
        for spec in body.get("issues", []):
            team = self.team(spec.get("team") or default_team)
            issue = Issue(team, str(spec.get("title") or "Untitled"), team.states[1], self.clock.now())
            issue.state = self.state_named(issue, spec.get("state", "Todo"))
            issue.description = spec.get("description")
            issue.priority = float(_priority(spec.get("priority", 0)))
            issue.project = self.project(spec.get("project"))
            issue.labels = [self.label(name) for name in spec.get("labels", [])]
            self.issues[issue.id] = issue
            for text in spec.get("comments", []):
                self.add_comment(issue, text, by="human")
            created.append({"id": issue.id, "identifier": issue.identifier, "url": issue.url})
        return {"issues": created}

    # ----- admin views -----------------------------------------------------------------------

    def summary(self, issue: Issue) -> dict:
        return {"id": issue.id, "identifier": issue.identifier, "title": issue.title,
                "description": issue.description, "state": issue.state.name, "state_type": issue.state.type,
                "labels": [label.name for label in issue.labels], "priority": int(issue.priority),
                "team": issue.team.key, "project": issue.project.slugId if issue.project else None,
                "url": issue.url, "updated_at": _iso(issue.updatedAt)}

    def view(self, issue: Issue) -> dict:
        return {**self.summary(issue),
                "comments": [{"id": c.id, "body": c.body, "raw": c.body, "created_at": _iso(c.createdAt),
                              "by": "api" if c.user is self.viewer else "human"} for c in issue.comments],
                "history": list(issue.history)}

    def views(self) -> list[dict]:
        return [self.summary(issue) for issue in self.issues.values()]

    # ----- rate limit headers ----------------------------------------------------------------

    def rate_headers(self, limited_for: float | None = None) -> dict:
        now = time.time()
        with self.lock:
            if now >= self.window_start + 3600:
                self.window_start, self.window_used = now, 0
            self.window_used += 1
            used = self.window_used
        reset_ms = int((self.window_start + 3600) * 1000)
        remaining = max(0, REQUESTS_PER_HOUR - used)
        if limited_for is not None:
            remaining, reset_ms = 0, int((now + limited_for) * 1000)
        return {"X-RateLimit-Requests-Limit": REQUESTS_PER_HOUR, "X-RateLimit-Requests-Remaining": remaining,
                "X-RateLimit-Requests-Reset": reset_ms,
                "X-RateLimit-Complexity-Limit": 3000000, "X-RateLimit-Complexity-Remaining": 2999000,
                "X-RateLimit-Complexity-Reset": reset_ms, "X-Complexity": 100}


def _priority(value) -> int:
    value = int(value)
    if not 0 <= value <= 4:
        raise AdminError(400, "priority is 0 (none), 1 (urgent) … 4 (low)")
    return value


def _iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


# ----- filters -----------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^(-)?P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def _moment(value: str) -> datetime:
    match = _DURATION_RE.match(value)
    if match and value not in ("P", "-P"):
        sign, weeks, days, hours, minutes, seconds = match.groups()
        delta = timedelta(weeks=int(weeks or 0), days=int(days or 0), hours=int(hours or 0),
                          minutes=int(minutes or 0), seconds=int(seconds or 0))
        return datetime.now(timezone.utc) + (-delta if sign else delta)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise LinearError(f"Invalid date or duration: {value}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def compare(value, comparator: dict) -> bool:
    for op, arg in comparator.items():
        if arg is None and op != "null":
            continue
        if op in ("gt", "gte", "lt", "lte") or (isinstance(value, datetime) and op in ("eq", "neq")):
            if isinstance(value, datetime):
                arg = _moment(arg)
            ok = {"gt": lambda: value > arg, "gte": lambda: value >= arg, "lt": lambda: value < arg,
                  "lte": lambda: value <= arg, "eq": lambda: value == arg, "neq": lambda: value != arg}[op]()
        elif op == "eq":
            ok = value == arg
        elif op == "neq":
            ok = value != arg
        elif op == "in":
            ok = value in arg
        elif op == "nin":
            ok = value not in arg
        elif op == "null":
            ok = (value is None) == bool(arg)
        elif value is None:
            ok = False
        elif op == "eqIgnoreCase":
            ok = value.lower() == arg.lower()
        elif op == "neqIgnoreCase":
            ok = value.lower() != arg.lower()
        elif op == "contains":
            ok = arg in value
        elif op == "containsIgnoreCase":
            ok = arg.lower() in value.lower()
        elif op == "notContains":
            ok = arg not in value
        elif op == "startsWith":
            ok = value.startswith(arg)
        elif op == "endsWith":
            ok = value.endswith(arg)
        else:
            raise LinearError(f"Unsupported comparator {op}")
        if not ok:
            return False
    return True


# type -> field -> (kind, getter): kind "cmp" (a comparator) or a type name (a nested filter)
FILTERS = {
    "Issue": {"id": ("cmp", lambda i: i.id), "number": ("cmp", lambda i: i.number),
              "title": ("cmp", lambda i: i.title), "description": ("cmp", lambda i: i.description),
              "priority": ("cmp", lambda i: i.priority), "createdAt": ("cmp", lambda i: i.createdAt),
              "updatedAt": ("cmp", lambda i: i.updatedAt), "team": ("Team", lambda i: i.team),
              "project": ("Project?", lambda i: i.project), "state": ("State", lambda i: i.state),
              "labels": ("Labels", lambda i: i.labels)},
    "Team": {"id": ("cmp", lambda t: t.id), "key": ("cmp", lambda t: t.key), "name": ("cmp", lambda t: t.name)},
    "Project?": {"id": ("cmp", lambda p: p.id), "slugId": ("cmp", lambda p: p.slugId), "name": ("cmp", lambda p: p.name)},
    "State": {"id": ("cmp", lambda s: s.id), "name": ("cmp", lambda s: s.name), "type": ("cmp", lambda s: s.type),
              "team": ("Team", lambda s: s.team)},
    "Label": {"id": ("cmp", lambda lb: lb.id), "name": ("cmp", lambda lb: lb.name)},
    "Labels": {"id": ("cmp", None), "name": ("cmp", None)},
    "Comment": {"id": ("cmp", lambda c: c.id), "body": ("cmp", lambda c: c.body),
                "createdAt": ("cmp", lambda c: c.createdAt)},
}


def matches(kind: str, obj, flt: dict | None) -> bool:
    if not flt:
        return True
    if kind == "Project?" and obj is None:
        return flt.get("null") is True
    for key, value in flt.items():
        if value is None:
            continue
        if key == "and":
            ok = all(matches(kind, obj, sub) for sub in value)
        elif key == "or":
            ok = any(matches(kind, obj, sub) for sub in value)
        elif key == "null":
            ok = (obj is None) == value
        elif kind == "Labels":
            if key == "some":
                ok = any(matches("Label", lb, value) for lb in obj)
            elif key == "every":
                ok = all(matches("Label", lb, value) for lb in obj)
            else:  # id / name on the collection: some label matches
                ok = any(compare(getattr(lb, key), value) for lb in obj)
        else:
            sub_kind, getter = FILTERS[kind][key]
            ok = compare(getter(obj), value) if sub_kind == "cmp" else matches(sub_kind, getter(obj), value)
        if not ok:
            return False
    return True


# ----- pagination --------------------------------------------------------------------------------

def paginate(items: list, first: int | None, after: str | None, sort_key) -> dict:
    """Linear's connection: `first` (default 50, at most 250) after an opaque cursor that holds
    the sort position, so a page boundary survives changes between requests."""
    if first is None:
        first = 50
    if first < 0 or first > MAX_FIRST:
        raise LinearError(f"first must be between 0 and {MAX_FIRST}", user_message="Pagination limit exceeded")
    ordered = sorted(items, key=lambda item: (sort_key(item), item.id))
    if after is not None:
        try:
            position = tuple(json.loads(base64.urlsafe_b64decode(after.encode()).decode()))
        except (ValueError, TypeError):
            raise LinearError("Invalid cursor", user_message="The pagination cursor is not valid.") from None
        ordered = [item for item in ordered if (sort_key(item), item.id) > position]
    page = ordered[:first]
    end = None
    if page:
        last = page[-1]
        end = base64.urlsafe_b64encode(json.dumps([sort_key(last), last.id]).encode()).decode()
    return {"nodes": page, "pageInfo": {"hasNextPage": len(ordered) > len(page), "hasPreviousPage": after is not None,
                                        "startCursor": None, "endCursor": end}}


def _order(order_by: str | None):
    field = "updatedAt" if order_by == "updatedAt" else "createdAt"
    return lambda item: -getattr(item, field).timestamp()  # newest first


# ----- resolvers ---------------------------------------------------------------------------------

def make_schema(world: World):
    schema = build_schema(SDL)

    def resolver(type_name: str, field: str):
        def attach(fn):
            schema.type_map[type_name].fields[field].resolve = fn
            return fn
        return attach

    date_time = schema.type_map["DateTime"]
    def as_text(value):
        return _iso(value) if isinstance(value, datetime) else value
    date_time.serialize = as_text
    if hasattr(date_time, "coerce_output_value"):  # graphql-core 3.3 reads this one, set at construction
        date_time.coerce_output_value = as_text

    @resolver("Query", "viewer")
    def _viewer(_root, _info):
        return world.viewer

    @resolver("Query", "issue")
    def _issue(_root, _info, id):
        issue = world.lookup(id)
        if issue is None:
            raise not_found("Issue")
        return issue

    @resolver("Query", "issues")
    def _issues(_root, _info, first=None, after=None, filter=None, orderBy=None, includeArchived=None):
        found = [i for i in world.issues.values() if matches("Issue", i, filter)]
        return paginate(found, first, after, _order(orderBy))

    @resolver("Query", "workflowStates")
    def _states(_root, _info, first=None, after=None, filter=None, orderBy=None, includeArchived=None):
        found = [s for s in world.all_states() if matches("State", s, filter)]
        return paginate(found, first, after, lambda s: (s.team.key, s.position))

    @resolver("Query", "team")
    def _team(_root, _info, id):
        team = next((t for t in world.teams.values() if id in (t.id, t.key)), None)
        if team is None:
            raise not_found("Team")
        return team

    @resolver("Query", "teams")
    def _teams(_root, _info, first=None, after=None, filter=None, orderBy=None, includeArchived=None):
        found = [t for t in world.teams.values() if matches("Team", t, filter)]
        return paginate(found, first, after, lambda t: t.key)

    @resolver("Team", "states")
    def _team_states(team, _info, first=None, after=None, filter=None, orderBy=None, includeArchived=None):
        return paginate([s for s in team.states if matches("State", s, filter)], first, after, lambda s: s.position)

    @resolver("Issue", "labels")
    def _labels(issue, _info, first=None, after=None, filter=None, orderBy=None, includeArchived=None):
        return paginate([lb for lb in issue.labels if matches("Label", lb, filter)], first, after, lambda lb: lb.name)

    @resolver("Issue", "comments")
    def _comments(issue, _info, first=None, after=None, filter=None, orderBy=None, includeArchived=None):
        found = [c for c in issue.comments if matches("Comment", c, filter)]
        return paginate(found, first, after, lambda c: c.createdAt.timestamp())

    @resolver("Mutation", "issueUpdate")
    def _issue_update(_root, _info, id, input):
        issue = world.lookup(id)
        if issue is None:
            raise not_found("Issue")
        if input.get("stateId") is not None:
            state = next((s for s in world.all_states() if s.id == input["stateId"]), None)
            if state is None:
                raise not_found("WorkflowState")
            if state.team is not issue.team:
                raise LinearError("Argument Validation Error: the state belongs to another team",
                                  user_message="The workflow state does not belong to the issue's team.")
            world.set_state(issue, state, by="api")
        if input.get("priority") is not None:
            if not 0 <= input["priority"] <= 4:
                raise LinearError("Argument Validation Error: priority must be between 0 and 4")
            issue.priority = float(input["priority"])
        for key in ("title", "description"):
            if input.get(key) is not None:
                setattr(issue, key, input[key])
        if input.get("labelIds") is not None:
            by_id = {lb.id: lb for lb in world.labels.values()}
            if any(lid not in by_id for lid in input["labelIds"]):
                raise not_found("IssueLabel")
            issue.labels = [by_id[lid] for lid in input["labelIds"]]
        issue.updatedAt = world.clock.now()
        world.sync_id += 1
        return {"success": True, "lastSyncId": world.sync_id, "issue": issue}

    @resolver("Mutation", "commentCreate")
    def _comment_create(_root, _info, input):
        if not input.get("issueId"):
            raise LinearError("Argument Validation Error: issueId is required",
                              user_message="A comment needs an issue.")
        issue = world.lookup(input["issueId"])
        if issue is None:
            raise not_found("Issue")
        if not (input.get("body") or "").strip():
            raise LinearError("Argument Validation Error: body must not be empty",
                              user_message="The comment is empty.")
        world.sync_id += 1
        return {"success": True, "lastSyncId": world.sync_id, "comment": world.add_comment(issue, input["body"], by="api")}

    return schema


# ----- HTTP --------------------------------------------------------------------------------------

def _js_numbers(value):
    """JSON as Linear's JavaScript writes it: a Float that is whole has no ".0"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    return value


def _error(message: str, code: str, kind: str, user_message: str | None = None, **more) -> dict:
    return {"message": message, **more,
            "extensions": {"type": kind, "code": code, "statusCode": 400, "userError": True,
                           "userPresentableMessage": user_message or message}}


def _format(error: GraphQLError) -> tuple[dict, bool]:
    """One execution error as Linear words it; second: whether it is the stand-in's own bug."""
    more = {}
    if error.path:
        more["path"] = list(error.path)
    if error.locations:
        more["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    original = error.original_error
    if isinstance(original, LinearError):
        return _error(original.message, original.code, original.kind, original.user_message, **more), False
    if original is None:  # variable coercion and the like: the request itself is wrong
        return _error(error.message, "GRAPHQL_VALIDATION_FAILED", "graphql error", **more), False
    return _error(error.message, "INTERNAL_SERVER_ERROR", "internal error", **more), True


def _root_fields(document) -> str:
    names = [sel.name.value for definition in document.definitions if isinstance(definition, OperationDefinitionNode)
             for sel in definition.selection_set.selections if hasattr(sel, "name")]
    return "+".join(names) or "invalid"


class LinearHandler(BaseHandler):
    schema = None

    def answer(self, status: int, data, limited_for: float | None = None, extra: dict | None = None) -> None:
        self.send(status, _js_numbers(data), {**self.world.rate_headers(limited_for), **(extra or {})})

    def api(self, method: str, path: str) -> str:
        world = self.world
        if path not in ("/graphql", "/") or method != "POST":
            self.answer(404, {"errors": [_error(f"Cannot {method} {path}", "NOT_FOUND", "invalid input")]})
            return "not_found"
        try:
            body = self.json_body()
            if not isinstance(body, dict) or not isinstance(body.get("query"), str):
                raise ValueError
        except ValueError:
            self.answer(400, {"errors": [_error("POST body must be JSON with a string `query`", "BAD_REQUEST",
                                                "invalid input")]})
            return "invalid"
        try:
            document = parse(body["query"])
            op = _root_fields(document)
        except GraphQLError as exc:
            self.answer(400, {"errors": [_error(exc.message, "GRAPHQL_PARSE_FAILED", "graphql error")]})
            return "invalid"
        fault = world.faults.take()
        if fault and fault["mode"] == "outage":
            self.send(503, text="<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
                      content_type="text/html", headers={"Retry-After": int(fault["retry_after"])})
            return op
        if self.headers.get("Authorization") != world.api_key:
            bearer = (self.headers.get("Authorization") or "").startswith("Bearer ")
            message = ("Authentication required, not authenticated: personal API keys are sent without 'Bearer'"
                       if bearer else "Authentication required, not authenticated")
            self.answer(401, {"errors": [_error(message, "AUTHENTICATION_ERROR", "authentication error",
                                                "You need to authenticate to access this operation.")]})
            return op
        if fault and fault["mode"] == "rate_limit":
            retry = fault["retry_after"]
            self.answer(fault["status"] or 400, {"errors": [_error(
                "Rate limit exceeded", "RATELIMITED", "ratelimited", "Too many requests: wait before trying again.")]},
                limited_for=retry, extra={"Retry-After": int(retry) if float(retry).is_integer() else retry})
            return op
        variables = body.get("variables")
        if variables is not None and not isinstance(variables, dict):
            self.answer(400, {"errors": [_error("variables must be an object", "BAD_REQUEST", "invalid input")]})
            return op
        with world.lock:
            errors = validate(self.schema, document)
            if errors:
                self.answer(400, {"errors": [_error(e.message, "GRAPHQL_VALIDATION_FAILED", "graphql error",
                                                    locations=[{"line": loc.line, "column": loc.column}
                                                               for loc in e.locations or []]) for e in errors]})
                return op
            result = execute(self.schema, document, variable_values=variables, operation_name=body.get("operationName"))
        if not result.errors:
            self.answer(200, {"data": result.data})
            return op
        formatted = [_format(e) for e in result.errors]
        if any(bug for _, bug in formatted):
            for error in result.errors:
                traceback.print_exception(error.original_error or error, file=sys.stderr)
            self.answer(500, {"errors": [f for f, _ in formatted]})
            return op
        request_error = result.data is None and all(not e.path for e in result.errors)
        self.answer(400 if request_error else 200, {"errors": [f for f, _ in formatted], "data": result.data})
        return op


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--team", action="append", help="a team key (repeatable; default ENG)")
    parser.add_argument("--seed", help="a JSON file in the shape of POST /_admin/seed")
    parser.add_argument("--ready-file", help="write the base URL here once listening")
    parser.add_argument("--parent-stdin", action="store_true", help="exit when stdin closes (the parent is gone)")
    args = parser.parse_args(argv)
    world = World(args.api_key, args.team or ["ENG"])
    handler = type("Handler", (LinearHandler,), {"schema": make_schema(world)})
    run(world, handler, args.port, args.ready_file, seed=args.seed, parent_stdin=args.parent_stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
