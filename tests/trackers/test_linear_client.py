"""The Linear client against canned answers (pytest-httpx): every request it sends and every
way Linear answers. The same client against a stand-in Linear process: test_contract.py."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone

import httpx
import pytest

from backend.sources.config import SourceConfig
from backend.trackers import TRACKERS, make_tracker
from backend.trackers.base import (AuthError, BadQuery, Issue, NotFound, RateLimited, ServerError, TrackerError,
                                   WorkflowState)
from backend.trackers.linear import LinearTracker

URL = "https://api.linear.app/graphql"
KEY = "lin_api_Sup3rSecretKeyValue"
NOW = 1_700_000_000.0  # the client's clock in these tests


class Sleeps(list):
    """Stands in for asyncio.sleep: records each wait instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def linear(max_wait: float = 60.0, **filter_) -> tuple[LinearTracker, Sleeps]:
    config = SourceConfig(kind="linear", api_key="$LINEAR_API_KEY", filter=filter_ or {"team": "ENG"})
    sleeps = Sleeps()
    return LinearTracker(config, {"api_key": KEY}, max_wait=max_wait, sleep=sleeps, clock=lambda: NOW), sleeps


def run(coro):
    return asyncio.run(coro)


def fails(coro, kind: type[TrackerError]) -> TrackerError:
    """Run `coro`, expect `kind`, and check the API key is nowhere in what people will read."""
    with pytest.raises(kind) as caught:
        run(coro)
    assert KEY not in str(caught.value) and KEY not in caught.value.message
    return caught.value


def node(n: int, state: str = "Todo", team: str = "ENG", **extra) -> dict:
    return {"id": f"uuid-{n}", "identifier": f"ENG-{n}", "title": f"Issue {n}", "description": f"Do {n}",
            "url": f"https://linear.app/acme/issue/ENG-{n}", "priority": 2, "updatedAt": "2026-01-02T03:04:05.000Z",
            "state": {"id": f"s-{state}", "name": state, "type": "unstarted"},
            "labels": {"nodes": [{"name": "baton"}]}, "team": {"id": f"t-{team}", "key": team}, **extra}


def an_issue(state: str) -> Issue:
    return Issue(id="uuid-1", identifier="ENG-1", title="t", description="", url=None, state=state)


def issues_page(nodes: list[dict], cursor: str | None = None) -> dict:
    return {"data": {"issues": {"nodes": nodes, "pageInfo": {"hasNextPage": cursor is not None, "endCursor": cursor}}}}


def error(code: str, message: str, told: str | None = None) -> dict:
    extensions = {"code": code, **({"userPresentableMessage": told} if told else {})}
    return {"errors": [{"message": message, "extensions": extensions}], "data": None}


STATES = {"data": {"workflowStates": {"nodes": [
    {"id": "s-todo", "name": "Todo", "type": "unstarted"}, {"id": "s-prog", "name": "In Progress", "type": "started"},
    {"id": "s-done", "name": "Done", "type": "completed"}]}}}


def bodies(httpx_mock) -> list[dict]:
    """Each request's JSON body, after checking it is a query Linear accepts: every declared
    variable used, every variable sent declared (Linear refuses unused variables)."""
    found = []
    for request in httpx_mock.get_requests():
        body = json.loads(request.content)
        declared = set(re.findall(r"\$(\w+):", body["query"]))
        assert declared == set(body["variables"]), body
        for name in declared:
            assert body["query"].count(f"${name}") >= 2, f"${name} declared but not used"
        found.append(body)
    return found


# ----- reading issues --------------------------------------------------------------------------

