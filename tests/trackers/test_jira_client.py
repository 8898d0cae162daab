"""The Jira client against canned answers (pytest-httpx): every request it sends and every way
Jira answers. The same client against a stand-in Jira process: test_contract.py."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from backend.sources.config import SourceConfig
from backend.trackers import TRACKERS, make_tracker
from backend.trackers.base import AuthError, BadQuery, Issue, NotFound, RateLimited, ServerError, TrackerError
from backend.trackers.jira import JiraTracker
from backend.trackers.jira.adf import text_to_adf

SITE = "https://acme.atlassian.net"
API = f"{SITE}/rest/api/3"
EMAIL = "bot@acme.test"
TOKEN = "ATATT3xSup3rSecretTokenValue"
NOW = 1_700_000_000.0
BASIC = "Basic " + base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
FIELDS = ["summary", "description", "status", "priority", "labels", "updated"]


class Sleeps(list):
    """Stands in for asyncio.sleep: records each wait instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def config(**filter_) -> SourceConfig:
    return SourceConfig(kind="jira", base_url=SITE, email="$JIRA_EMAIL", api_token="$JIRA_API_TOKEN",
                        filter=filter_ or {"project": "SHOP"})


def jira(max_wait: float = 60.0, **filter_) -> tuple[JiraTracker, Sleeps]:
    sleeps = Sleeps()
    tracker = JiraTracker(config(**filter_), {"email": EMAIL, "api_token": TOKEN}, max_wait=max_wait,
                          sleep=sleeps, clock=lambda: NOW)
    return tracker, sleeps


def run(coro):
    return asyncio.run(coro)


def fails(coro, kind: type[TrackerError]) -> TrackerError:
    """Run `coro`, expect `kind`, and check the API token is nowhere in what people will read."""
    with pytest.raises(kind) as caught:
        run(coro)
    assert TOKEN not in str(caught.value) and TOKEN not in caught.value.message
    return caught.value


def node(n: int, status: str = "To Do", category: str = "new", priority: str | None = "High", **fields) -> dict:
    return {"id": str(10000 + n), "key": f"SHOP-{n}", "fields": {
        "summary": f"Issue {n}", "description": text_to_adf(f"Do {n}\n\nCarefully."),
        "status": {"id": "1", "name": status, "statusCategory": {"key": category}},
        "priority": {"name": priority} if priority else None, "labels": ["baton"],
        "updated": "2026-11-20T10:00:00.000+0100", **fields}}


def an_issue(status: str = "To Do") -> Issue:
    return Issue(id="10001", identifier="SHOP-1", title="t", description="", url=None, state=status)


def sent(httpx_mock) -> list[httpx.Request]:
    return httpx_mock.get_requests()


def body(request: httpx.Request) -> dict:
    return json.loads(request.content)


# ----- reading issues --------------------------------------------------------------------------

def test_active_issues_search_every_page_with_bounded_jql(httpx_mock):
    httpx_mock.add_response(url=f"{API}/search/jql", method="POST",
                            json={"issues": [node(1), node(2)], "nextPageToken": "tok2", "isLast": False})
    httpx_mock.add_response(url=f"{API}/search/jql", method="POST", json={"issues": [node(3)], "isLast": True})
    tracker, _ = jira(project="SHOP", labels=["baton"], jql="assignee = currentUser()")

    issues = run(tracker.active_issues(["To Do", "In Progress"]))

    assert [i.identifier for i in issues] == ["SHOP-1", "SHOP-2", "SHOP-3"]
    assert issues[0] == Issue(
        id="10001", identifier="SHOP-1", title="Issue 1", description="Do 1\n\nCarefully.",
        url=f"{SITE}/browse/SHOP-1", state="To Do", state_type="new", priority=2, labels=("baton",),
        updated_at=datetime(2026, 11, 20, 10, 0, tzinfo=timezone(timedelta(hours=1))))
    first, second = sent(httpx_mock)
    assert body(first) == {
        "jql": 'project = "SHOP" AND status IN ("To Do","In Progress") AND labels IN ("baton") '
               'AND (assignee = currentUser()) ORDER BY created ASC',
        "fields": FIELDS, "maxResults": 100}  # no startAt: Jira refuses unknown keys
    assert body(second) == {**body(first), "nextPageToken": "tok2"}
    assert first.headers["Authorization"] == BASIC
    assert tracker.counter.by_operation == {"active_issues": 2}


