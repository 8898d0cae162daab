"""Tasks that land through GitHub pull requests (landing: pr).

The merge queue tests the work and pushes `task/<id>`; `open_for` opens (or finds) its pull
request. A watcher thread reads every open one each `github.poll_seconds`: merged -> the task
completes with the merge commit (its local branch, now landed, is deleted); closed unmerged ->
it fails with `pr_closed` (branch kept). Rate limits pause every GitHub call until GitHub's
reset; no error stops the watcher. The token is only read from the environment when a request
is made; messages name its variable, never its value.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ..config import AgentConfig
from ..github import GitHubClient, GitHubError, read_token, resolve_repo
from ..gitrepo import GitError
from ..models import PullRequestInfo, Task, TaskStatus
from ..runtimes.base import EventKind, event
from ..store import InvalidTransitionError, StoreError, TaskStore
from .events import EventWriters
from .workspace import BRANCH_PREFIX, ProjectGit

log = logging.getLogger(__name__)

_WAITING = {TaskStatus.pending, TaskStatus.plan_review, TaskStatus.in_progress, TaskStatus.review}


class PullRequests:
    def __init__(self, store: TaskStore, config: AgentConfig, project_dir: Path, base_branch: str,
                 git: ProjectGit | None = None, writers: EventWriters | None = None) -> None:
        self.store = store
        self.config = config
        self.project_dir = Path(project_dir)
        self.base_branch = base_branch
        # The dispatcher's own ProjectGit, so that branch deletion shares its admin lock.
        self.git = git or ProjectGit(self.project_dir, config)
        # The dispatcher's transcript writers (one per task, shared with its run and the API).
        self.writers = writers or EventWriters(self.project_dir / "logs")
        self._client: GitHubClient | None = None
        self._lock = threading.Lock()
        self._blocked_until = 0.0  # monotonic: no GitHub call before this (rate limited)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----- the client ------------------------------------------------------------------

    def client(self) -> GitHubClient:
        """A client for the project's repository; GitHubError no_repo / no_token otherwise."""
        gh = self.config.github
        repo = resolve_repo(gh, self.project_dir, self.config.remote)
        if repo is None:
            raise GitHubError("no_repo", f"no GitHub repository: set github.repo (owner/name) in agent.yaml; "
                                         f"the remote {self.config.remote!r} is not on github.com")
        read_token(gh.token_env)  # no_token, before anything is sent
        with self._lock:
            if self._client is None or self._client.repo != repo:
                if self._client is not None:
                    self._client.close()
                self._client = GitHubClient(gh.api_url, repo, gh.token_env, gh.timeout)
            return self._client

    def problem(self) -> dict | None:
        """For /agent/health: why pull requests cannot be opened or read, when some are needed."""
        try:
            needed = self.config.landing == "pr" or any(
                t.status in _WAITING and (t.landing == "pr" or t.pr is not None) for t in self.store.list_tasks())
        except StoreError:
            needed = False  # health reports the store's own problem
        if not needed:
            return None
        try:
            self.client()
        except GitHubError as exc:
            return {"code": "github_unavailable", "message": exc.message}
        return None

    def _call(self, fn):
        """Run fn(client), honouring a rate limit seen earlier by any call."""
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            raise GitHubError("rate_limited", f"GitHub rate limit reached; retrying in {wait:.0f}s", wait)
        try:
            return fn(self.client())
        except GitHubError as exc:
            if exc.kind == "rate_limited" and exc.retry_after is not None:
                self._blocked_until = max(self._blocked_until, time.monotonic() + exc.retry_after)
            raise

    # ----- what the dispatcher and routes call -----------------------------------------

    def open_for(self, task: Task, branch: str, base: str) -> PullRequestInfo:
        """Open the task's pull request from the pushed `branch` into `base` (or find the open one)."""
        body = f"{task.content}\n\n---\nOpened by Baton for task {task.id}."
        return self._call(lambda c: c.open_pull_request(branch, base, task.title, body, self.config.github.draft))

    def refresh(self, task_id: str) -> Task:
        """Read the task's pull request now and follow it: merged -> completed, closed -> failed."""
        task = self.store.get(task_id)
        if task.status is not TaskStatus.review:  # only a task waiting in review follows its PR
            raise InvalidTransitionError(task, task.status, f"is {task.status.value}, expected review")
        if task.pr is None:
            return task
        info = self._call(lambda c: c.pull_request(task.pr.number))
        number = info.number
        if info.state == "merged":
            sha = info.merge_commit_sha or info.head_sha
            done = self.store.transition(task_id, TaskStatus.completed, expect={TaskStatus.review}, pr=info,
                                         commit_sha=sha, base_sha=task.review_base)
            self._say(task_id, f"pull request #{number} was merged ({(sha or '')[:12]}); task completed")
            self._delete_branch(task_id)
            return done
        if info.state == "closed":
            failed = self.store.transition(
                task_id, TaskStatus.failed, expect={TaskStatus.review}, pr=info, error_reason="pr_closed",
                error_message=f"pull request #{number} was closed without being merged")
            self._say(task_id, f"pull request #{number} was closed without being merged; "
                               f"branch {BRANCH_PREFIX}{task_id} kept")
            return failed
        updated = self.store.update(task_id, expect={TaskStatus.review}, pr=info)
        old = task.pr.checks.state if task.pr.checks else "none"
        new = info.checks.state if info.checks else "none"
        if new != old:
            self._say(task_id, f"checks on pull request #{number}: {new}")
        return updated

    def close(self, task: Task) -> str | None:
        """Close the task's pull request (reject). Best effort: an error message, or None."""
        if task.pr is None or task.pr.state != "open":
            return None
        try:
            self._call(lambda c: c.close_pull_request(task.pr.number))
        except GitHubError as exc:
            return exc.message
        self._say(task.id, f"pull request #{task.pr.number} closed")
        return None

    # ----- the watcher -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="baton-pull-requests", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.github.timeout * 3 + 5)
            self._thread = None
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def poll_once(self) -> None:
        """One round: refresh every task in review with an open pull request. Never raises."""
        if self._blocked_until > time.monotonic():
            return
        try:
            waiting = [t.id for t in self.store.list_tasks()
                       if t.status is TaskStatus.review and t.pr is not None and t.pr.state == "open"]
        except StoreError as exc:
            log.warning("pull requests: cannot read the task store: %s", exc)
            return
        for task_id in waiting:
            if self._stop.is_set():
                return
            try:
                self.refresh(task_id)
            except GitHubError as exc:
                log.warning("pull request of task %s: %s", task_id, exc.message)
                if exc.kind in ("rate_limited", "no_token", "no_repo", "auth", "unreachable"):
                    return  # the same for every task: try again next round
            except StoreError as exc:  # rejected or changed meanwhile: nothing to follow
                log.info("pull request of task %s not followed: %s", task_id, exc)
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad answer
                log.exception("pull request of task %s: unexpected error", task_id)

    def _watch(self) -> None:
        while not self._stop.wait(self.config.github.poll_seconds):
            self.poll_once()

    # ----- helpers ---------------------------------------------------------------------

    def _say(self, task_id: str, text: str) -> None:
        try:
            self.writers.for_task(task_id).append(event(EventKind.baton, subtype="pull_request", text=text))
        except OSError as exc:
            log.warning("could not log an event for task %s: %s", task_id, exc)

    def _delete_branch(self, task_id: str) -> None:
        """A merged pull request is landed work: its local branch goes (as after a landing)."""
        try:
            self.git.delete_branch(f"{BRANCH_PREFIX}{task_id}")
        except GitError as exc:
            log.warning("could not delete branch %s%s: %s", BRANCH_PREFIX, task_id, exc)

