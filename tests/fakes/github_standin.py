"""A local stand-in for the parts of the GitHub REST API Baton uses (PROTOCOLS.md "GitHub").

    python tests/fakes/github_standin.py --port P --repo acme/widgets --token T [--origin BARE_REPO]

API (Authorization: Bearer T required, 401 otherwise), under /repos/acme/widgets:
    POST  /pulls                         201 {number, html_url, state, draft, head{ref,sha}, ...};
                                         422 when a PR for that head is open ("A pull request
                                         already exists for acme:BRANCH."), and with --origin when
                                         the head branch is missing there or has no commits
                                         beyond base ("No commits between BASE and BRANCH")
    GET   /pulls?head=OWNER:BRANCH&state=open|closed|all
    GET   /pulls/{n}                     merged, merge_commit_sha, mergeable_state, ...
    PATCH /pulls/{n} {"state":"closed"}
    GET   /commits/{ref}/check-runs      paged: per_page (default 30), page, Link rel="next"
    GET   /commits/{ref}/status          combined status (total_count 0 when there are none)
Admin (no auth), for tests:
    POST /_admin/pulls/{n}/merge {sha?}  merged, closed, merge_commit_sha = sha or the head sha
    POST /_admin/pulls/{n}/close
    POST /_admin/checks/{sha} {check_runs: [{name, status, conclusion}], statuses: [{context, state}]}
    POST /_admin/rate_limit {remaining: 0, reset_in: S} | {retry_after: S, count: N} | {}
    GET  /_admin/requests                every request: method, path, query, headers, status
Prints "ready URL" once listening. Tests start it with `GitHubStandIn` (a context manager).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class World:
    def __init__(self, repo: str, token: str, origin: str | None) -> None:
        self.repo, self.token, self.origin = repo, token, origin
        self.owner = repo.split("/")[0]
        self.lock = threading.RLock()
        self.pulls: dict[int, dict] = {}
        self.checks: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.limit: dict = {}
        self.base_url = ""

    def head_sha(self, branch: str) -> str | None:
        if self.origin is None:
            return hashlib.sha1(branch.encode()).hexdigest()
        proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"],
                              cwd=self.origin, capture_output=True, text=True)
        return proc.stdout.strip() or None

    def commits_between(self, base: str, head: str) -> int:
        if self.origin is None:
            return 1
        proc = subprocess.run(["git", "rev-list", "--count", f"refs/heads/{base}..refs/heads/{head}"],
                              cwd=self.origin, capture_output=True, text=True)
        return int(proc.stdout.strip() or 0)


def _pull_json(world: World, pr: dict) -> dict:
    if pr["state"] == "open" and world.origin is not None:
        # An open pull request follows its branch, as on GitHub: a push moves its head.
        pr["head_sha"] = world.head_sha(pr["head"]) or pr["head_sha"]
    return {
        "number": pr["number"], "state": pr["state"], "title": pr["title"], "body": pr["body"],
        "draft": pr["draft"], "merged": pr["merged"], "merged_at": pr["merged_at"],
        "merge_commit_sha": pr["merge_commit_sha"], "mergeable": True if pr["state"] == "open" else None,
        "mergeable_state": "clean" if pr["state"] == "open" else "unknown",
        "html_url": f"https://github.com/{world.repo}/pull/{pr['number']}",
        "url": f"{world.base_url}/repos/{world.repo}/pulls/{pr['number']}",
        "head": {"ref": pr["head"], "sha": pr["head_sha"], "label": f"{world.owner}:{pr['head']}"},
        "base": {"ref": pr["base"]},
    }


def make_handler(world: World):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                data = json.loads(raw) if raw else {}
            except ValueError:
                data = None
            return data

        def _send(self, status: int, data, headers: dict | None = None) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
            with world.lock:
                world.requests[-1]["status"] = status

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
            with world.lock:
                world.requests.append({"method": method, "path": path, "query": query,
                                       "headers": dict(self.headers.items()), "status": None})
            body = self._body() if method in ("POST", "PATCH") else {}
            if body is None:
                return self._send(400, {"message": "Problems parsing JSON"})
            if path.startswith("/_admin/"):
                return self._admin(method, path, body)
            if self.headers.get("Authorization") != f"Bearer {world.token}":
                return self._send(401, {"message": "Bad credentials", "status": "401"})
            limited = self._rate_limited()
            if limited:
                return self._send(*limited)
            prefix = f"/repos/{world.repo}"
            if not path.startswith(prefix + "/"):
                return self._send(404, {"message": "Not Found"})
            rest = path[len(prefix):].strip("/").split("/")
            with world.lock:
                return self._api(method, rest, query, body)

        def _rate_limited(self):
            with world.lock:
                limit = world.limit
                if not limit:
                    return None
                if "reset_at" in limit:
                    if time.time() >= limit["reset_at"]:
                        world.limit = {}
                        return None
                    return 403, {"message": "API rate limit exceeded for user."}, {
                        "x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0",
                        "x-ratelimit-used": "5000", "x-ratelimit-reset": str(limit["reset_at"]),
                        "x-ratelimit-resource": "core"}
                if limit.get("count", 1) <= 0:
                    world.limit = {}
                    return None
                limit["count"] = limit.get("count", 1) - 1
                headers = {"retry-after": str(limit["retry_after"])} if "retry_after" in limit else {}
                return 403, {"message": "You have exceeded a secondary rate limit."}, headers

        def _api(self, method: str, rest: list[str], query: dict, body: dict):
            if rest == ["pulls"] and method == "POST":
                return self._create(body)
            if rest == ["pulls"] and method == "GET":
                head, state = query.get("head"), query.get("state", "open")
                found = [_pull_json(world, pr) for pr in world.pulls.values()
                         if (head is None or f"{world.owner}:{pr['head']}" == head)
                         and (state == "all" or pr["state"] == state)]
                return self._send(200, found)
            if len(rest) == 2 and rest[0] == "pulls" and rest[1].isdigit():
                pr = world.pulls.get(int(rest[1]))
                if pr is None:
                    return self._send(404, {"message": "Not Found"})
                if method == "PATCH":
                    if body.get("state") == "closed" and not pr["merged"]:
                        pr["state"] = "closed"
                    elif body.get("state") not in (None, "closed", "open"):
                        return self._send(422, {"message": "Validation Failed",
                                                "errors": [{"field": "state", "code": "invalid"}]})
                return self._send(200, _pull_json(world, pr))
            if len(rest) == 3 and rest[0] == "commits" and rest[2] == "check-runs":
                runs = world.checks.get(rest[1], {}).get("check_runs", [])
                per_page = max(1, min(100, int(query.get("per_page", 30))))
                page = max(1, int(query.get("page", 1)))
                chunk = runs[(page - 1) * per_page: page * per_page]
                headers = {}
                if page * per_page < len(runs):
                    nxt = f"{world.base_url}/repos/{world.repo}/commits/{rest[1]}/check-runs?per_page={per_page}&page={page + 1}"
                    headers["Link"] = f'<{nxt}>; rel="next"'
                return self._send(200, {"total_count": len(runs), "check_runs": chunk}, headers)
            if len(rest) == 3 and rest[0] == "commits" and rest[2] == "status":
                statuses = world.checks.get(rest[1], {}).get("statuses", [])
                states = {s.get("state") for s in statuses}
                state = ("failure" if states & {"failure", "error"} else "pending" if "pending" in states or not statuses
                         else "success")
                return self._send(200, {"state": state, "sha": rest[1], "total_count": len(statuses),
                                        "statuses": statuses})
            return self._send(404, {"message": "Not Found"})

        def _create(self, body: dict):
            head, base = body.get("head"), body.get("base")
            if not isinstance(head, str) or not isinstance(base, str) or not body.get("title"):
                return self._send(422, {"message": "Validation Failed",
                                        "errors": [{"resource": "PullRequest", "code": "missing_field", "field": "head"}]})
            branch = head.split(":", 1)[1] if ":" in head else head
            for pr in world.pulls.values():
                if pr["head"] == branch and pr["state"] == "open":
                    return self._send(422, {"message": "Validation Failed", "errors": [{
                        "resource": "PullRequest", "code": "custom",
                        "message": f"A pull request already exists for {world.owner}:{branch}."}]})
            sha = world.head_sha(branch)
            if sha is None:
                return self._send(422, {"message": "Validation Failed",
                                        "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}]})
            if world.commits_between(base, branch) == 0:
                return self._send(422, {"message": "Validation Failed", "errors": [{
                    "resource": "PullRequest", "code": "custom", "message": f"No commits between {base} and {branch}"}]})
            number = len(world.pulls) + 1
            world.pulls[number] = {"number": number, "title": body["title"], "body": body.get("body"),
                                   "draft": bool(body.get("draft")), "head": branch, "base": base, "head_sha": sha,
                                   "state": "open", "merged": False, "merged_at": None, "merge_commit_sha": None}
            return self._send(201, _pull_json(world, world.pulls[number]))

        def _admin(self, method: str, path: str, body: dict):
            rest = path.strip("/").split("/")[1:]
            with world.lock:
                if method == "GET" and rest == ["requests"]:
                    return self._send(200, [r for r in world.requests if not r["path"].startswith("/_admin/")])
                if method == "POST" and len(rest) == 3 and rest[0] == "pulls" and rest[1].isdigit():
                    pr = world.pulls.get(int(rest[1]))
                    if pr is None:
                        return self._send(404, {"message": "Not Found"})
                    if rest[2] == "merge":
                        pr.update(state="closed", merged=True, merged_at="2026-01-01T00:00:00Z",
                                  merge_commit_sha=body.get("sha") or pr["head_sha"])
                    elif rest[2] == "close":
                        pr["state"] = "closed"
                    elif rest[2] == "head":  # the branch moved: a new head sha
                        pr["head_sha"] = body["sha"]
                    return self._send(200, _pull_json(world, pr))
                if method == "POST" and len(rest) == 2 and rest[0] == "checks":
                    world.checks[rest[1]] = {"check_runs": body.get("check_runs", []),
                                             "statuses": body.get("statuses", [])}
                    return self._send(200, world.checks[rest[1]])
                if method == "POST" and rest == ["rate_limit"]:
                    limit = dict(body)
                    if "reset_in" in limit:
                        limit = {"reset_at": math.ceil(time.time() + float(limit["reset_in"]))}
                    world.limit = limit
                    return self._send(200, world.limit)
            return self._send(404, {"message": "Not Found"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PATCH(self) -> None:
            self._route("PATCH")

    return Handler


class GitHubStandIn:
    """The stand-in as a separate process: `with GitHubStandIn(token, origin=...) as gh:`;
    `gh.url` is the API base URL (agent.yaml github.api_url)."""

    def __init__(self, token: str, repo: str = "acme/widgets", origin=None) -> None:
        self.token, self.repo, self.origin = token, repo, origin
        self.url = ""
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "GitHubStandIn":
        import queue

        args = [sys.executable, __file__, "--port", "0", "--repo", self.repo, "--token", self.token]
        if self.origin is not None:
            args += ["--origin", str(self.origin)]
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self._proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=20)
        except queue.Empty:
            line = ""
        if not line.startswith("ready "):
            self._proc.kill()
            raise RuntimeError(f"GitHub stand-in did not start: {line!r} {self._proc.communicate()[1]}")
        self.url = line.split()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc.stdout.close()
            self._proc.stderr.close()

    def _admin(self, method: str, path: str, body: dict | None = None):
        import httpx

        response = httpx.request(method, f"{self.url}/_admin/{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def merge(self, number: int, sha: str | None = None) -> dict:
        return self._admin("POST", f"pulls/{number}/merge", {"sha": sha} if sha else {})

    def close(self, number: int) -> dict:
        return self._admin("POST", f"pulls/{number}/close", {})

    def set_checks(self, sha: str, check_runs: list[dict] = (), statuses: list[dict] = ()) -> dict:
        return self._admin("POST", f"checks/{sha}", {"check_runs": list(check_runs), "statuses": list(statuses)})

    def rate_limit(self, **limit) -> dict:
        return self._admin("POST", "rate_limit", limit)

    def requests(self) -> list[dict]:
        return self._admin("GET", "requests")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--repo", default="acme/widgets")
    parser.add_argument("--token", required=True)
    parser.add_argument("--origin", default=None, help="a bare repository holding the pushed branches")
    args = parser.parse_args(argv)
    world = World(args.repo, args.token, args.origin)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(world))
    world.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"ready {world.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
