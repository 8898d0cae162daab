"""The stand-in GitHub REST server itself (tests/fakes/github_standin.py) speaks the shapes of
PROTOCOLS.md "GitHub (REST)": other tests trust it, so its own answers are pinned here."""

from __future__ import annotations

import httpx
import pytest

from fakes.github_standin import GitHubStandIn
from support import git, make_repo

TOKEN = "standin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def gh():
    with GitHubStandIn(TOKEN) as standin:
        yield standin


def api(gh, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{gh.url}/repos/acme/widgets{path}", headers=kwargs.pop("headers", AUTH),
                         timeout=10, **kwargs)


def test_every_api_call_needs_the_token(gh):
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = api(gh, "GET", "/pulls", headers=headers)
        assert response.status_code == 401 and response.json()["message"] == "Bad credentials"
    assert api(gh, "GET", "/pulls").status_code == 200
    assert [r["status"] for r in gh.requests()] == [401, 401, 200]


def test_create_list_get_and_close(gh):
    created = api(gh, "POST", "/pulls", json={"title": "T", "head": "task/a", "base": "main", "body": "B"})
    assert created.status_code == 201
    pr = created.json()
    assert pr["number"] == 1 and pr["state"] == "open" and pr["merged"] is False and not pr["draft"]
    assert pr["head"]["ref"] == "task/a" and len(pr["head"]["sha"]) == 40
    assert pr["html_url"] == "https://github.com/acme/widgets/pull/1"
    duplicate = api(gh, "POST", "/pulls", json={"title": "T", "head": "acme:task/a", "base": "main"})
    assert duplicate.status_code == 422
    assert duplicate.json()["errors"][0]["message"] == "A pull request already exists for acme:task/a."
    assert [p["number"] for p in api(gh, "GET", "/pulls", params={"head": "acme:task/a", "state": "open"}).json()] == [1]
    assert api(gh, "GET", "/pulls", params={"head": "acme:task/b"}).json() == []
    closed = api(gh, "PATCH", "/pulls/1", json={"state": "closed"}).json()
    assert closed["state"] == "closed" and closed["merged"] is False
    assert api(gh, "GET", "/pulls", params={"head": "acme:task/a", "state": "open"}).json() == []
    assert api(gh, "GET", "/pulls/9").status_code == 404


def test_admin_merge_and_close(gh):
    for head in ("task/a", "task/b"):
        api(gh, "POST", "/pulls", json={"title": "T", "head": head, "base": "main"})
    gh.merge(1)
    gh.close(2)
    merged = api(gh, "GET", "/pulls/1").json()
    assert merged["merged"] is True and merged["state"] == "closed"
    assert merged["merge_commit_sha"] == merged["head"]["sha"]
    gh.merge(2, sha="f" * 40)  # admin merge of a closed one: still records what the test said
    closed = api(gh, "GET", "/pulls/2").json()
    assert closed["merge_commit_sha"] == "f" * 40


def test_heads_come_from_the_origin_and_empty_branches_are_refused(tmp_path):
    project = make_repo(tmp_path)
    git(project, "push", "origin", "main:refs/heads/task/empty")
    git(project, "checkout", "-q", "-b", "task/work")
    (project / "x.txt").write_text("x\n")
    git(project, "add", "x.txt")
    git(project, "commit", "-q", "-m", "work")
    git(project, "push", "-q", "origin", "task/work")
    sha = git(project, "rev-parse", "HEAD").strip()
    with GitHubStandIn(TOKEN, origin=tmp_path / "project-origin.git") as gh:
        empty = api(gh, "POST", "/pulls", json={"title": "T", "head": "task/empty", "base": "main"})
        assert empty.status_code == 422 and "No commits between main and task/empty" in empty.text
        missing = api(gh, "POST", "/pulls", json={"title": "T", "head": "task/none", "base": "main"})
        assert missing.status_code == 422
        created = api(gh, "POST", "/pulls", json={"title": "T", "head": "task/work", "base": "main"})
        assert created.status_code == 201 and created.json()["head"]["sha"] == sha


def test_check_runs_page_with_link_next_and_status_counts(gh):
    sha = "a" * 40
    assert api(gh, "GET", f"/commits/{sha}/status").json() == {
        "state": "pending", "sha": sha, "total_count": 0, "statuses": []}
    gh.set_checks(sha, [{"name": f"r{i}", "status": "completed", "conclusion": "success"} for i in range(5)],
                  [{"context": "ci", "state": "failure"}])
    first = api(gh, "GET", f"/commits/{sha}/check-runs", params={"per_page": 2})
    assert first.json()["total_count"] == 5 and len(first.json()["check_runs"]) == 2
    names = [r["name"] for r in first.json()["check_runs"]]
    url = first.links["next"]["url"]
    while url:
        page = httpx.get(url, headers=AUTH, timeout=10)
        names += [r["name"] for r in page.json()["check_runs"]]
        url = page.links.get("next", {}).get("url")
    assert names == [f"r{i}" for i in range(5)]
    status = api(gh, "GET", f"/commits/{sha}/status").json()
    assert status["state"] == "failure" and status["total_count"] == 1


def test_rate_limits(gh):
    gh.rate_limit(remaining=0, reset_in=60)
    limited = api(gh, "GET", "/pulls")
    assert limited.status_code == 403 and limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) >= 60
    gh.rate_limit(retry_after=9, count=1)
    secondary = api(gh, "GET", "/pulls")
    assert secondary.status_code == 403 and secondary.headers["retry-after"] == "9"
    assert api(gh, "GET", "/pulls").status_code == 200  # count used up
