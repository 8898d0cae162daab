"""A local stand-in for the part of Jira Cloud's REST API v3 Baton uses (PROTOCOLS.md "Jira"),
as strict as Jira where it matters.

    python tests/fakes/jira_standin.py --port P --email E --api-token T [--project SHOP] [--seed FILE] [--ready-file F]

API (Basic auth `E:T`; anything else: 401 "Client must be authenticated…" as text), under /rest/api/3:
    GET  /myself
    POST /search/jql {jql, fields, maxResults, nextPageToken, expand, properties, fieldsByKeys,
                      failFast, reconcileIssues}: another key (startAt…) -> 400; JQL without a
                      project restriction -> 400 (unbounded); an unknown status/project/priority
                      -> 400 "The value 'X' does not exist for the field 'status'."; only `id`
                      unless `fields` is given; at most 100 per page; `nextPageToken` / `isLast`
    GET|POST /search -> 410 (removed)
    POST /issue/bulkfetch {issueIdsOrKeys (≤100), fields…} -> {issues, issueErrors}
    GET  /issue/{idOrKey}[?fields=a,b]          404 unknown
    GET  /issue/{k}/transitions                 only those allowed from the current status
    POST /issue/{k}/transitions {"transition": {"id"}} -> 204; a bad id -> 400
    GET  /issue/{k}/comment?startAt&maxResults  (default 50, at most 100), oldest first
    POST /issue/{k}/comment {"body": ADF}       -> 201; a plain string or invalid ADF -> 400
    GET  /project/{key}/statuses                per issue type (Task, Bug): the same statuses twice
JQL subset: `field op value` with = != IN / NOT IN / IS [NOT] EMPTY / ~ / > >= < <=, AND / OR /
NOT / parentheses, ORDER BY; fields project, status, statusCategory, labels, priority, key, id,
issuetype, assignee (currentUser()), resolution, summary/description/text (~), created/updated.
Workflow (transition names differ from status names, as in Jira):
    To Do       --Start Progress-->  In Progress --Send to review--> In Review
    In Progress --Stop Progress-->   To Do        In Review --Request changes--> In Progress
    To Do / In Progress / In Review --Resolve--> Done --Reopen--> To Do
Errors: {"errorMessages": [...], "errors": {...}}; injected rate limits: 429 + Retry-After;
outages: 503. Admin API (seed, move, stats, failure injection): see tracker_standin.py.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import threading
from datetime import datetime, timedelta, timezone

# Run as a script (a process of its own): its folder is on sys.path.
from tracker_standin import AdminError, BaseHandler, Clock, Faults, IssueIndex, Stats, run

CATEGORIES = {"new": {"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"},
              "indeterminate": {"id": 4, "key": "indeterminate", "colorName": "yellow", "name": "In Progress"},
              "done": {"id": 3, "key": "done", "colorName": "green", "name": "Done"}}
STATUSES = [("10000", "To Do", "new"), ("3", "In Progress", "indeterminate"),
            ("10001", "In Review", "indeterminate"), ("10002", "Done", "done")]
TRANSITIONS = [("11", "Start Progress", ("To Do",), "In Progress"),
               ("21", "Send to review", ("In Progress",), "In Review"),
               ("31", "Resolve", ("To Do", "In Progress", "In Review"), "Done"),
               ("41", "Stop Progress", ("In Progress",), "To Do"),
               ("51", "Request changes", ("In Review",), "In Progress"),
               ("61", "Reopen", ("Done",), "To Do")]
PRIORITIES = ["Highest", "High", "Medium", "Low", "Lowest"]  # ids "1".."5"
ISSUE_TYPES = [("10001", "Task"), ("10004", "Bug")]
ALL_FIELDS = ["summary", "description", "status", "priority", "labels", "created", "updated", "issuetype",
              "project", "assignee", "reporter", "resolution", "issuelinks", "comment"]
NAVIGABLE = [f for f in ALL_FIELDS if f != "comment"]
SEARCH_KEYS = {"jql", "nextPageToken", "maxResults", "fields", "expand", "properties", "fieldsByKeys",
               "failFast", "reconcileIssues"}
BULK_KEYS = {"issueIdsOrKeys", "fields", "expand", "properties", "fieldsByKeys"}
PAGE_MAX = 100
ISSUE_MISSING = "Issue does not exist or you do not have permission to see it."


class JiraError(Exception):
    def __init__(self, status: int, messages: list[str] | str = (), errors: dict | None = None) -> None:
        messages = [messages] if isinstance(messages, str) else list(messages)
        super().__init__("; ".join(messages) or json.dumps(errors))
        self.status, self.body = status, {"errorMessages": messages, "errors": errors or {}}


def jira_time(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


# ----- Atlassian Document Format ---------------------------------------------------------------------

INLINE = {"text", "hardBreak", "mention", "emoji", "inlineCard", "date", "status"}
CHILDREN = {
    "doc": {"paragraph", "heading", "bulletList", "orderedList", "codeBlock", "blockquote", "rule", "panel"},
    "paragraph": INLINE, "heading": INLINE,
    "bulletList": {"listItem"}, "orderedList": {"listItem"},
    "listItem": {"paragraph", "bulletList", "orderedList", "codeBlock"},
    "codeBlock": {"text"}, "blockquote": {"paragraph", "bulletList", "orderedList", "codeBlock"},
    "panel": {"paragraph", "heading", "bulletList", "orderedList"},
}
LEAVES = {"rule", "hardBreak", "mention", "emoji", "inlineCard", "date", "status", "text"}
MARKS = {"strong", "em", "code", "link", "strike", "underline", "textColor", "subsup"}


def adf_problem(node, parent: str = "", where: str = "body") -> str | None:
    """Why `node` is not valid ADF (None when it is): what Jira refuses with a 400."""
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        return f"{where}: a node must be an object with a type"
    kind = node["type"]
    if not parent:
        if kind != "doc" or node.get("version") != 1 or not isinstance(node.get("content"), list):
            return f"{where}: must be an Atlassian Document: {{type: doc, version: 1, content: [...]}}"
    elif kind not in CHILDREN.get(parent, set()):
        return f"{where}: {kind} is not allowed inside {parent}"
    if kind == "text":
        if not isinstance(node.get("text"), str) or not node["text"]:
            return f"{where}: a text node needs non-empty text"
        for mark in node.get("marks", []):
            if not isinstance(mark, dict) or mark.get("type") not in MARKS or parent == "codeBlock":
                return f"{where}: invalid mark {mark!r}"
            if mark["type"] == "link" and not isinstance((mark.get("attrs") or {}).get("href"), str):
                return f"{where}: a link mark needs attrs.href"
    if kind == "heading" and (node.get("attrs") or {}).get("level") not in range(1, 7):
        return f"{where}: a heading needs attrs.level 1-6"
    content = node.get("content")
    if kind in LEAVES:
        if content:
            return f"{where}: {kind} has no content"
        return None
    if content is None:
        content = []
    if not isinstance(content, list):
        return f"{where}: content must be a list"
    if kind in ("bulletList", "orderedList", "listItem") and not content:
        return f"{where}: {kind} needs content"
    for i, child in enumerate(content):
        problem = adf_problem(child, kind, f"{where}.content[{i}]")
        if problem:
            return problem
    return None


def adf_text(node) -> str:
    """ADF as plain text, for the admin view: paragraphs apart by a blank line, hardBreak a newline."""
    if not isinstance(node, dict):
        return ""
    kind = node.get("type")
    if kind == "text":
        return node.get("text", "")
    if kind == "hardBreak":
        return "\n"
    if kind == "mention":
        return (node.get("attrs") or {}).get("text", "")
    if kind == "inlineCard":
        return (node.get("attrs") or {}).get("url", "")
    if kind == "rule":
        return "---"
    children = node.get("content") or []
    if kind in ("doc", "blockquote", "panel", "listItem"):
        return "\n\n".join(adf_text(c) for c in children) if kind != "listItem" else "\n".join(adf_text(c) for c in children)
    if kind in ("bulletList", "orderedList"):
        return "\n".join(f"- {adf_text(c)}" for c in children)
    return "".join(adf_text(c) for c in children)


def text_adf(text: str) -> dict:
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        content = []
        for i, line in enumerate(block.split("\n")):
            if i:
                content.append({"type": "hardBreak"})
            if line:
                content.append({"type": "text", "text": line})
        paragraphs.append({"type": "paragraph", "content": content})
    return {"type": "doc", "version": 1, "content": paragraphs if text.strip() else []}


# ----- the world -------------------------------------------------------------------------------------

class Issue:
    def __init__(self, id_: str, key: str, project: dict, summary: str, status: tuple, at: datetime) -> None:
        self.id, self.key, self.project, self.summary, self.status = id_, key, project, summary, status
        self.description: dict | None = None
        self.priority: str | None = "Medium"
        self.labels: list[str] = []
        self.issuetype = ISSUE_TYPES[0]
        self.assignee: str | None = None
        self.comments: list[dict] = []
        self.history: list[dict] = []
        self.created = self.updated = at

    @property
    def number(self) -> int:
        return int(self.key.rsplit("-", 1)[1])


class World(IssueIndex):
    key_field = "key"

    def __init__(self, email: str, api_token: str, projects: list[str]) -> None:
        self.email, self.api_token = email, api_token
        self.lock = threading.RLock()
        self.stats, self.faults, self.clock = Stats(), Faults(), Clock()
        self.projects: dict[str, dict] = {}
        self.issues: dict[str, Issue] = {}  # by id
        self.next_id, self.next_comment = 10001, 10100
        self.me = {"accountId": "5b10a2844c20165700ede21g", "displayName": "Baton Bot"}
        self.human = {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Pat Person"}
        for key in projects:
            self.project(key)
        self.base_url = ""

    # ----- lookups ---------------------------------------------------------------------------

    def project(self, key: str) -> dict:
        if key not in self.projects:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,9}", key):
                raise AdminError(400, f"project key {key!r}: Jira keys are like SHOP")
            self.projects[key] = {"id": str(10000 + len(self.projects)), "key": key, "name": key.title(), "next": 1}
        return self.projects[key]

    @staticmethod
    def status_named(name: str) -> tuple | None:
        return next((s for s in STATUSES if s[1].lower() == str(name).lower() or s[0] == str(name)), None)

    # ----- changes ---------------------------------------------------------------------------

    def set_state(self, issue: Issue, name, by: str) -> None:
        status = name if isinstance(name, tuple) else self.status_named(name)
        if status is None:
            raise AdminError(400, f"no status {name!r} ({', '.join(s[1] for s in STATUSES)})")
        if status != issue.status:
            at = self.clock.now()
            issue.history.append({"from": issue.status[1], "to": status[1], "by": by, "at": jira_time(at)})
            issue.status, issue.updated = status, at

    def add_comment(self, issue: Issue, body, by: str) -> dict:
        at = self.clock.now()
        author = self.me if by == "api" else self.human
        comment = {"id": str(self.next_comment), "body": body if isinstance(body, dict) else text_adf(str(body)),
                   "author": author, "created": at, "by": by}
        self.next_comment += 1
        issue.comments.append(comment)
        return comment

    def update(self, issue: Issue, body: dict) -> None:
        if "title" in body:
            issue.summary = str(body["title"])
        if "description" in body:
            issue.description = _description(body["description"])
        if "labels" in body:
            issue.labels = [str(label) for label in body["labels"]]
        if "priority" in body:
            issue.priority = _priority(body["priority"])
        issue.updated = self.clock.now()

    def delete(self, issue: Issue) -> None:
        del self.issues[issue.id]

    def seed(self, body: dict) -> dict:
        for key in body.get("projects", []):
            self.project(key)
        created = []
        default = next(iter(self.projects))
        for spec in body.get("issues", []):
            project = self.project(spec.get("project") or default)
            status = self.status_named(spec.get("state", "To Do"))
            if status is None:
                raise AdminError(400, f"no status {spec.get('state')!r}")
            key = f"{project['key']}-{project['next']}"
            project["next"] += 1
            issue = Issue(str(self.next_id), key, project, str(spec.get("title") or spec.get("summary") or "Untitled"),
                          status, self.clock.now())
            self.next_id += 1
            issue.description = _description(spec.get("description"))
            issue.priority = _priority(spec.get("priority", "Medium"))
            issue.labels = [str(label) for label in spec.get("labels", [])]
            issue.assignee = self.me["accountId"] if spec.get("assignee") == "me" else spec.get("assignee")
            if spec.get("type") == "Bug":
                issue.issuetype = ISSUE_TYPES[1]
            self.issues[issue.id] = issue
            for text in spec.get("comments", []):
                self.add_comment(issue, text, by="human")
            created.append({"id": issue.id, "identifier": issue.key, "url": f"{self.base_url}/browse/{issue.key}"})
        return {"issues": created}

    # ----- admin views -----------------------------------------------------------------------

    def summary(self, issue: Issue) -> dict:
        return {"id": issue.id, "identifier": issue.key, "title": issue.summary,
                "description": adf_text(issue.description) if issue.description else None,
                "state": issue.status[1], "state_type": issue.status[2], "labels": list(issue.labels),
                "priority": issue.priority, "project": issue.project["key"],
                "url": f"{self.base_url}/browse/{issue.key}", "updated_at": jira_time(issue.updated)}

    def view(self, issue: Issue) -> dict:
        return {**self.summary(issue),
                "comments": [{"id": c["id"], "body": adf_text(c["body"]), "raw": c["body"],
                              "created_at": jira_time(c["created"]), "by": c["by"]} for c in issue.comments],
                "history": list(issue.history)}

    def views(self) -> list[dict]:
        return [self.summary(issue) for issue in self.issues.values()]

    # ----- API shapes ------------------------------------------------------------------------

    def status_json(self, status: tuple) -> dict:
        id_, name, category = status
        cat = CATEGORIES[category]
        return {"self": f"{self.base_url}/rest/api/3/status/{id_}", "description": "",
                "iconUrl": f"{self.base_url}/images/icons/statuses/generic.png",
                "name": name, "untranslatedName": name, "id": id_,
                "statusCategory": {"self": f"{self.base_url}/rest/api/3/statuscategory/{cat['id']}", **cat}}

    def user_json(self, user: dict | None) -> dict | None:
        if user is None:
            return None
        return {"self": f"{self.base_url}/rest/api/3/user?accountId={user['accountId']}", "accountId": user["accountId"],
                "displayName": user["displayName"], "active": True, "accountType": "atlassian"}

    def comment_json(self, issue: Issue, comment: dict) -> dict:
        return {"self": f"{self.base_url}/rest/api/3/issue/{issue.id}/comment/{comment['id']}", "id": comment["id"],
                "author": self.user_json(comment["author"]), "updateAuthor": self.user_json(comment["author"]),
                "body": comment["body"], "created": jira_time(comment["created"]),
                "updated": jira_time(comment["created"]), "jsdPublic": True}

    def field(self, issue: Issue, name: str):
        if name == "summary":
            return issue.summary
        if name == "description":
            return issue.description
        if name == "status":
            return self.status_json(issue.status)
        if name == "priority":
            if issue.priority is None:
                return None
            pid = str(PRIORITIES.index(issue.priority) + 1)
            return {"self": f"{self.base_url}/rest/api/3/priority/{pid}", "name": issue.priority, "id": pid}
        if name == "labels":
            return list(issue.labels)
        if name in ("created", "updated"):
            return jira_time(getattr(issue, name))
        if name == "issuetype":
            return {"id": issue.issuetype[0], "name": issue.issuetype[1], "subtask": False}
        if name == "project":
            p = issue.project
            return {"self": f"{self.base_url}/rest/api/3/project/{p['id']}", "id": p["id"], "key": p["key"],
                    "name": p["name"]}
        if name == "assignee":
            return self.user_json(self.me) if issue.assignee == self.me["accountId"] else None
        if name == "reporter":
            return self.user_json(self.human)
        if name == "resolution":
            return {"id": "10000", "name": "Done"} if issue.status[2] == "done" else None
        if name == "issuelinks":
            return []
        if name == "comment":
            return {"comments": [self.comment_json(issue, c) for c in issue.comments], "maxResults": len(issue.comments),
                    "total": len(issue.comments), "startAt": 0}
        raise KeyError(name)

    def issue_json(self, issue: Issue, fields: list[str] | None, default: list[str]) -> dict:
        wanted = select_fields(fields, default)
        if wanted is None:  # search/jql without `fields`: ids only
            return {"id": issue.id}
        return {"expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
                "id": issue.id, "self": f"{self.base_url}/rest/api/3/issue/{issue.id}", "key": issue.key,
                "fields": {name: self.field(issue, name) for name in ALL_FIELDS if name in wanted}}


def _priority(value) -> str | None:
    if value is None or value == 0:
        return None
    if isinstance(value, int) and 1 <= value <= 5:
        return PRIORITIES[value - 1]
    if value in PRIORITIES:
        return value
    raise AdminError(400, f"priority {value!r}: one of {', '.join(PRIORITIES)} (or 1-5)")


def _description(value) -> dict | None:
    if value is None or isinstance(value, dict):
        return value
    return text_adf(str(value))


def select_fields(fields: list[str] | None, default: list[str]) -> set[str] | None:
    """Jira's `fields`: names, *all, *navigable, -name (exclude); comma lists allowed."""
    if fields is None:
        return None if not default else set(default)
    names = [n.strip() for item in fields for n in str(item).split(",") if n.strip()]
    wanted: set[str] = set()
    for name in names:
        if name == "*all":
            wanted |= set(ALL_FIELDS)
        elif name == "*navigable":
            wanted |= set(NAVIGABLE)
    if not wanted and all(n.startswith("-") for n in names):
        wanted = set(default or NAVIGABLE)
    wanted |= {n for n in names if not n.startswith(("-", "*"))}
    wanted -= {n[1:] for n in names if n.startswith("-")}
    return wanted