def test_the_plainest_jql_is_project_and_status(httpx_mock):
    httpx_mock.add_response(url=f"{API}/search/jql", json={"issues": [], "isLast": True})
    tracker, _ = jira(project="SHOP")
    assert run(tracker.active_issues(["To Do"])) == []
    assert body(sent(httpx_mock)[0])["jql"] == 'project = "SHOP" AND status IN ("To Do") ORDER BY created ASC'


def test_no_states_means_no_search(httpx_mock):
    tracker, _ = jira()
    assert run(tracker.active_issues([])) == [] and run(tracker.issues_by_ids([])) == []
    assert tracker.counter.calls == 0


@pytest.mark.parametrize("name, number", [
    ("Highest", 1), ("High", 2), ("Medium", 3), ("Low", 4), ("Lowest", 4), ("Blocker", None), (None, None)])
def test_priorities_map_to_one_to_four(httpx_mock, name, number):
    httpx_mock.add_response(url=f"{API}/issue/10001?fields={','.join(FIELDS)}", json=node(1, priority=name))
    tracker, _ = jira()
    assert run(tracker.get_issue("10001")).priority == number


def test_issues_by_ids_bulkfetch_in_chunks_of_100(httpx_mock):
    ids = [str(10000 + n) for n in range(150)]
    httpx_mock.add_response(url=f"{API}/issue/bulkfetch", json={"issues": [node(1)], "issueErrors": [
        {"issueIdsOrKeys": ["10002"], "status": 404, "elementErrors": {"errorMessages": ["not found"]}}]})
    httpx_mock.add_response(url=f"{API}/issue/bulkfetch", json={"issues": [node(120)], "issueErrors": []})
    tracker, _ = jira()

    issues = run(tracker.issues_by_ids(ids))

    assert [i.identifier for i in issues] == ["SHOP-1", "SHOP-120"]  # unknown ids left out
    first, second = sent(httpx_mock)
    assert body(first) == {"issueIdsOrKeys": ids[:100], "fields": FIELDS}
    assert body(second) == {"issueIdsOrKeys": ids[100:], "fields": FIELDS}


def test_get_issue_names_its_fields(httpx_mock):
    httpx_mock.add_response(url=f"{API}/issue/SHOP-1?fields={','.join(FIELDS)}", method="GET",
                            json=node(1, description=None))
    tracker, _ = jira()
    issue = run(tracker.get_issue("SHOP-1"))
    assert issue.identifier == "SHOP-1" and issue.description == ""


