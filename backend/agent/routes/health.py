"""/agent/health: the one endpoint that needs no token.

With a WORKFLOW.md, `workflow` says which version runs (an invalid edit is reported there, the
last good version still running, and makes the agent `degraded`: `workflow_invalid`) and how its
tracker's sync goes.

`ok` only when nothing keeps the agent from doing its job; otherwise `degraded` with the
problems (the store refused or unreadable, no commits yet, the dispatcher's own problems).
It stays cheap: the store answers from its cache unless the file changed, a refused file is
judged once per version of it, and "the repository has commits" is asked until it is true.
"""

from __future__ import annotations

import os
import threading
import time

from fastapi import APIRouter, Request

from ... import __version__
from ...gitrepo import GitError, has_commits
from ...store import StoreBusyError, StoreCorruptError, StoreError, StoreUnreadableError, TaskStore
from ..schemas import Health, Problem

router = APIRouter(prefix="/agent", tags=["health"])

_STORE_CODES = ((StoreCorruptError, "store_corrupt"), (StoreUnreadableError, "store_unreadable"),
                (StoreBusyError, "store_busy"))


class StoreProbe:
    """Whether the store can be read, remembering a refusal for as long as the file is unchanged."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._refused: tuple[tuple, Problem] | None = None  # (file signature, problem)

    def _signature(self) -> tuple | None:
        try:
            st = os.stat(self.store.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def problem(self) -> Problem | None:
        with self._lock:
            signature = self._signature()
            if self._refused is not None and signature is not None and self._refused[0] == signature:
                return self._refused[1]
            try:
                self.store.snapshot()
            except StoreError as exc:
                code = next((c for kind, c in _STORE_CODES if isinstance(exc, kind)), "store_error")
                found = Problem(code=code, message=f"task store refused: {exc}")
            else:
                self._refused = None
                return None
            self._refused = (signature, found) if signature is not None else None
            return found


class CommitsProbe:
    """A repository that has no commits yet cannot give a task a worktree; once it has one, it
    always will, so git is no longer asked."""

    def __init__(self) -> None:
        self._seen = False

    def problem(self, repo) -> Problem | None:
        if self._seen:
            return None
        try:
            self._seen = has_commits(repo)
        except GitError as exc:
            return Problem(code="git_error", message=str(exc))
        if self._seen:
            return None
        return Problem(code="no_commits", message=f"the repository {repo} has no commits yet: make a first commit "
                       "(tasks stay pending until then)")


def _probes(state) -> tuple[StoreProbe, CommitsProbe]:
    if getattr(state, "health_probes", None) is None:
        state.health_probes = (StoreProbe(state.store), CommitsProbe())
    return state.health_probes


def compute_health(state) -> Health:
    """The health of the app whose `app.state` this is (blocking: it may read the store and ask git).
    Shared by GET /agent/health and the change stream's `state` event."""
    settings = state.settings
    store_probe, commits_probe = _probes(state)
    problems = [p for p in (store_probe.problem(), commits_probe.problem(settings.project_dir)) if p]
    problems += [Problem.model_validate(p) for p in state.dispatcher.problems()]
    runner = getattr(state, "workflow", None)  # backend/workflow/runner.py, when a WORKFLOW.md runs
    workflow = runner.health() if runner is not None else None
    if workflow is not None and (kept := _workflow_problem(workflow)) is not None:
        problems.append(kept)
    return Health(
        status="degraded" if problems else "ok",
        project=settings.project_name,
        project_id=settings.project_id,
        version=__version__,
        uptime_seconds=round(time.monotonic() - state.started_monotonic, 3),
        problems=problems,
        workflow=workflow,
    )


def _workflow_problem(workflow: dict) -> Problem | None:
    """An edit of WORKFLOW.md kept out (invalid, or needing a restart): the agent runs another
    version than the file says, which whoever watches the board must know."""
    error = workflow.get("error")
    if workflow.get("state") != "invalid" or not error:
        return None
    first = (str(error.get("message") or "").splitlines() or [""])[0]
    return Problem(code="workflow_invalid", message=f"WORKFLOW.md: invalid edit ignored, running the version "
                                                    f"loaded at {workflow.get('loaded_at')}: {first}")


@router.get("/health", response_model=Health)
def health(request: Request) -> Health:
    """`status` is `ok`, or `degraded` with `problems` ([{code, message}]); always HTTP 200."""
    return compute_health(request.app.state)