def test_active_issues_reads_every_page_with_the_team_filter(httpx_mock):
    httpx_mock.add_response(url=URL, method="POST", json=issues_page([node(1), node(2, priority=0)], cursor="c1"))
    httpx_mock.add_response(url=URL, method="POST", json=issues_page([node(3, "In Progress")]))
    tracker, _ = linear(team="ENG")

    issues = run(tracker.active_issues(["Todo", "In Progress"]))

    assert [i.identifier for i in issues] == ["ENG-1", "ENG-2", "ENG-3"]
    assert issues[0] == Issue(id="uuid-1", identifier="ENG-1", title="Issue 1", description="Do 1",
                              url="https://linear.app/acme/issue/ENG-1", state="Todo", state_type="unstarted",
                              priority=2, labels=("baton",),
                              updated_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert issues[1].priority is None  # 0: no priority
    first, second = bodies(httpx_mock)
    assert "team: { key: { eq: $team } }" in first["query"] and "$team: String!" in first["query"]
    assert "first: 100" in first["query"] and "state: { name: { in: $states } }" in first["query"]
    assert first["variables"] == {"after": None, "states": ["Todo", "In Progress"], "team": "ENG"}
    assert second["variables"]["after"] == "c1"
    request = httpx_mock.get_requests()[0]
    assert request.headers["Authorization"] == KEY  # a personal key: no "Bearer"
    assert tracker.counter.calls == 2 and tracker.counter.by_operation == {"active_issues": 2}


def test_a_project_and_labels_filter_declares_only_what_it_uses(httpx_mock):
    httpx_mock.add_response(url=URL, json=issues_page([node(1)]))
    tracker, _ = linear(project="shop-1a2b", labels=["baton", "ai"])

    run(tracker.active_issues(["Todo"]))

    (body,) = bodies(httpx_mock)
    assert "project: { slugId: { eq: $project } }" in body["query"]
    assert "labels: { some: { name: { in: $labels } } }" in body["query"]
    assert "$team" not in body["query"]
    assert body["variables"] == {"after": None, "states": ["Todo"], "project": "shop-1a2b", "labels": ["baton", "ai"]}


def test_no_states_means_no_issues_and_no_request(httpx_mock):
    tracker, _ = linear()
    assert run(tracker.active_issues([])) == []
    assert run(tracker.issues_by_ids([])) == []
    assert tracker.counter.calls == 0


def test_issues_by_ids_asks_in_chunks_of_100_each_paginated(httpx_mock):
    ids = [f"uuid-{n}" for n in range(150)] + ["uuid-0"]  # a repeat is asked once
    httpx_mock.add_response(url=URL, json=issues_page([node(0)], cursor="more"))
    httpx_mock.add_response(url=URL, json=issues_page([node(1)]))
    httpx_mock.add_response(url=URL, json=issues_page([node(120)]))  # the others do not exist
    tracker, _ = linear()

    issues = run(tracker.issues_by_ids(ids))

    assert [i.id for i in issues] == ["uuid-0", "uuid-1", "uuid-120"]
    first, second, third = bodies(httpx_mock)
    assert "$ids: [ID!]!" in first["query"] and "filter: { id: { in: $ids } }" in first["query"]
    assert first["variables"]["ids"] == ids[:100] and second["variables"] == {"ids": ids[:100], "after": "more"}
    assert third["variables"] == {"ids": ids[100:150], "after": None}


def test_get_issue_asks_by_string_id(httpx_mock):
    httpx_mock.add_response(url=URL, json={"data": {"issue": node(7, "In Progress")}})
    tracker, _ = linear()

    issue = run(tracker.get_issue("ENG-7"))

    assert issue.identifier == "ENG-7" and issue.state == "In Progress"
    (body,) = bodies(httpx_mock)
    assert "query GetIssue($id: String!)" in body["query"] and body["variables"] == {"id": "ENG-7"}


@pytest.mark.parametrize("answer", [
    error("INPUT_ERROR", "Entity not found: Issue", "Could not find referenced Issue."),
    {"data": {"issue": None}},
    {"data": None},
], ids=["entity-not-found", "issue-null", "data-null"])
def test_an_unknown_issue_is_not_found(httpx_mock, answer):
    httpx_mock.add_response(url=URL, json=answer)
    tracker, _ = linear()
    assert "nope" in fails(tracker.get_issue("nope"), NotFound).message


# ----- states and moves ----------------------------------------------------------------------

def test_workflow_states_are_the_teams_and_cached(httpx_mock):
    httpx_mock.add_response(url=URL, json=STATES)
    tracker, _ = linear(team="ENG")

    states = run(tracker.workflow_states())
    assert run(tracker.workflow_states()) == states

    assert states[0] == WorkflowState(id="s-todo", name="Todo", type="unstarted")
    (body,) = bodies(httpx_mock)
    assert "workflowStates(filter: { team: { key: { eq: $team } } })" in body["query"]
    assert body["variables"] == {"team": "ENG"}


def test_a_project_only_source_finds_its_team_from_an_issue(httpx_mock):
    team_of_first_issue = {"nodes": [{"id": "uuid-1", "team": {"id": "t", "key": "OPS"}}]}
    httpx_mock.add_response(url=URL, json={"data": {"issues": team_of_first_issue}})
    httpx_mock.add_response(url=URL, json=STATES)
    tracker, _ = linear(project="shop-1a2b")

    names = [s.name for s in run(tracker.workflow_states())]

    assert names == ["Todo", "In Progress", "Done"]
    assert run(tracker.workflow_states()) == run(tracker.workflow_states())  # known now: no more requests
    first, second = bodies(httpx_mock)
    assert first["variables"] == {"project": "shop-1a2b"} and "team { id key }" in first["query"]
    assert second["variables"] == {"team": "OPS"}


def test_move_sets_the_teams_state_by_id(httpx_mock):
    httpx_mock.add_response(url=URL, json=issues_page([node(1, team="OPS")]))
    httpx_mock.add_response(url=URL, json=STATES)
    moved = {"success": True, "issue": node(1, "Done", team="OPS")}
    httpx_mock.add_response(url=URL, json={"data": {"issueUpdate": moved}})
    tracker, _ = linear(project="shop-1a2b")  # no team configured: the issue's own team is used

    (issue,) = run(tracker.active_issues(["Todo"]))
    after = run(tracker.move(issue, "Done"))

    assert after.state == "Done"
    _, states, update = bodies(httpx_mock)
    assert states["variables"] == {"team": "OPS"}
    assert "mutation MoveIssue($id: String!, $stateId: String!)" in update["query"]
    assert "issueUpdate(id: $id, input: { stateId: $stateId })" in update["query"]
    assert update["variables"] == {"id": "uuid-1", "stateId": "s-done"}


def test_move_to_the_state_it_is_in_sends_nothing(httpx_mock):
    tracker, _ = linear()
    issue = an_issue("In Progress")
    assert run(tracker.move(issue, "In Progress")) is issue
    assert tracker.counter.calls == 0


def test_move_to_an_unknown_state_names_the_states_that_exist(httpx_mock):
    httpx_mock.add_response(url=URL, json=STATES, is_reusable=True)
    tracker, _ = linear()

    err = fails(tracker.move(an_issue("Todo"), "Shipped"), NotFound)

    assert "'Shipped'" in err.message and "Todo, In Progress, Done" in err.message
    assert tracker.counter.by_operation == {"workflow_states": 2}  # looked again, in case it was just added


STATE_GONE = error("INPUT_ERROR", "Entity not found: WorkflowState", "Could not find referenced WorkflowState.")


def test_a_state_id_linear_no_longer_knows_rereads_the_states_and_retries_once(httpx_mock):
    """The team's workflow was edited after its states were cached: the move is refused for
    the state (not the issue), the states are read again and the move sent with the new id."""
    renewed = {"data": {"workflowStates": {"nodes": [{"id": "s-done-2", "name": "Done", "type": "completed"}]}}}
    moved = {"success": True, "issue": node(1, "Done")}
    httpx_mock.add_response(url=URL, json=STATES)
    httpx_mock.add_response(url=URL, json=STATE_GONE)
    httpx_mock.add_response(url=URL, json=renewed)
    httpx_mock.add_response(url=URL, json={"data": {"issueUpdate": moved}})
    tracker, _ = linear()

    assert run(tracker.move(an_issue("Todo"), "Done")).state == "Done"

    sent = [b["variables"].get("stateId") for b in bodies(httpx_mock)]
    assert sent == [None, "s-done", None, "s-done-2"]
    assert tracker.counter.by_operation == {"workflow_states": 2, "move": 2}


def test_a_state_refused_again_after_a_fresh_read_names_the_state(httpx_mock):
    """Refused twice: the error says which state Linear does not know, never "no issue"."""
    for answer in (STATES, STATE_GONE, STATES, STATE_GONE):
        httpx_mock.add_response(url=URL, json=answer)
    tracker, _ = linear()

    err = fails(tracker.move(an_issue("Todo"), "Done"), NotFound)

    assert "workflow state 'Done'" in err.message and "ENG" in err.message and "no issue" not in err.message
    assert tracker.counter.by_operation == {"workflow_states": 2, "move": 2}


def test_an_unknown_issue_in_a_move_still_names_the_issue(httpx_mock):
    httpx_mock.add_response(url=URL, json=STATES)
    httpx_mock.add_response(url=URL, json=error("INPUT_ERROR", "Entity not found: Issue",
                                                "Could not find referenced Issue."))
    tracker, _ = linear()
    err = fails(tracker.move(an_issue("Todo"), "Done"), NotFound)
    assert "no issue 'uuid-1'" in err.message
    assert tracker.counter.by_operation == {"workflow_states": 1, "move": 1}  # not retried


def test_move_refused_with_success_false_is_a_server_error(httpx_mock):
    httpx_mock.add_response(url=URL, json=STATES)
    httpx_mock.add_response(url=URL, json={"data": {"issueUpdate": {"success": False, "issue": None}}})
    tracker, _ = linear()
    assert "success: false" in fails(tracker.move(an_issue("Todo"), "Done"), ServerError).message


# ----- comments ------------------------------------------------------------------------------

def test_comments_are_read_over_pages_oldest_first(httpx_mock):
    def comments(*nodes, cursor=None):
        page = {"nodes": list(nodes), "pageInfo": {"hasNextPage": bool(cursor), "endCursor": cursor}}
        return {"data": {"issue": {"comments": page}}}

    def comment(n: int, body: str) -> dict:
        return {"id": f"c{n}", "body": body, "createdAt": f"2026-01-0{n}T00:00:00Z"}
    httpx_mock.add_response(url=URL, json=comments(comment(3, "third"), comment(2, "second"), cursor="p2"))
    httpx_mock.add_response(url=URL, json=comments(comment(1, "first")))
    tracker, _ = linear()

    found = run(tracker.comments("uuid-1"))

    assert [c.body for c in found] == ["first", "second", "third"]
    first, second = bodies(httpx_mock)
    assert "comments(first: 100, after: $after) { nodes { id body createdAt }" in first["query"]
    assert first["variables"] == {"id": "uuid-1", "after": None} and second["variables"]["after"] == "p2"


def test_add_comment_creates_one(httpx_mock):
    httpx_mock.add_response(url=URL, json={"data": {"commentCreate": {"success": True, "comment": {
        "id": "c9", "body": "Landed abc123", "createdAt": "2026-01-01T00:00:00.000Z"}}}})
    tracker, _ = linear()

    comment = run(tracker.add_comment("uuid-1", "Landed abc123"))

    assert (comment.id, comment.body) == ("c9", "Landed abc123")
    (body,) = bodies(httpx_mock)
    assert "commentCreate(input: { issueId: $issueId, body: $body })" in body["query"]
    assert body["variables"] == {"issueId": "uuid-1", "body": "Landed abc123"}


def test_add_comment_is_not_retried_after_a_server_error(httpx_mock):
    # The comment may have been made: trying again could post it twice.
    httpx_mock.add_response(url=URL, status_code=503)
    tracker, _ = linear()
    fails(tracker.add_comment("uuid-1", "hi"), ServerError)
    assert tracker.counter.calls == 1


# ----- errors --------------------------------------------------------------------------------

def test_bad_credentials_are_an_auth_error_naming_the_variable(httpx_mock):
    httpx_mock.add_response(url=URL, status_code=401, json=error(
        "AUTHENTICATION_ERROR", f"Authentication required, not authenticated ({KEY})"))  # even if echoed
    tracker, _ = linear()
    err = fails(tracker.get_issue("ENG-1"), AuthError)
    assert "LINEAR_API_KEY" in err.message and "Authentication required" in err.message and "***" in err.message


def test_a_bare_401_is_an_auth_error(httpx_mock):
    httpx_mock.add_response(url=URL, status_code=401, text="Unauthorized")
    tracker, _ = linear()
    fails(tracker.get_issue("ENG-1"), AuthError)


def test_forbidden_is_an_auth_error(httpx_mock):
    httpx_mock.add_response(url=URL, json=error("FORBIDDEN", "You don't have access to this team"))
    tracker, _ = linear()
    assert "don't have access" in fails(tracker.workflow_states(), AuthError).message


def test_a_refused_query_is_a_bad_query_with_linears_words(httpx_mock):
    httpx_mock.add_response(url=URL, status_code=400, json=error(
        "GRAPHQL_VALIDATION_FAILED", 'Cannot query field "branch" on type "Issue".'))
    tracker, _ = linear()
    assert 'Cannot query field "branch"' in fails(tracker.active_issues(["Todo"]), BadQuery).message


def test_another_input_error_is_a_bad_query(httpx_mock):
    httpx_mock.add_response(url=URL, status_code=400, json=error("INPUT_ERROR", "body must not be empty"))
    tracker, _ = linear()
    assert "body must not be empty" in fails(tracker.add_comment("uuid-1", ""), BadQuery).message


def test_an_unknown_error_code_is_a_server_error(httpx_mock):
    httpx_mock.add_response(url=URL, json=error("INTERNAL_SERVER_ERROR", "Something broke"))
    tracker, _ = linear()
    assert "Something broke" in fails(tracker.get_issue("ENG-1"), ServerError).message


@pytest.mark.parametrize("answer", [
    {"json": {"data": {"issues": {"nodes": "not a list", "pageInfo": {"hasNextPage": False}}}}},
    {"json": {"data": {"issues": {"nodes": [{"id": "x"}], "pageInfo": {"hasNextPage": False}}}}},
    {"json": {"data": {"issues": {"nodes": [], "pageInfo": {"hasNextPage": True, "endCursor": None}}}}},
    {"json": {"data": {}}},
    {"json": [1, 2]},
    {"text": "<html>gateway</html>"},
], ids=["nodes-not-list", "node-missing-fields", "more-without-cursor", "no-issues", "not-an-object", "not-json"])
def test_an_answer_in_an_unexpected_shape_is_a_server_error(httpx_mock, answer):
    httpx_mock.add_response(url=URL, **answer)
    tracker, _ = linear()
    fails(tracker.active_issues(["Todo"]), ServerError)


def test_no_api_key_fails_every_call_naming_the_variable(httpx_mock):
    config = SourceConfig(kind="linear", api_key="$LINEAR_API_KEY", filter={"team": "ENG"})
    tracker = make_tracker(config, environ={})
    assert isinstance(tracker, LinearTracker) and TRACKERS["linear"] is LinearTracker
    for call in (tracker.active_issues(["Todo"]), tracker.get_issue("ENG-1"), tracker.add_comment("x", "y")):
        assert "LINEAR_API_KEY" in fails(call, AuthError).message
    assert tracker.counter.calls == 0


def test_make_tracker_reads_the_key_from_the_environment(httpx_mock):
    httpx_mock.add_response(url=URL, json={"data": {"issue": node(1)}})
    config = SourceConfig(kind="linear", api_key="$LINEAR_API_KEY", filter={"team": "ENG"})
    tracker = make_tracker(config, environ={"LINEAR_API_KEY": KEY})
    run(tracker.get_issue("ENG-1"))
    assert httpx_mock.get_requests()[0].headers["Authorization"] == KEY


# ----- rate limits, outages ---------------------------------------------------------------------

def ratelimited(status: int, headers: dict) -> dict:
    return {"status_code": status, "headers": headers, "json": error("RATELIMITED", "Rate limit exceeded")}


@pytest.mark.parametrize("status, headers, waited", [
    (400, {"Retry-After": "3"}, 3.0),
    (429, {"Retry-After": "2.5"}, 2.5),
    (400, {"X-RateLimit-Requests-Reset": str(int((NOW + 7) * 1000))}, 7.0),  # epoch milliseconds
    (400, {}, 2.0),  # says nothing: a short default
], ids=["400-retry-after", "429-retry-after", "400-reset-epoch-ms", "no-hint"])
def test_a_rate_limit_is_waited_out_then_the_call_succeeds(httpx_mock, status, headers, waited):
    httpx_mock.add_response(url=URL, **ratelimited(status, headers))
    httpx_mock.add_response(url=URL, json={"data": {"issue": node(1)}})
    tracker, sleeps = linear()

    assert run(tracker.get_issue("ENG-1")).id == "uuid-1"

    assert sleeps == [pytest.approx(waited)]
    assert tracker.counter.calls == 2  # the limited request counts too


def test_a_rate_limit_that_outlasts_max_wait_is_rate_limited_with_retry_after(httpx_mock):
    httpx_mock.add_response(url=URL, is_reusable=True, **ratelimited(400, {"Retry-After": "25"}))
    tracker, sleeps = linear(max_wait=60.0)

    err = fails(tracker.get_issue("ENG-1"), RateLimited)

    assert sleeps == [25.0, 25.0]  # a third wait would pass 60 s in this call
    assert err.retry_after == 25.0 and tracker.counter.calls == 3


def test_a_wait_longer_than_max_wait_is_not_started(httpx_mock):
    httpx_mock.add_response(url=URL, **ratelimited(429, {"Retry-After": "3600"}))
    tracker, sleeps = linear(max_wait=60.0)
    assert fails(tracker.get_issue("ENG-1"), RateLimited).retry_after == 3600.0
    assert sleeps == []


def test_an_exhausted_window_is_waited_for_before_the_next_request(httpx_mock):
    reset = str(int((NOW + 4) * 1000))
    httpx_mock.add_response(url=URL, json={"data": {"issue": node(1)}},
                            headers={"X-RateLimit-Requests-Remaining": "0", "X-RateLimit-Requests-Reset": reset})
    httpx_mock.add_response(url=URL, json={"data": {"issue": node(2)}})
    tracker, sleeps = linear()

    run(tracker.get_issue("ENG-1"))
    assert sleeps == []
    run(tracker.get_issue("ENG-2"))
    assert sleeps == [pytest.approx(4.0)]


def test_an_exhausted_window_beyond_max_wait_fails_without_asking(httpx_mock):
    reset = str(int((NOW + 1800) * 1000))
    httpx_mock.add_response(url=URL, json={"data": {"issue": node(1)}},
                            headers={"X-RateLimit-Requests-Remaining": "0", "X-RateLimit-Requests-Reset": reset})
    tracker, _ = linear()
    run(tracker.get_issue("ENG-1"))
    assert fails(tracker.get_issue("ENG-2"), RateLimited).retry_after == pytest.approx(1800)
    assert tracker.counter.calls == 1


def test_server_errors_are_retried_then_the_call_succeeds(httpx_mock):
    httpx_mock.add_response(url=URL, status_code=502)
    httpx_mock.add_response(url=URL, status_code=503)
    httpx_mock.add_response(url=URL, json={"data": {"issue": node(1)}})
    tracker, sleeps = linear()

    assert run(tracker.get_issue("ENG-1")).id == "uuid-1"
    assert sleeps == [0.5, 1.5] and tracker.counter.calls == 3


def test_a_lasting_outage_is_a_server_error(httpx_mock):
    httpx_mock.add_response(url=URL, status_code=503, is_reusable=True)
    tracker, _ = linear()
    assert "Linear answered 503" in fails(tracker.get_issue("ENG-1"), ServerError).message
    assert tracker.counter.calls == 3


def test_an_unreachable_linear_is_a_server_error(httpx_mock):
    httpx_mock.add_exception(httpx.ConnectError("Connection refused"), is_reusable=True)
    tracker, sleeps = linear()
    err = fails(tracker.get_issue("ENG-1"), ServerError)
    assert err.message.startswith("cannot reach api.linear.app: ConnectError: Connection refused")
    assert tracker.counter.calls == 3 and len(sleeps) == 2


def test_a_timeout_is_retried_for_a_read(httpx_mock):
    httpx_mock.add_exception(httpx.ReadTimeout("slow"))
    httpx_mock.add_response(url=URL, json={"data": {"issue": node(1)}})
    tracker, _ = linear()
    assert run(tracker.get_issue("ENG-1")).id == "uuid-1"
    assert tracker.counter.calls == 2


class _Switch(httpx.AsyncBaseTransport):
    """Sends every request to the stand-in named by `target` (a restart: another process)."""

    def __init__(self) -> None:
        self.target = ""
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        there = httpx.URL(self.target)
        request.url = request.url.copy_with(host=there.host, port=there.port)
        return await self.inner.handle_async_request(request)


def test_a_restarted_linear_with_new_state_ids_still_takes_the_move(tmp_path):
    """Against stand-in processes: states cached from one Linear, then another answers at that
    address (its states have other ids): the move succeeds on its second try."""
    from trackers_support import start_linear_standin

    with start_linear_standin(tmp_path / "first", name="first") as first, \
            start_linear_standin(tmp_path / "second", name="second") as second:
        switch = _Switch()
        config = SourceConfig.model_validate(first.source())
        tracker = make_tracker(config, environ=first.environ, transport=switch)
        [fresh] = second.admin.seed([{"title": "Seen after the restart"}])

        async def scenario() -> Issue:
            try:
                switch.target = first.base
                assert {s.name for s in await tracker.workflow_states()} >= {"Todo", "Done"}
                switch.target = second.base
                return await tracker.move(await tracker.get_issue(fresh["id"]), "Done")
            finally:
                await tracker.aclose()

        moved = run(scenario())
        assert moved.state == "Done" and second.admin.issue(fresh["id"])["state"] == "Done"
        assert tracker.counter.by_operation["move"] == 2 and tracker.counter.by_operation["workflow_states"] == 2