def test_an_unknown_issue_is_not_found(httpx_mock):
    httpx_mock.add_response(status_code=404, json={
        "errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}})
    tracker, _ = jira()
    err = fails(tracker.get_issue("SHOP-404"), NotFound)
    assert "SHOP-404" in err.message and "Issue does not exist" in err.message


def test_workflow_states_are_the_projects_deduplicated(httpx_mock):
    todo = {"id": "1", "name": "To Do", "statusCategory": {"key": "new"}}
    done = {"id": "3", "name": "Done", "statusCategory": {"key": "done"}}
    httpx_mock.add_response(url=f"{API}/project/SHOP/statuses", json=[
        {"id": "10001", "name": "Task", "statuses": [todo, done]},
        {"id": "10002", "name": "Bug", "statuses": [todo, {"id": "2", "name": "In Progress",
                                                           "statusCategory": {"key": "indeterminate"}}]}])
    tracker, _ = jira()
    states = run(tracker.workflow_states())
    assert [(s.id, s.name, s.type) for s in states] == [
        ("1", "To Do", "new"), ("3", "Done", "done"), ("2", "In Progress", "indeterminate")]


# ----- moves ---------------------------------------------------------------------------------

TRANSITIONS = {"transitions": [
    {"id": "21", "name": "Start Progress", "to": {"id": "2", "name": "In Progress",
                                                   "statusCategory": {"key": "indeterminate"}}},
    {"id": "31", "name": "Resolve", "to": {"id": "3", "name": "Done", "statusCategory": {"key": "done"}}}]}


def test_move_takes_the_transition_to_the_state(httpx_mock):
    httpx_mock.add_response(url=f"{API}/issue/10001/transitions", method="GET", json=TRANSITIONS)
    httpx_mock.add_response(url=f"{API}/issue/10001/transitions", method="POST", status_code=204)
    tracker, _ = jira()

    moved = run(tracker.move(an_issue("To Do"), "done"))  # matched on the target status, any case

    assert (moved.state, moved.state_type) == ("Done", "done")
    assert body(sent(httpx_mock)[1]) == {"transition": {"id": "31"}}
    assert tracker.counter.by_operation == {"transitions": 1, "move": 1}


def test_move_to_the_status_it_is_in_sends_nothing(httpx_mock):
    tracker, _ = jira()
    issue = an_issue("In Progress")
    assert run(tracker.move(issue, "In Progress")) is issue and tracker.counter.calls == 0


def test_move_without_a_transition_names_what_is_available(httpx_mock):
    httpx_mock.add_response(url=f"{API}/issue/10001/transitions", json={"transitions": TRANSITIONS["transitions"][:1]})
    httpx_mock.add_response(url=f"{API}/issue/10001?fields={','.join(FIELDS)}", json=node(1, "To Do"))
    tracker, _ = jira()

    err = fails(tracker.move(an_issue("To Do"), "Done"), NotFound)

    assert "no transition to 'Done' from 'To Do' (available: In Progress)" in err.message


def test_move_of_a_stale_issue_already_there_is_a_no_op(httpx_mock):
    # The caller's copy says To Do; someone already resolved it: Jira offers no way to Done.
    httpx_mock.add_response(url=f"{API}/issue/10001/transitions", json={"transitions": []})
    httpx_mock.add_response(url=f"{API}/issue/10001?fields={','.join(FIELDS)}", json=node(1, "Done", "done"))
    tracker, _ = jira()
    assert run(tracker.move(an_issue("To Do"), "Done")).state == "Done"
    assert tracker.counter.by_operation == {"transitions": 1, "get_issue": 1}


def test_transitions_in_an_unexpected_shape_are_a_server_error(httpx_mock):
    httpx_mock.add_response(url=f"{API}/issue/10001/transitions", json={"transitions": [{"id": "31", "to": "Done"}]})
    tracker, _ = jira()
    fails(tracker.move(an_issue("To Do"), "Done"), ServerError)


# ----- comments ------------------------------------------------------------------------------

def comment(n: int, text: str, day: int) -> dict:
    return {"id": str(n), "body": text_to_adf(text), "created": f"2026-01-0{day}T00:00:00.000+0000"}


def test_comments_are_read_over_pages_as_text(httpx_mock):
    httpx_mock.add_response(url=f"{API}/issue/10001/comment?startAt=0&maxResults=100", json={
        "startAt": 0, "maxResults": 2, "total": 3,
        "comments": [comment(1, "first\nline two", 1), comment(2, "second", 2)]})
    httpx_mock.add_response(url=f"{API}/issue/10001/comment?startAt=2&maxResults=100", json={
        "startAt": 2, "maxResults": 2, "total": 3, "comments": [comment(3, "third", 3)]})
    tracker, _ = jira()

    found = run(tracker.comments("10001"))

    assert [c.body for c in found] == ["first\nline two", "second", "third"]
    assert found[0].created_at == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_add_comment_posts_adf(httpx_mock):
    text = "Landed abc123.\nCost $0.42\n\nDuration 3 min"
    httpx_mock.add_response(url=f"{API}/issue/10001/comment", method="POST", status_code=201,
                            json=comment(9, text, 4))
    tracker, _ = jira()

    made = run(tracker.add_comment("10001", text))

    assert (made.id, made.body) == ("9", text)
    assert body(sent(httpx_mock)[0]) == {"body": text_to_adf(text)}


# ----- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("status, kind, words", [
    (401, AuthError, "JIRA_API_TOKEN"),
    (403, AuthError, "does not allow"),
    (400, BadQuery, "The value 'Doing' does not exist for the field 'status'."),
    (409, BadQuery, "refused"),
])
def test_jira_errors_become_typed_errors_with_jiras_words(httpx_mock, status, kind, words):
    httpx_mock.add_response(status_code=status, json={
        "errorMessages": ["The value 'Doing' does not exist for the field 'status'."],
        "errors": {"jql": f"bad {TOKEN}"}})
    tracker, _ = jira()
    err = fails(tracker.active_issues(["Doing"]), kind)
    assert words in err.message and "***" in err.message  # Jira's words, scrubbed of the token


