"""Stand-in Linear and Jira servers (tests/fakes/linear_standin.py, jira_standin.py) as real
processes, and a handle to drive them:

    lin = start_linear_standin(tmp_path)              # or the `linear_standin` fixture
    lin.admin.seed([{"title": "Fix login", "labels": ["baton"]}])   -> [{id, identifier, url}]
    config = SourceConfig.model_validate(lin.source(filter={"team": "ENG"}))
    tracker = make_tracker(config, environ=lin.environ)
    lin.admin.move("ENG-1", "Done"); lin.admin.issue("ENG-1")["comments"]; lin.admin.stats()
    lin.admin.fail(mode="rate_limit", count=2, retry_after=1)
    lin.stop()

`url` is what goes in SourceConfig.base_url (Linear: the GraphQL endpoint; Jira: the site);
`environ` holds the secret under the variable `source()` names ($LINEAR_API_KEY…).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from support import wait_for

FAKES = Path(__file__).parent / "fakes"


class Admin:
    """The stand-in's /_admin API (see tests/fakes/tracker_standin.py)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def _call(self, method: str, path: str, body: dict | None = None):
        response = httpx.request(method, f"{self.base_url}/_admin/{path}", json=body, timeout=30)
        if response.status_code >= 400:
            raise AssertionError(f"stand-in admin {method} {path}: {response.status_code} {response.text}")
        return response.json()

    def seed(self, issues: list[dict], **more) -> list[dict]:
        """Create issues at once: [{title, description?, state?, labels?, priority?, team|project?,
        comments?}] -> [{id, identifier, url}] in the same order."""
        return self._call("POST", "seed", {"issues": issues, **more})["issues"]

    def move(self, issue: str, state: str) -> dict:
        """A person moves the issue (by id or identifier) to the state named `state`."""
        return self._call("POST", "move", {"issue": issue, "state": state})

    def update(self, issue: str, **fields) -> dict:
        return self._call("POST", "update", {"issue": issue, **fields})

    def comment(self, issue: str, body: str) -> dict:
        """A person comments."""
        return self._call("POST", "comment", {"issue": issue, "body": body})

    def delete(self, issue: str) -> dict:
        return self._call("POST", "delete", {"issue": issue})

    def issue(self, issue: str) -> dict:
        """{id, identifier, title, state, labels, …, comments: [{id, body, raw, by}], history}."""
        return self._call("GET", f"issues/{issue}")

    def issues(self) -> list[dict]:
        return self._call("GET", "issues")

    def stats(self) -> dict:
        """{"calls": n, "by_operation": {...}}: every API request since the last reset."""
        return self._call("GET", "stats")

    def requests(self) -> list[dict]:
        """[{op, status, at}] every API request since the last reset."""
        return self._call("GET", "requests")

    def reset(self) -> dict:
        """Reset the statistics."""
        return self._call("POST", "stats/reset")

    def fail(self, mode: str, **spec) -> dict:
        """rate_limit (count|seconds, retry_after, status), outage (count|seconds) or none."""
        return self._call("POST", "fail", {"mode": mode, **spec})


class StandIn:
    kind = ""

    def __init__(self, args: list[str], tmp_path: Path, name: str) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        ready = tmp_path / f"{name}.url"
        ready.unlink(missing_ok=True)
        self.log = tmp_path / f"{name}.log"
        with open(self.log, "wb") as log:
            # stdin stays open while we live: the stand-in exits when it closes (no orphans).
            self.proc = subprocess.Popen([sys.executable, *args, "--port", "0", "--ready-file", str(ready),
                                          "--parent-stdin"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{name} stand-in exited with {self.proc.returncode}:\n{self.log.read_text()}")
            return ready.exists()

        wait_for(up, timeout=30, interval=0.05, what=f"the {name} stand-in to listen")
        self.base = ready.read_text()
        self.admin = Admin(self.base)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LinearStandIn(StandIn):
    kind = "linear"

    def __init__(self, tmp_path: Path, api_key: str, teams: list[str], seed: Path | None, name: str) -> None:
        args = [str(FAKES / "linear_standin.py"), "--api-key", api_key]
        for team in teams:
            args += ["--team", team]
        if seed is not None:
            args += ["--seed", str(seed)]
        super().__init__(args, tmp_path, name)
        self.api_key, self.team = api_key, teams[0]
        self.url = f"{self.base}/graphql"
        self.var = "LINEAR_API_KEY"
        self.environ = {self.var: api_key}

    def source(self, **overrides) -> dict:
        """A projects.yaml `source:` for this stand-in (filter: its first team)."""
        return {"kind": "linear", "base_url": self.url, "api_key": f"${self.var}",
                "filter": {"team": self.team}, **overrides}


class JiraStandIn(StandIn):
    kind = "jira"

    def __init__(self, tmp_path: Path, email: str, api_token: str, projects: list[str], seed: Path | None,
                 name: str) -> None:
        args = [str(FAKES / "jira_standin.py"), "--email", email, "--api-token", api_token]
        for project in projects:
            args += ["--project", project]
        if seed is not None:
            args += ["--seed", str(seed)]
        super().__init__(args, tmp_path, name)
        self.email, self.api_token, self.project = email, api_token, projects[0]
        self.url = self.base
        self.var = "JIRA_API_TOKEN"
        self.environ = {self.var: api_token}

    def source(self, **overrides) -> dict:
        """A projects.yaml `source:` for this stand-in (filter: its first project)."""
        return {"kind": "jira", "base_url": self.url, "email": self.email, "api_token": f"${self.var}",
                "filter": {"project": self.project}, **overrides}


def start_linear_standin(tmp_path: Path, api_key: str = "lin_api_standin0123456789", teams: list[str] = ("ENG",),
                         seed: Path | None = None, name: str = "linear") -> LinearStandIn:
    return LinearStandIn(tmp_path, api_key, list(teams), seed, name)


def start_jira_standin(tmp_path: Path, email: str = "baton@example.com", api_token: str = "jira-token-standin",
                       projects: list[str] = ("SHOP",), seed: Path | None = None, name: str = "jira") -> JiraStandIn:
    return JiraStandIn(tmp_path, email, api_token, list(projects), seed, name)


def start_standin(kind: str, tmp_path: Path, **kwargs) -> StandIn:
    return {"linear": start_linear_standin, "jira": start_jira_standin}[kind](tmp_path, **kwargs)
