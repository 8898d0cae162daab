"""The tracker contract (backend/trackers/base.py), the same tests for every tracker: the real
clients from `make_tracker` against the stand-in servers run as processes
(tests/fakes/linear_standin.py, jira_standin.py), which are as strict as the real services."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from backend.sources.config import SourceConfig
from backend.trackers import TRACKERS, make_tracker
from backend.trackers.base import AuthError, NotFound, RateLimited, ServerError, TrackerError
from trackers_support import start_standin

ACTIVE = {"linear": ["Todo", "In Progress"], "jira": ["To Do", "In Progress"]}
STATES = {"linear": {"Backlog", "Todo", "In Progress", "In Review", "Done", "Canceled", "Duplicate"},
          "jira": {"To Do", "In Progress", "In Review", "Done"}}
STARTED_TYPE = {"linear": "started", "jira": "indeterminate"}
HIGH = {"linear": 2, "jira": "High"}  # what the stand-in is seeded with for priority 2
ELSEWHERE = {"linear": {"team": "OPS"}, "jira": {"project": "OPS"}}  # an issue outside the source's filter
SEARCH = {"linear": "issues", "jira": "search"}  # the stand-in's name for a page of a search
UNKNOWN = {"linear": lambda: str(uuid.uuid4()), "jira": lambda: "99999"}
LIMITED_STATUSES = {"linear": [400, 429], "jira": [429]}  # Linear says RATELIMITED with either


@pytest.fixture(params=sorted(TRACKERS))
def standin(request, tmp_path):
    with start_standin(request.param, tmp_path / "standin") as running:
        yield running


def tracker_for(standin, environ: dict | None = None, max_wait: float = 60.0, **source):
    config = SourceConfig.model_validate(standin.source(**source))
    return make_tracker(config, environ=standin.environ if environ is None else environ, max_wait=max_wait)


def run(tracker, scenario):
    """Run `scenario(tracker)` in an event loop and close the tracker after it."""
    async def main():
        try:
            return await scenario(tracker)
        finally:
            await tracker.aclose()
    return asyncio.run(main())


def seed(standin, n: int, **fields) -> list[dict]:
    return standin.admin.seed([{"title": f"Issue {i}", **fields} for i in range(n)])


def test_active_issues_come_over_several_pages_filtered_by_scope_labels_and_states(standin):
    kind = standin.kind
    todo, doing = ACTIVE[kind]
    wanted = standin.admin.seed([{"title": f"Wanted {i}", "labels": ["baton", "ui"] if i % 3 else ["baton"],
                                  "state": doing if i % 2 else todo} for i in range(230)])
    standin.admin.seed([{"title": "No label", "state": todo},
                        {"title": "Finished", "state": "Done", "labels": ["baton"]},
                        {"title": "Being reviewed", "state": "In Review", "labels": ["baton"]},
                        {"title": "Another scope", "labels": ["baton"], **ELSEWHERE[kind]}])
    tracker = tracker_for(standin, filter={**standin.source()["filter"], "labels": ["baton"]})
    found = run(tracker, lambda t: t.active_issues(ACTIVE[kind]))
    assert sorted(i.identifier for i in found) == sorted(w["identifier"] for w in wanted)
    assert {i.state for i in found} == {todo, doing}
    assert standin.admin.stats()["by_operation"][SEARCH[kind]] >= 3  # 230 issues: pages of at most 100
    assert run(tracker_for(standin), lambda t: t.active_issues(["Done"]))[0].title == "Finished"


def test_an_issue_reads_the_same_from_every_tracker(standin):
    kind = standin.kind
    text = "First line\nsecond line\n\nA second paragraph."
    [made] = standin.admin.seed([{"title": "Fix the login page", "description": text, "priority": HIGH[kind],
                                  "labels": ["baton", "ui"], "state": "In Progress"}])
    issue = run(tracker_for(standin), lambda t: t.get_issue(made["id"]))
    assert (issue.id, issue.identifier, issue.title) == (made["id"], made["identifier"], "Fix the login page")
    assert issue.description == text
    assert issue.url == made["url"]
    assert (issue.state, issue.state_type) == ("In Progress", STARTED_TYPE[kind])
    assert issue.priority == 2 and set(issue.labels) == {"baton", "ui"}
    assert issue.updated_at is not None and issue.updated_at.tzinfo is not None
    with pytest.raises(NotFound):
        run(tracker_for(standin), lambda t: t.get_issue(UNKNOWN[kind]()))


def test_issues_by_ids_answers_the_known_ones_in_any_state(standin):
    made = seed(standin, 3) + seed(standin, 2, state="Done")
    ids = [m["id"] for m in made]
    found = run(tracker_for(standin), lambda t: t.issues_by_ids([*ids, UNKNOWN[standin.kind]()]))
    assert sorted(i.id for i in found) == sorted(ids)
    assert {i.state for i in found} == {ACTIVE[standin.kind][0], "Done"}


def test_workflow_states_name_the_states_issues_can_be_in(standin):
    seed(standin, 1)
    states = run(tracker_for(standin), lambda t: t.workflow_states())
    names = [s.name for s in states]
    assert set(names) == STATES[standin.kind] and len(names) == len(set(names))
    assert all(s.id for s in states)


def test_move_changes_the_state_once_and_refuses_unknown_states(standin):
    [made] = seed(standin, 1)
    tracker = tracker_for(standin)

    async def scenario(t):
        issue = await t.get_issue(made["id"])
        moved = await t.move(issue, "In Progress")
        standin.admin.reset()
        again = await t.move(moved, "In Progress")
        calls_for_noop = standin.admin.stats()["calls"]
        with pytest.raises(NotFound) as unknown:
            await t.move(again, "Shipped")
        return moved, again, calls_for_noop, unknown.value

    moved, again, calls_for_noop, unknown = run(tracker, scenario)
    assert moved.state == again.state == "In Progress" and moved.id == made["id"]
    assert calls_for_noop == 0  # already there: nothing sent
    assert "Shipped" in unknown.message
    seen = standin.admin.issue(made["id"])
    assert seen["state"] == "In Progress"
    assert [(h["from"], h["to"], h["by"]) for h in seen["history"]] == [(ACTIVE[standin.kind][0], "In Progress", "api")]


def test_move_follows_the_state_a_person_set_meanwhile(standin):
    [made] = seed(standin, 1)
    tracker = tracker_for(standin)

    async def scenario(t):
        stale = await t.get_issue(made["id"])
        standin.admin.move(made["id"], "In Progress")  # a person moved it since we read it
        return await t.move(stale, "In Review")

    assert run(tracker, scenario).state == "In Review"
    assert standin.admin.issue(made["id"])["state"] == "In Review"


@pytest.mark.parametrize("standin", ["jira"], indirect=True)
def test_jira_move_without_a_transition_is_not_found(standin):
    [made] = seed(standin, 1)  # To Do: Jira's workflow offers In Progress and Done only

    async def scenario(t):
        with pytest.raises(NotFound) as caught:
            await t.move(await t.get_issue(made["id"]), "In Review")
        return caught.value

    error = run(tracker_for(standin), scenario)
    assert "In Review" in error.message
    assert standin.admin.issue(made["id"])["state"] == "To Do"


def test_comments_round_trip_in_order_over_pages(standin):
    [made] = standin.admin.seed([{"title": "Commented", "comments": [f"old {i}" for i in range(130)]}])
    # What the sync engine posts: its marker line must come back exactly (Jira: through ADF).
    text = "Landed on main as abc1234 · 3 min 10 s · $0.42\n\n— Baton (task t1, done:1)"
    tracker = tracker_for(standin)

    async def scenario(t):
        added = await t.add_comment(made["id"], text)
        return added, await t.comments(made["id"])

    added, comments = run(tracker, scenario)
    assert added.body == text and added.id
    assert [c.body for c in comments] == [f"old {i}" for i in range(130)] + [text]
    assert comments[-1].id == added.id and comments[-1].created_at is not None
    stored = standin.admin.issue(made["id"])["comments"][-1]
    assert (stored["body"], stored["by"]) == (text, "api")
    if standin.kind == "jira":
        assert stored["raw"]["type"] == "doc"  # sent as ADF, not a string
    with pytest.raises(NotFound):
        run(tracker_for(standin), lambda t: t.comments(UNKNOWN[standin.kind]()))


def test_bad_or_missing_credentials_are_auth_errors(standin):
    seed(standin, 1)
    wrong = "not-the-secret-0123456789"
    with pytest.raises(AuthError) as caught:
        run(tracker_for(standin, environ={standin.var: wrong}), lambda t: t.active_issues(ACTIVE[standin.kind]))
    assert wrong not in caught.value.message
    standin.admin.reset()
    with pytest.raises(AuthError) as missing:
        run(tracker_for(standin, environ={}), lambda t: t.active_issues(ACTIVE[standin.kind]))
    assert standin.var in missing.value.message
    assert standin.admin.stats()["calls"] == 0  # nothing sent without a credential


def test_a_rate_limit_is_waited_out(standin):
    [made] = seed(standin, 1)
    for status in LIMITED_STATUSES[standin.kind]:
        standin.admin.reset()
        standin.admin.fail("rate_limit", count=2, retry_after=1, status=status)
        tracker = tracker_for(standin)
        issue = run(tracker, lambda t: t.get_issue(made["id"]))
        assert issue.id == made["id"]
        requests = standin.admin.requests()
        assert [r["status"] for r in requests] == [status, status, 200]
        # The client waited what it was told before asking again.
        assert all(later["at"] - earlier["at"] >= 0.95 for earlier, later in zip(requests, requests[1:]))
        assert tracker.counter.calls == 3 == standin.admin.stats()["calls"]


def test_a_rate_limit_longer_than_the_client_may_wait_is_rate_limited(standin):
    seed(standin, 1)
    standin.admin.fail("rate_limit", count=100, retry_after=120)
    tracker = tracker_for(standin, max_wait=5)
    with pytest.raises(RateLimited) as caught:
        run(tracker, lambda t: t.active_issues(ACTIVE[standin.kind]))
    assert caught.value.retry_after is not None and caught.value.retry_after > 100
    assert tracker.counter.calls == standin.admin.stats()["calls"] == 1


def test_an_outage_is_a_server_error_and_passes(standin):
    [made] = seed(standin, 1)
    standin.admin.fail("outage", count=100, retry_after=0)
    tracker = tracker_for(standin)
    with pytest.raises(ServerError) as caught:
        run(tracker, lambda t: t.get_issue(made["id"]))
    assert "503" in caught.value.message
    assert tracker.counter.calls == standin.admin.stats()["calls"] >= 1
    standin.admin.fail("none")
    assert run(tracker_for(standin), lambda t: t.get_issue(made["id"])).id == made["id"]


def test_an_unreachable_tracker_is_a_server_error(standin):
    tracker = tracker_for(standin)
    standin.stop()
    with pytest.raises(ServerError):
        run(tracker, lambda t: t.active_issues(ACTIVE[standin.kind]))


def test_every_request_is_counted(standin):
    [made] = seed(standin, 1, labels=["baton"])
    standin.admin.reset()
    tracker = tracker_for(standin)

    async def scenario(t):
        [issue] = await t.active_issues(ACTIVE[standin.kind])
        await t.issues_by_ids([issue.id])
        await t.workflow_states()
        moved = await t.move(issue, "In Progress")
        await t.add_comment(moved.id, "Started in Baton")
        await t.comments(moved.id)
        with pytest.raises(TrackerError):
            await t.get_issue(UNKNOWN[standin.kind]())

    run(tracker, scenario)
    stats = standin.admin.stats()
    assert tracker.counter.calls == stats["calls"] >= 7
    assert sum(tracker.counter.by_operation.values()) == tracker.counter.calls
    assert standin.admin.issue(made["id"])["state"] == "In Progress"