# ----- JQL -------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<op>!=|!~|>=|<=|=|~|>|<)"""
                       r"""|(?P<punct>[(),])|(?P<word>[^\s"'(),=!~<>]+))""")
_KEYWORDS = {"and", "or", "not", "in", "is", "order", "by", "asc", "desc", "empty", "null"}
_FIELDS = {"project": "enum", "status": "enum", "statuscategory": "enum", "priority": "enum", "labels": "multi",
           "key": "enum", "issuekey": "enum", "id": "enum", "issuetype": "enum", "type": "enum",
           "assignee": "enum", "resolution": "enum", "summary": "text", "description": "text", "text": "text",
           "created": "date", "createddate": "date", "updated": "date", "updateddate": "date"}
_SORTABLE = {"created", "createddate", "updated", "updateddate", "priority", "key", "issuekey", "id", "status",
             "summary", "rank", "project"}
_OPS = {"enum": {"=", "!=", "in", "not in", "is", "is not"}, "multi": {"=", "!=", "in", "not in", "is", "is not"},
        "text": {"~", "!~", "is", "is not"}, "date": {"=", "!=", ">", ">=", "<", "<=", "is", "is not"}}
UNBOUNDED = "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."


def _bad_jql(message: str) -> JiraError:
    return JiraError(400, [message])