def test_no_credentials_fail_every_call_naming_the_variables(httpx_mock):
    tracker = make_tracker(config(), environ={})
    assert isinstance(tracker, JiraTracker) and TRACKERS["jira"] is JiraTracker
    err = fails(tracker.get_issue("SHOP-1"), AuthError)
    assert "JIRA_EMAIL and JIRA_API_TOKEN" in err.message
    assert tracker.counter.calls == 0


def test_make_tracker_reads_the_credentials_from_the_environment(httpx_mock):
    httpx_mock.add_response(json=node(1))
    tracker = make_tracker(config(), environ={"JIRA_EMAIL": EMAIL, "JIRA_API_TOKEN": TOKEN})
    run(tracker.get_issue("SHOP-1"))
    assert sent(httpx_mock)[0].headers["Authorization"] == BASIC


@pytest.mark.parametrize("answer", [
    {"json": {"issues": "nope"}},
    {"json": {"issues": [{"id": "1", "key": "SHOP-1"}]}},  # no fields: asked without `fields`?
    {"text": "<html>maintenance</html>"},
], ids=["issues-not-list", "issue-without-fields", "not-json"])
def test_an_answer_in_an_unexpected_shape_is_a_server_error(httpx_mock, answer):
    httpx_mock.add_response(url=f"{API}/search/jql", **answer)
    tracker, _ = jira()
    fails(tracker.active_issues(["To Do"]), ServerError)


# ----- rate limits, outages ---------------------------------------------------------------------

@pytest.mark.parametrize("headers, waited", [
    ({"Retry-After": "5", "RateLimit-Reason": "jira-burst-based"}, 5.0),
    ({"X-RateLimit-Remaining": "0",
      "X-RateLimit-Reset": datetime.fromtimestamp(NOW + 9, timezone.utc).isoformat().replace("+00:00", "Z")}, 9.0),
], ids=["retry-after", "reset-iso"])
def test_a_rate_limit_is_waited_out_then_the_call_succeeds(httpx_mock, headers, waited):
    httpx_mock.add_response(status_code=429, headers=headers, json={"errorMessages": ["Rate limit exceeded."]})
    httpx_mock.add_response(json=node(1))
    tracker, sleeps = jira()

    assert run(tracker.get_issue("SHOP-1")).identifier == "SHOP-1"
    assert sleeps == [pytest.approx(waited)] and tracker.counter.calls == 2


def test_a_rate_limit_that_outlasts_max_wait_is_rate_limited(httpx_mock):
    httpx_mock.add_response(status_code=429, headers={"Retry-After": "20"}, is_reusable=True)
    tracker, sleeps = jira(max_wait=30.0)
    assert fails(tracker.get_issue("SHOP-1"), RateLimited).retry_after == 20.0
    assert sleeps == [20.0] and tracker.counter.calls == 2


def test_server_errors_are_retried_then_the_call_succeeds(httpx_mock):
    httpx_mock.add_response(status_code=500)
    httpx_mock.add_response(status_code=503, headers={"Retry-After": "2"})
    httpx_mock.add_response(json=node(1))
    tracker, sleeps = jira()
    assert run(tracker.get_issue("SHOP-1")).identifier == "SHOP-1"
    assert sleeps == [0.5, 2.0]  # our backoff, then what Jira asked for


def test_a_lasting_outage_is_a_server_error_with_jiras_words(httpx_mock):
    httpx_mock.add_response(status_code=503, json={"errorMessages": ["Service unavailable"]}, is_reusable=True)
    tracker, _ = jira()
    err = fails(tracker.get_issue("SHOP-1"), ServerError)
    assert err.message == "Jira answered 503 Service Unavailable: Service unavailable"
    assert tracker.counter.calls == 3


def test_a_transition_is_not_retried_after_a_server_error(httpx_mock):
    httpx_mock.add_response(url=f"{API}/issue/10001/transitions", method="GET", json=TRANSITIONS)
    httpx_mock.add_response(url=f"{API}/issue/10001/transitions", method="POST", status_code=502)
    tracker, _ = jira()
    fails(tracker.move(an_issue("To Do"), "Done"), ServerError)
    assert tracker.counter.by_operation == {"transitions": 1, "move": 1}


def test_an_unreachable_jira_is_a_server_error(httpx_mock):
    httpx_mock.add_exception(httpx.ConnectError("Name or service not known"), is_reusable=True)
    tracker, _ = jira()
    err = fails(tracker.get_issue("SHOP-1"), ServerError)
    assert err.message == "cannot reach acme.atlassian.net: ConnectError: Name or service not known"
    assert tracker.counter.calls == 3
