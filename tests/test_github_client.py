"""GitHubClient against the stand-in GitHub process (tests/fakes/github_standin.py), and, for
answers the stand-in does not make (5xx, odd rate-limit headers, foreign Link URLs), against
an httpx MockTransport; repo_from_remote_url / resolve_repo on real git repositories."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from backend import __version__
from backend.config import GitHubConfig
from backend.github import GitHubClient, GitHubError, repo_from_remote_url, resolve_repo
from fakes.github_standin import GitHubStandIn
from support import free_port, git, make_repo

TOKEN = "ghp_standin_secret_0123456789"
ENV = "BATON_TEST_GITHUB_TOKEN"


@pytest.fixture
def gh():
    with GitHubStandIn(TOKEN) as standin:
        yield standin


@pytest.fixture
def client(gh, monkeypatch):
    monkeypatch.setenv(ENV, TOKEN)
    with GitHubClient(gh.url, "acme/widgets", ENV, timeout=10) as c:
        yield c


def mock_client(handler, monkeypatch) -> GitHubClient:
    monkeypatch.setenv(ENV, TOKEN)
    return GitHubClient("https://api.example.test", "acme/widgets", ENV, 5, transport=httpx.MockTransport(handler))


def test_requests_carry_the_token_and_githubs_headers_only_there(client, gh):
    client.open_pull_request("task/a", "main", "Title", "Body", False)
    (request,) = gh.requests()
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["user-agent"] == f"baton/{__version__}"
    others = {k: v for k, v in headers.items() if k != "authorization"}
    assert TOKEN not in repr(others) + request["path"] + repr(request["query"])


def test_the_token_is_read_when_a_request_is_made(gh, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    c = GitHubClient(gh.url, "acme/widgets", ENV, timeout=10)
    with pytest.raises(GitHubError) as err:
        c.pull_request(1)
    assert err.value.kind == "no_token" and f"${ENV}" in err.value.message
    assert gh.requests() == []  # nothing sent without a token
    monkeypatch.setenv(ENV, TOKEN)
    assert c.open_pull_request("task/a", "main", "T", "B", False).number == 1


def test_a_refused_token_is_an_auth_error_naming_the_variable_not_the_token(gh, monkeypatch):
    monkeypatch.setenv(ENV, "ghp_wrong_token_abcdef")
    c = GitHubClient(gh.url, "acme/widgets", ENV, timeout=10)
    with pytest.raises(GitHubError) as err:
        c.pull_request(1)
    assert err.value.kind == "auth"
    assert err.value.message.startswith(f"GitHub refused the token in ${ENV} (401)")
    assert "ghp_wrong_token_abcdef" not in str(err.value)


def test_open_returns_the_pull_request_and_a_second_open_finds_the_same_one(client, gh):
    first = client.open_pull_request("task/a", "main", "Add a", "the body", True)
    assert first.number == 1 and first.state == "open" and first.draft
    assert first.url == "https://github.com/acme/widgets/pull/1" and first.head_sha
    again = client.open_pull_request("task/a", "main", "Add a", "the body", True)
    assert again.number == 1
    assert [r["method"] for r in gh.requests()] == ["POST", "POST", "GET"]
    assert gh.requests()[-1]["query"] == {"head": "acme:task/a", "state": "open"}
    assert client.open_pull_request("task/b", "main", "Add b", "", False).number == 2


def test_no_commits_between_base_and_head_is_its_own_error(tmp_path, monkeypatch):
    project = make_repo(tmp_path)
    git(project, "push", "origin", "main:refs/heads/task/empty")
    monkeypatch.setenv(ENV, TOKEN)
    with GitHubStandIn(TOKEN, origin=tmp_path / "project-origin.git") as gh:
        c = GitHubClient(gh.url, "acme/widgets", ENV, timeout=10)
        with pytest.raises(GitHubError) as err:
            c.open_pull_request("task/empty", "main", "T", "B", False)
    assert err.value.kind == "no_commits"


def test_pull_request_states_merged_closed_open(client, gh):
    a = client.open_pull_request("task/a", "main", "A", "", False)
    b = client.open_pull_request("task/b", "main", "B", "", False)
    assert client.pull_request(a.number).state == "open"
    assert client.pull_request(a.number).merge_commit_sha is None
    gh.merge(a.number, sha="c" * 40)
    gh.close(b.number)
    merged = client.pull_request(a.number)
    assert merged.state == "merged" and merged.merge_commit_sha == "c" * 40
    closed = client.pull_request(b.number)
    assert closed.state == "closed" and closed.merge_commit_sha is None
    assert client.pull_request(a.number).checked_at is not None


def test_close_pull_request(client):
    pr = client.open_pull_request("task/a", "main", "A", "", False)
    assert client.close_pull_request(pr.number).state == "closed"
    assert client.pull_request(pr.number).state == "closed"


def _runs(n: int, **fields) -> list[dict]:
    return [{"name": f"run{i}", "status": "completed", "conclusion": "success", **fields} for i in range(n)]


def test_checks_none_when_nothing_reports(client):
    # The combined status says "pending" with total_count 0: that is "none".
    assert client.checks("a" * 40).state == "none"


@pytest.mark.parametrize("runs,statuses,expected", [
    (_runs(2), [], ("success", 2, 2, 0, 0)),
    (_runs(1) + [{"name": "x", "status": "in_progress", "conclusion": None}], [], ("pending", 2, 1, 0, 1)),
    (_runs(1), [{"context": "ci/legacy", "state": "pending"}], ("pending", 2, 1, 0, 1)),
    (_runs(1, conclusion="timed_out") + _runs(1), [], ("failure", 2, 1, 1, 0)),
    (_runs(1, conclusion="action_required"), [], ("failure", 1, 0, 1, 0)),
    (_runs(1, conclusion="neutral") + _runs(1, conclusion="skipped"), [], ("success", 2, 2, 0, 0)),
    ([], [{"context": "ci", "state": "error"}, {"context": "lint", "state": "success"}], ("failure", 2, 1, 1, 0)),
    ([], [{"context": "ci", "state": "success"}], ("success", 1, 1, 0, 0)),
])
def test_checks_combine_check_runs_and_statuses(client, gh, runs, statuses, expected):
    sha = "b" * 40
    gh.set_checks(sha, runs, statuses)
    checks = client.checks(sha)
    assert (checks.state, checks.total, checks.passed, checks.failed, checks.pending) == expected


def test_check_runs_are_read_across_pages(client, gh):
    sha = "d" * 40
    gh.set_checks(sha, _runs(150) + _runs(1, conclusion="failure"))
    checks = client.checks(sha)
    assert (checks.state, checks.total, checks.failed) == ("failure", 151, 1)
    pages = [r for r in gh.requests() if r["path"].endswith("/check-runs")]
    assert len(pages) == 2


def test_a_next_page_on_another_host_is_not_followed(monkeypatch):
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path.endswith("/check-runs"):
            return httpx.Response(200, json={"total_count": 2, "check_runs": _runs(1)},
                                  headers={"Link": '<https://evil.example/steal?page=2>; rel="next"'})
        return httpx.Response(200, json={"state": "pending", "total_count": 0, "statuses": []})

    checks = mock_client(handler, monkeypatch).checks("e" * 40)
    assert checks.state == "success" and checks.total == 1
    assert not any("evil.example" in url for url in seen)


def test_rate_limit_with_remaining_zero_waits_until_the_reset(client, gh):
    gh.rate_limit(remaining=0, reset_in=30)
    with pytest.raises(GitHubError) as err:
        client.pull_request(1)
    assert err.value.kind == "rate_limited"
    assert 25 < err.value.retry_after <= 32


@pytest.mark.parametrize("status,headers,body,expected", [
    (403, {"retry-after": "7"}, {"message": "You have exceeded a secondary rate limit."}, 7.0),
    (429, {"retry-after": "3"}, {"message": "Too many"}, 3.0),
    (403, {}, {"message": "You have exceeded a secondary rate limit."}, 60.0),
    (429, {}, {"message": "Too many"}, 60.0),
])
def test_rate_limit_answers(monkeypatch, status, headers, body, expected):
    c = mock_client(lambda request: httpx.Response(status, json=body, headers=headers), monkeypatch)
    with pytest.raises(GitHubError) as err:
        c.pull_request(1)
    assert (err.value.kind, err.value.retry_after) == ("rate_limited", expected)


def test_rate_limit_from_the_standin_with_retry_after(client, gh):
    gh.rate_limit(retry_after=5, count=1)
    with pytest.raises(GitHubError) as err:
        client.pull_request(1)
    assert (err.value.kind, err.value.retry_after) == ("rate_limited", 5.0)
    client.open_pull_request("task/a", "main", "A", "", False)  # the limit is over


@pytest.mark.parametrize("status,body,kind", [
    (403, {"message": "Resource not accessible by integration"}, "auth"),
    (404, {"message": "Not Found"}, "not_found"),
    (422, {"message": "Validation Failed", "errors": [{"field": "base", "code": "invalid"}]}, "invalid"),
    (500, {"message": "oops"}, "server"),
    (502, None, "server"),
])
def test_error_kinds(monkeypatch, status, body, kind):
    def handler(request):
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status, text="<html>")

    with pytest.raises(GitHubError) as err:
        mock_client(handler, monkeypatch).pull_request(1)
    assert err.value.kind == kind
    assert TOKEN not in err.value.message


def test_a_message_echoing_the_token_is_scrubbed(monkeypatch):
    c = mock_client(lambda r: httpx.Response(422, json={"message": f"bad {TOKEN}"}), monkeypatch)
    with pytest.raises(GitHubError) as err:
        c.pull_request(1)
    assert TOKEN not in err.value.message and "[token]" in err.value.message


def test_nobody_listening_is_unreachable(monkeypatch):
    monkeypatch.setenv(ENV, TOKEN)
    c = GitHubClient(f"http://127.0.0.1:{free_port()}", "acme/widgets", ENV, timeout=5)
    with pytest.raises(GitHubError) as err:
        c.pull_request(1)
    assert err.value.kind == "unreachable"


# ----- which repository -----------------------------------------------------------------

@pytest.mark.parametrize("url,repo", [
    ("git@github.com:acme/widgets.git", "acme/widgets"),
    ("git@github.com:acme/widgets", "acme/widgets"),
    ("https://github.com/acme/widgets.git", "acme/widgets"),
    ("https://github.com/acme/widgets", "acme/widgets"),
    ("https://github.com/acme/widgets/", "acme/widgets"),
    ("ssh://git@github.com/acme/widgets.git", "acme/widgets"),
    ("ssh://git@github.com/acme/wid.gets", "acme/wid.gets"),
    ("https://x-access-token:abc@github.com/acme/widgets.git", "acme/widgets"),
    ("git@gitlab.com:acme/widgets.git", None),
    ("https://github.example.com/acme/widgets", None),
    ("https://github.com/acme", None),
    ("https://github.com/acme/widgets/pull/1", None),
    ("/srv/git/widgets.git", None),
])
def test_repo_from_remote_url(url, repo):
    assert repo_from_remote_url(url) == repo


def test_resolve_repo_reads_the_remote_and_the_config_wins(tmp_path: Path):
    project = make_repo(tmp_path)
    assert resolve_repo(GitHubConfig(), project, "origin") is None  # a local path, not github.com
    git(project, "remote", "add", "gh", "git@github.com:acme/widgets.git")
    assert resolve_repo(GitHubConfig(), project, "gh") == "acme/widgets"
    assert resolve_repo(GitHubConfig(repo="other/thing"), project, "gh") == "other/thing"
    assert resolve_repo(GitHubConfig(), project, "missing") is None