class Jql:
    """Parse a JQL string into (predicate, sort key list), validating values against the world."""

    def __init__(self, text: str, world: World) -> None:
        self.text, self.world = text, world
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text):
            match = _TOKEN_RE.match(text, position)
            if match is None or match.end() == position:
                if text[position:].strip() == "":
                    break
                raise _bad_jql(f"Error in the JQL Query: The character '{text[position:].strip()[0]}' is a reserved "
                               f"JQL character. (line 1, character {position + 1})")
            kind = match.lastgroup
            if kind is None:
                break
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.pos = 0

    # ----- tokens ----------------------------------------------------------------------------

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def keyword(self, word: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token is not None and token[0] == "word" and token[1].lower() == word

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise _bad_jql("Error in the JQL Query: The query ended unexpectedly.")
        self.pos += 1
        return token

    def expect(self, text: str) -> None:
        token = self.take()
        if token[1].lower() != text:
            raise _bad_jql(f"Error in the JQL Query: Expecting '{text}' but got '{token[1]}'.")

    # ----- grammar ---------------------------------------------------------------------------

    def parse(self):
        expr = None
        if self.peek() is not None and not self.keyword("order"):
            expr = self.or_expr()
        order: list[tuple[str, bool]] = []
        if self.keyword("order"):
            self.take()
            self.expect("by")
            while True:
                field = self.value_text(self.take()).lower()
                if field not in _SORTABLE:
                    raise _bad_jql(f"Not able to sort using field '{field}'.")
                descending = False
                if self.keyword("asc") or self.keyword("desc"):
                    descending = self.take()[1].lower() == "desc"
                order.append((field, descending))
                if self.peek() and self.peek()[1] == ",":
                    self.take()
                    continue
                break
        if self.peek() is not None:
            raise _bad_jql(f"Error in the JQL Query: Expecting either 'OR' or 'AND' but got '{self.peek()[1]}'.")
        return expr, order

    def or_expr(self):
        parts = [self.and_expr()]
        while self.keyword("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def and_expr(self):
        parts = [self.not_expr()]
        while self.keyword("and"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def not_expr(self):
        if self.keyword("not"):
            self.take()
            return ("not", self.not_expr())
        if self.peek() and self.peek()[1] == "(":
            self.take()
            inner = self.or_expr()
            self.expect(")")
            return inner
        return self.clause()

    @staticmethod
    def value_text(token: tuple[str, str]) -> str:
        kind, text = token
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        return text

    def value(self):
        token = self.take()
        if token[0] == "word" and token[1].lower() in ("empty", "null"):
            return None
        if token[0] == "word" and self.peek() and self.peek()[1] == "(":  # a function: currentUser()
            self.take()
            self.expect(")")
            return ("fn", token[1].lower())
        if token[0] not in ("str", "word"):
            raise _bad_jql(f"Error in the JQL Query: Expecting a value but got '{token[1]}'.")
        return self.value_text(token)

    def clause(self):
        token = self.take()
        if token[0] not in ("str", "word") or (token[0] == "word" and token[1].lower() in _KEYWORDS):
            raise _bad_jql(f"Error in the JQL Query: Expecting a field name but got '{token[1]}'.")
        field = self.value_text(token).lower()
        if field not in _FIELDS:
            raise _bad_jql(f"Field '{self.value_text(token)}' does not exist or you do not have permission to view it.")
        kind = _FIELDS[field]
        if self.keyword("not") and self.keyword("in", 1):
            self.take(), self.take()
            op = "not in"
        elif self.keyword("in"):
            self.take()
            op = "in"
        elif self.keyword("is"):
            self.take()
            op = "is"
            if self.keyword("not"):
                self.take()
                op = "is not"
        else:
            op_token = self.take()
            if op_token[0] != "op":
                raise _bad_jql(f"Error in the JQL Query: Expecting operator but got '{op_token[1]}'.")
            op = op_token[1]
        if op not in _OPS[kind]:
            raise _bad_jql(f"The operator '{op.upper()}' is not supported by the '{field}' field.")
        if op in ("in", "not in"):
            self.expect("(")
            values = [self.value()]
            while self.peek() and self.peek()[1] == ",":
                self.take()
                values.append(self.value())
            self.expect(")")
        else:
            values = [self.value()]
            if op in ("is", "is not") and values != [None]:
                raise _bad_jql(f"The operator '{op.upper()}' only takes EMPTY or NULL.")
        return ("clause", field, op, [self.check(field, v) for v in values])

    # ----- values ----------------------------------------------------------------------------

    def check(self, field: str, value):
        """The value as the evaluator compares it; an unknown one is a 400, as in Jira."""
        if value is None:
            return None
        if field == "assignee":
            return self.world.me["accountId"] if value == ("fn", "currentuser") else value
        if isinstance(value, tuple):
            raise _bad_jql(f"Unable to find JQL function '{value[1]}()'.")
        lower = value.lower()
        if field == "project":
            for p in self.world.projects.values():
                if lower in (p["key"].lower(), p["name"].lower(), p["id"]):
                    return p["key"]
        elif field == "status":
            status = self.world.status_named(value)
            if status:
                return status[1]
        elif field == "statuscategory":
            for key, cat in CATEGORIES.items():
                if lower in (key, cat["name"].lower(), str(cat["id"])):
                    return key
        elif field == "priority":
            for name in PRIORITIES:
                if lower == name.lower():
                    return name
        elif field in ("issuetype", "type"):
            for _, name in ISSUE_TYPES:
                if lower == name.lower():
                    return name
        elif field in ("key", "issuekey", "id"):
            issue = self.world.lookup(value)
            if issue is not None:
                return issue.id
            raise _bad_jql(f"An issue with key '{value}' does not exist for field '{field}'.")
        elif field == "resolution":
            if lower in ("unresolved", "done"):
                return lower
        elif field in ("created", "createddate", "updated", "updateddate"):
            return _jql_date(value)
        else:  # labels, text fields: any value
            return value
        raise _bad_jql(f"The value '{value}' does not exist for the field '{field}'.")


def _jql_date(value: str) -> datetime:
    relative = re.fullmatch(r"([-+]?)(\d+)([wdhm])", value.strip())
    if relative:
        sign, amount, unit = relative.groups()
        delta = timedelta(**{{"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}[unit]: int(amount)})
        return datetime.now(timezone.utc) + (-delta if sign == "-" else delta)
    for pattern in ("%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d", "%Y/%m/%d"):
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise _bad_jql(f"Date value '{value}' for field 'created' is invalid. Valid formats include: 'yyyy/MM/dd HH:mm', "
                   "'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'.")


def _values_of(issue: Issue, field: str) -> list:
    """The issue's values for a JQL field ([] when empty)."""
    one = {
        "project": issue.project["key"], "status": issue.status[1], "statuscategory": issue.status[2],
        "priority": issue.priority, "key": issue.id, "issuekey": issue.id, "id": issue.id,
        "issuetype": issue.issuetype[1], "type": issue.issuetype[1], "assignee": issue.assignee,
        "resolution": "done" if issue.status[2] == "done" else None, "summary": issue.summary,
        "description": adf_text(issue.description) if issue.description else None,
        "created": issue.created, "createddate": issue.created, "updated": issue.updated, "updateddate": issue.updated,
    }
    if field == "labels":
        return list(issue.labels)
    if field == "text":
        return [v for v in (issue.summary, one["description"]) if v]
    value = one[field]
    return [] if value is None else [value]


def evaluate(expr, issue: Issue) -> bool:
    if expr is None:
        return True
    kind = expr[0]
    if kind == "and":
        return all(evaluate(e, issue) for e in expr[1])
    if kind == "or":
        return any(evaluate(e, issue) for e in expr[1])
    if kind == "not":
        return not evaluate(expr[1], issue)
    _, field, op, values = expr
    have = _values_of(issue, field)
    if op == "is":
        return not have
    if op == "is not":
        return bool(have)
    if field == "resolution" and values == ["unresolved"]:
        return (not have) if op in ("=", "in") else bool(have)
    if op in ("=", "in"):
        return any(v in have for v in values)
    if op in ("!=", "not in"):
        return bool(have) and not any(v in have for v in values)
    if op in ("~", "!~"):
        words = [w.lower() for w in re.findall(r"\w+", values[0])]
        text = " ".join(have).lower()
        found = all(w in text for w in words)
        return found if op == "~" else not found
    if not have:
        return False
    value, moment = have[0], values[0]
    return {">": value > moment, ">=": value >= moment, "<": value < moment, "<=": value <= moment}[op]


def bounded(expr) -> bool:
    """Does the query restrict itself to named projects (what the search API insists on)?"""
    if expr is None:
        return False
    kind = expr[0]
    if kind == "and":
        return any(bounded(e) for e in expr[1])
    if kind == "or":
        return all(bounded(e) for e in expr[1])
    if kind == "not":
        return False
    return expr[1] == "project" and expr[2] in ("=", "in") and None not in expr[3]


def sort_issues(issues: list[Issue], order: list[tuple[str, bool]]) -> list[Issue]:
    rank = {name: i for i, name in enumerate(PRIORITIES)}
    keys = {"created": lambda i: i.created, "createddate": lambda i: i.created, "updated": lambda i: i.updated,
            "updateddate": lambda i: i.updated, "key": lambda i: (i.project["key"], i.number),
            "issuekey": lambda i: (i.project["key"], i.number), "id": lambda i: int(i.id),
            "status": lambda i: i.status[1], "summary": lambda i: i.summary.lower(), "rank": lambda i: int(i.id),
            "project": lambda i: i.project["key"],
            # DESC puts the most important first: sort on the negated rank (no priority: last)
            "priority": lambda i: -rank.get(i.priority, len(PRIORITIES))}
    ordered = sorted(issues, key=lambda i: int(i.id), reverse=True)
    for field, descending in reversed(order or [("created", True)]):
        ordered.sort(key=keys[field], reverse=descending)
    return ordered


# ----- HTTP ------------------------------------------------------------------------------------------

def _page_token(offset: int, jql: str) -> str:
    state = {"o": offset, "q": hashlib.sha1(jql.encode()).hexdigest()[:12]}
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode()


def _page_offset(token: str, jql: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
        if data["q"] == hashlib.sha1(jql.encode()).hexdigest()[:12] and isinstance(data["o"], int):
            return data["o"]
    except (ValueError, KeyError, TypeError):
        pass
    raise JiraError(400, ["The provided next page token is invalid or expired."])


def _int_param(value, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).lstrip("-").isdigit():
        raise JiraError(400, [f"Invalid value for '{name}': {value!r}."])
    return int(value)


def _fields_param(value, where: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise JiraError(400, [f"'{where}' must be a list of field names."])
    return value


class JiraHandler(BaseHandler):
    def api(self, method: str, path: str) -> str:
        world = self.world
        op, handler, args = self.operation(method, path)
        fault = world.faults.take()
        if fault and fault["mode"] == "outage":
            self.send(503, text="<html><body><h1>Service Unavailable</h1><p>Jira is down for maintenance.</p></body></html>",
                      content_type="text/html", headers={"Retry-After": int(fault["retry_after"])})
            return op
        if not self.authenticated():
            self.send(401, text="Client must be authenticated to access this resource.", content_type="text/plain",
                      headers={"WWW-Authenticate": 'Basic realm="protected-by-api-token"'})
            return op
        if fault and fault["mode"] == "rate_limit":
            retry = fault["retry_after"]
            reset = datetime.now(timezone.utc) + timedelta(seconds=retry)
            self.send(fault["status"] or 429, {"errorMessages": ["Rate limit exceeded."], "errors": {}},
                      {"Retry-After": int(retry) if float(retry).is_integer() else retry,
                       "X-RateLimit-Limit": 100, "X-RateLimit-Remaining": 0,
                       "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "RateLimit-Reason": "jira-burst-based"})
            return op
        try:
            if handler is None:
                raise JiraError(404, [f"No resource found for {method} {path}."])
            body = None
            if method in ("POST", "PUT"):
                try:
                    body = self.json_body()
                except ValueError:
                    raise JiraError(400, ["Unexpected character in the request body: it is not JSON."]) from None
            with world.lock:
                status, data = handler(body, *args)
        except JiraError as exc:
            status, data = exc.status, exc.body
        self.send(status, data)
        return op

    def authenticated(self) -> bool:
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except ValueError:
            return False
        return decoded == f"{self.world.email}:{self.world.api_token}"

    def operation(self, method: str, path: str):
        """(operation name, handler, args) for a request; handler None: no such resource."""
        prefix = "/rest/api/3/"
        if not path.startswith(prefix):
            return "unknown", None, ()
        parts = path[len(prefix):].strip("/").split("/")
        routes = {
            ("GET", ("myself",)): ("myself", self.myself),
            ("POST", ("search", "jql")): ("search", self.search),
            ("GET", ("search", "jql")): ("search", self.search_get),
            ("GET", ("search",)): ("search_removed", self.removed),
            ("POST", ("search",)): ("search_removed", self.removed),
            ("POST", ("issue", "bulkfetch")): ("bulkfetch", self.bulkfetch),
        }
        if (method, tuple(parts)) in routes:
            op, handler = routes[(method, tuple(parts))]
            return op, handler, ()
        if parts[0] == "issue" and len(parts) in (2, 3):
            tail = parts[2] if len(parts) == 3 else ""
            table = {("GET", ""): ("get_issue", self.get_issue), ("GET", "transitions"): ("transitions", self.transitions),
                     ("POST", "transitions"): ("transition", self.transition),
                     ("GET", "comment"): ("comments", self.comments),
                     ("POST", "comment"): ("add_comment", self.add_comment)}
            if (method, tail) in table:
                op, handler = table[(method, tail)]
                return op, handler, (parts[1],)
        if method == "GET" and len(parts) == 3 and parts[0] == "project" and parts[2] == "statuses":
            return "statuses", self.statuses, (parts[1],)
        return "unknown", None, ()

    # ----- resources -------------------------------------------------------------------------

    def issue(self, ref: str) -> Issue:
        issue = self.world.lookup(ref)
        if issue is None:
            raise JiraError(404, [ISSUE_MISSING])
        return issue

    def query_list(self, name: str) -> list[str] | None:
        return self.query.get(name)

    def myself(self, _body):
        w = self.world
        return 200, {"self": f"{w.base_url}/rest/api/3/user?accountId={w.me['accountId']}", "accountId": w.me["accountId"],
                     "accountType": "atlassian", "emailAddress": w.email, "displayName": w.me["displayName"],
                     "active": True, "timeZone": "Etc/UTC", "locale": "en_US"}

    def removed(self, _body):
        return 410, {"errorMessages": ["The requested API has been removed. Please migrate to the /rest/api/3/search/jql "
                                       "API. A full migration guideline is available at "
                                       "https://developer.atlassian.com/changelog/#CHANGE-2046"], "errors": {}}

    def search_get(self, _body):
        query = {k: v[-1] for k, v in self.query.items()}
        body = {k: query[k] for k in ("jql", "nextPageToken", "maxResults") if k in query}
        if "fields" in self.query:
            body["fields"] = self.query["fields"]
        return self.search(body)

    def search(self, body):
        if not isinstance(body, dict):
            raise JiraError(400, ["The request body must be a JSON object."])
        unknown = sorted(set(body) - SEARCH_KEYS)
        if unknown:
            raise JiraError(400, [f"Unrecognized field \"{unknown[0]}\" in the request: this API takes "
                                  f"{', '.join(sorted(SEARCH_KEYS))}."])
        jql = body.get("jql")
        if not isinstance(jql, str) or not jql.strip():
            raise JiraError(400, [UNBOUNDED])
        fields = _fields_param(body.get("fields"), "fields")
        size = _int_param(body.get("maxResults"), "maxResults", 50)
        if size < 0:
            raise JiraError(400, ["'maxResults' must not be negative."])
        expr, order = Jql(jql, self.world).parse()
        if not bounded(expr):
            raise JiraError(400, [UNBOUNDED])
        ids_only = select_fields(fields, []) in (None, {"id"}, {"key"}, {"id", "key"})
        size = min(size, 5000 if ids_only else PAGE_MAX)
        offset = _page_offset(body["nextPageToken"], jql) if body.get("nextPageToken") is not None else 0
        found = sort_issues([i for i in self.world.issues.values() if evaluate(expr, i)], order)
        page = found[offset:offset + size]
        answer = {"issues": [self.world.issue_json(i, fields, []) for i in page]}
        if offset + size < len(found):
            answer["nextPageToken"] = _page_token(offset + size, jql)
        answer["isLast"] = offset + size >= len(found)
        return 200, answer

    def bulkfetch(self, body):
        if not isinstance(body, dict):
            raise JiraError(400, ["The request body must be a JSON object."])
        unknown = sorted(set(body) - BULK_KEYS)
        if unknown:
            raise JiraError(400, [f"Unrecognized field \"{unknown[0]}\" in the request."])
        refs = body.get("issueIdsOrKeys")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise JiraError(400, [], {"issueIdsOrKeys": "Provide between 1 and 100 issue ids or keys."})
        if len(refs) > 100:
            raise JiraError(400, [], {"issueIdsOrKeys": "Provide between 1 and 100 issue ids or keys."})
        fields = _fields_param(body.get("fields"), "fields")
        issues, errors = [], []
        for ref in refs:
            issue = self.world.lookup(ref)
            if issue is None:
                errors.append({"id": ref, "errorMessages": [ISSUE_MISSING], "errors": {}, "status": 404})
            elif all(i["id"] != issue.id for i in issues):
                issues.append(self.world.issue_json(issue, fields, NAVIGABLE))
        return 200, {"expand": "schema,names", "issues": issues, "issueErrors": errors}

    def get_issue(self, _body, ref):
        return 200, self.world.issue_json(self.issue(ref), self.query_list("fields"), ALL_FIELDS)

    def transitions(self, _body, ref):
        issue = self.issue(ref)
        found = []
        for tid, name, sources, target in TRANSITIONS:
            if issue.status[1] in sources:
                to = self.world.status_named(target)
                found.append({"id": tid, "name": name, "to": self.world.status_json(to), "hasScreen": False,
                              "isGlobal": False, "isInitial": False, "isAvailable": True, "isConditional": False,
                              "isLooped": False})
        return 200, {"expand": "transitions", "transitions": found}

    def transition(self, body, ref):
        issue = self.issue(ref)
        if not isinstance(body, dict):
            raise JiraError(400, ["The request body must be a JSON object."])
        unknown = sorted(set(body) - {"transition", "fields", "update", "historyMetadata", "properties"})
        if unknown:
            raise JiraError(400, [f"Unrecognized field \"{unknown[0]}\" in the request."])
        transition = body.get("transition")
        tid = transition.get("id") if isinstance(transition, dict) else None
        if tid is None:
            raise JiraError(400, ["Missing 'transition' identifier"])
        for t_id, _name, sources, target in TRANSITIONS:
            if t_id == str(tid) and issue.status[1] in sources:
                self.world.set_state(issue, target, by="api")
                return 204, None
        raise JiraError(400, [f"Transition id '{tid}' is not valid for this issue."])

    def comments(self, _body, ref):
        issue = self.issue(ref)
        query = {k: v[-1] for k, v in self.query.items()}
        start = _int_param(query.get("startAt"), "startAt", 0)
        size = min(max(_int_param(query.get("maxResults"), "maxResults", 50), 0), PAGE_MAX)
        ordered = sorted(issue.comments, key=lambda c: c["created"], reverse=query.get("orderBy") == "-created")
        page = ordered[max(start, 0):max(start, 0) + size]
        return 200, {"startAt": start, "maxResults": size, "total": len(ordered),
                     "comments": [self.world.comment_json(issue, c) for c in page]}

    def add_comment(self, body, ref):
        issue = self.issue(ref)
        if not isinstance(body, dict) or "body" not in body:
            raise JiraError(400, [], {"comment": "Comment body can not be empty!"})
        unknown = sorted(set(body) - {"body", "visibility", "properties"})
        if unknown:
            raise JiraError(400, [f"Unrecognized field \"{unknown[0]}\" in the request."])
        problem = adf_problem(body["body"])
        if problem:
            raise JiraError(400, [], {"comment": f"Comment body is not valid! ({problem})"})
        if not adf_text(body["body"]).strip():
            raise JiraError(400, [], {"comment": "Comment body can not be empty!"})
        comment = self.world.add_comment(issue, body["body"], by="api")
        return 201, self.world.comment_json(issue, comment)

    def statuses(self, _body, key):
        project = self.world.projects.get(key.upper()) or next(
            (p for p in self.world.projects.values() if p["id"] == key), None)
        if project is None:
            raise JiraError(404, [f"No project could be found with key '{key}'."])
        statuses = [self.world.status_json(s) for s in STATUSES]
        return 200, [{"self": f"{self.world.base_url}/rest/api/3/issuetype/{tid}", "id": tid, "name": name,
                      "subtask": False, "statuses": statuses} for tid, name in ISSUE_TYPES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--email", required=True)
    parser.add_argument("--api-token", required=True)
    parser.add_argument("--project", action="append", help="a project key (repeatable; default SHOP)")
    parser.add_argument("--seed", help="a JSON file in the shape of POST /_admin/seed")
    parser.add_argument("--ready-file", help="write the base URL here once listening")
    parser.add_argument("--parent-stdin", action="store_true", help="exit when stdin closes (the parent is gone)")
    args = parser.parse_args(argv)
    world = World(args.email, args.api_token, args.project or ["SHOP"])
    run(world, JiraHandler, args.port, args.ready_file, seed=args.seed, parent_stdin=args.parent_stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
