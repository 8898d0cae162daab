"""A small, synchronous GitHub REST client: open, read and close pull requests, read CI.

The token is read from the environment variable named by `token_env` at each request and
only ever goes into the Authorization header of requests to `api_url`: never into a message,
a log line or a URL. Every failure is a GitHubError with a kind the caller can act on.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from urllib.parse import quote

import httpx

from .. import __version__
from ..models import PullRequestChecks, PullRequestInfo

MAX_CHECK_PAGES = 10  # 100 check runs a page: enough for any real CI, bounded for a broken one
SECONDARY_LIMIT_WAIT = 60.0  # GitHub asks for at least a minute after a secondary rate limit
RESET_MARGIN = 1.0  # x-ratelimit-reset is in whole seconds on GitHub's clock
_RUN_FAILED = {"failure", "timed_out", "cancelled", "action_required", "stale"}
_STATUS_FAILED = {"failure", "error"}


class GitHubError(Exception):
    """kind: auth | not_found | rate_limited | invalid | server | unreachable | no_token |
    no_commits | no_repo. `retry_after`: seconds to wait (rate_limited)."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


class GitHubClient:
    def __init__(self, api_url: str, repo: str, token_env: str, timeout: float,
                 transport: httpx.BaseTransport | None = None) -> None:
        owner, _, name = repo.partition("/")
        if not owner or not name:
            raise ValueError(f"repository must be owner/name, not {repo!r}")
        self.api_url = api_url.rstrip("/")
        self.repo = repo
        self.owner = owner
        self.token_env = token_env
        self._repo_path = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False, headers={
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": f"baton/{__version__}",
        })

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- pull requests ---------------------------------------------------------------

    def open_pull_request(self, head_branch: str, base: str, title: str, body: str, draft: bool) -> PullRequestInfo:
        """Open a pull request from `head_branch` into `base`; if one is already open for that
        head, return it instead."""
        try:
            data = self._request("POST", f"{self._repo_path}/pulls", json={
                "title": title, "head": head_branch, "base": base, "body": body, "draft": draft})
        except GitHubError as exc:
            if exc.kind != "invalid":
                raise
            if "already exists" in exc.message:
                found = self._request("GET", f"{self._repo_path}/pulls", params={
                    "head": f"{self.owner}:{head_branch}", "state": "open"})
                if isinstance(found, list) and found:
                    return _info(found[0])
                raise
            if "no commits between" in exc.message.lower():
                raise GitHubError("no_commits", f"no commits between {base} and {head_branch}: nothing to review") from None
            raise
        return _info(data)

    def pull_request(self, number: int) -> PullRequestInfo:
        """The pull request as GitHub has it now, with its head's checks."""
        data = self._request("GET", f"{self._repo_path}/pulls/{int(number)}")
        info = _info(data)
        if info.head_sha:
            info = info.model_copy(update={"checks": self.checks(info.head_sha)})
        return info

    def close_pull_request(self, number: int) -> PullRequestInfo:
        return _info(self._request("PATCH", f"{self._repo_path}/pulls/{int(number)}", json={"state": "closed"}))

    def checks(self, ref: str) -> PullRequestChecks:
        """CI on `ref` from check runs (GitHub Actions and apps) and commit statuses together."""
        path = f"{self._repo_path}/commits/{quote(ref, safe='')}"
        passed = failed = pending = 0
        url: str | None = f"{path}/check-runs"
        params: dict | None = {"per_page": 100}
        for _ in range(MAX_CHECK_PAGES):
            if url is None:
                break
            response = self._send("GET", url, params=params)
            for run in _json(response).get("check_runs") or []:
                if run.get("status") != "completed":
                    pending += 1
                elif run.get("conclusion") in _RUN_FAILED:
                    failed += 1
                else:  # success, neutral, skipped
                    passed += 1
            url, params = self._next_page(response), None
        combined = _json(self._send("GET", f"{path}/status"))
        if combined.get("total_count"):  # 0: no statuses at all, though `state` says pending
            for status in combined.get("statuses") or []:
                state = status.get("state")
                if state in _STATUS_FAILED:
                    failed += 1
                elif state == "success":
                    passed += 1
                else:
                    pending += 1
        total = passed + failed + pending
        state = "failure" if failed else "pending" if pending else "success" if total else "none"
        return PullRequestChecks(state=state, total=total, passed=passed, failed=failed, pending=pending)

    # ----- HTTP ------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs) -> dict | list:
        return _json(self._send(method, path, **kwargs))

    def _send(self, method: str, path_or_url: str, **kwargs) -> httpx.Response:
        token = self._token()
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.api_url + path_or_url
        try:
            response = self._http.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        except httpx.TimeoutException:
            raise GitHubError("unreachable", f"GitHub at {self.api_url} did not answer in time") from None
        except httpx.TransportError as exc:
            raise GitHubError("unreachable", f"cannot reach GitHub at {self.api_url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise self._error(response)
        return response

    def _token(self) -> str:
        return read_token(self.token_env)

    def _next_page(self, response: httpx.Response) -> str | None:
        """The Link rel=next URL, only if it stays on our API host (the token goes with it)."""
        url = response.links.get("next", {}).get("url")
        if url and url.startswith(self.api_url + "/"):
            return url
        return None

    def _error(self, response: httpx.Response) -> GitHubError:
        status, headers = response.status_code, response.headers
        said = _scrub(_message(response), self._token_or_none())
        if status in (403, 429):
            retry = _retry_after(headers, said, status)
            if retry is not None:
                return GitHubError("rate_limited", f"GitHub rate limit reached ({status}); retrying in {retry:.0f}s", retry)
        if status in (401, 403):
            detail = f": {said}" if said else ""
            return GitHubError("auth", f"GitHub refused the token in ${self.token_env} ({status}){detail}")
        if status == 404:
            return GitHubError("not_found", f"GitHub: not found ({response.request.method} "
                                            f"{response.request.url.path}); check github.repo and the token's access to {self.repo}")
        if status == 422 or 400 <= status < 500:
            return GitHubError("invalid", f"GitHub refused the request ({status}): {said or 'no details'}")
        return GitHubError("server", f"GitHub answered {status}; try again later")

    def _token_or_none(self) -> str | None:
        return os.environ.get(self.token_env) or None


def read_token(token_env: str) -> str:
    """The token in $token_env, read now; GitHubError no_token when it is unset or empty."""
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise GitHubError("no_token", f"${token_env} is not set: it must hold a GitHub token to open pull requests")
    return token


def _info(data: dict | list) -> PullRequestInfo:
    if not isinstance(data, dict) or not isinstance(data.get("number"), int):
        raise GitHubError("server", "GitHub answered with something that is not a pull request")
    head = data.get("head") or {}
    state = "merged" if data.get("merged") else ("closed" if data.get("state") == "closed" else "open")
    return PullRequestInfo(
        number=data["number"], url=str(data.get("html_url") or ""), state=state, draft=bool(data.get("draft")),
        head_sha=head.get("sha"), merge_commit_sha=data.get("merge_commit_sha") if state == "merged" else None,
        mergeable_state=data.get("mergeable_state"), checked_at=datetime.now(timezone.utc))


def _json(response: httpx.Response) -> dict | list:
    try:
        return response.json()
    except ValueError:
        raise GitHubError("server", f"GitHub answered {response.status_code} with something that is not JSON") from None


def _message(response: httpx.Response) -> str:
    """GitHub's own words: `message` and the `errors[].message` details."""
    try:
        data = response.json()
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("message") or "")]
    for item in data.get("errors") or []:
        if isinstance(item, dict):
            parts.append(str(item.get("message") or " ".join(str(item.get(k, "")) for k in ("field", "code")).strip()))
        elif isinstance(item, str):
            parts.append(item)
    return "; ".join(p for p in parts if p)[:500]


def _retry_after(headers: httpx.Headers, said: str, status: int) -> float | None:
    """Seconds to wait when the answer is a rate limit; None when it is not one."""
    if headers.get("retry-after"):
        try:
            return max(0.0, float(headers["retry-after"]))
        except ValueError:
            return SECONDARY_LIMIT_WAIT
    if headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - time.time()) + RESET_MARGIN
        except (KeyError, ValueError):
            return SECONDARY_LIMIT_WAIT
    if status == 429 or "rate limit" in said.lower():
        return SECONDARY_LIMIT_WAIT
    return None


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "[token]") if token else text
