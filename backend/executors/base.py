"""The contract between a task's run and the place its agent turns run (an executor).

A TaskRun (dispatcher/run.py) keeps everything that decides: claiming, the worktree on the
project host, prompts, accounting, the merge queue, landing and the store. What it hands an
executor is one agent turn: which runtime, what to ask, the limits, a stop request, and where
each event goes as it comes. The executor starts the CLI, streams its events back, kills the
turn's processes on a stop or a limit, and says how the turn ended.

- The local executor (local/) runs the turn in the task's worktree on this machine: Baton as it
  always was.
- A remote executor (dask/) runs it on another machine. Work moves only through git: the run
  pushes the turn's starting commit to a branch of its own for this attempt (`RemoteWork`), the
  remote side builds a worktree from it, commits what the agent left and pushes the branch back,
  and the turn's result names that commit (`TurnResult.head`). The run takes exactly that
  commit, and only from the attempt it is waiting for: a worker that comes back late can push
  to its own attempt's branch and nothing else reads it.

The executors Baton knows are listed in `backend/executors/__init__.py`, one folder each;
tests/executors/ holds the contract tests every one of them passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypedDict

from ..dispatcher.process import ProcessOutcome, StopRequest
from ..runtimes.base import AgentEvent, Invocation, Limits, Runtime, RunSummary, TurnRequest


class ExecutorProblem(TypedDict):
    """Why an executor cannot take runs now (shown on /agent/health; nothing is claimed)."""

    code: str
    message: str


@dataclass
class RemoteWork:
    """What a remote executor needs beyond the turn itself: everything travels in git or here."""

    origin: str  # the project's remote URL, as the workers reach it
    start_sha: str  # the commit the turn starts from (pushed to `branch` before the turn)
    branch: str  # this attempt's own branch on the origin: baton/attempts/<task>/<attempt>
    base: str = ""  # the base branch, fetched too so that the agent's origin/<base> is fresh
    # Files Baton places in a worktree (copy_files, linked files as copies, attachments): their
    # bytes, by path relative to the worktree. Never committed, as on the host.
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    commit_message: str = ""  # for what the agent leaves uncommitted, as on the host
    images: list[str] = field(default_factory=list)  # paths (relative to the worktree) of attached images
    run_on: str | None = None  # the box the task is pinned to (a resource its worker offers)
    # Variable names the agent's environment never gets on the worker either (secret_env_vars and
    # the like); and the variables whose values the project host forwards (executor settings).
    hidden_env: list[str] = field(default_factory=list)
    forward_env: dict[str, str] = field(default_factory=dict, repr=False)  # values: never in a repr or a log


@dataclass
class TurnSpec:
    """One agent turn, as a TaskRun hands it to an executor."""

    task_id: str
    attempt: str  # unique per turn: names the remote branch, the Dask key, the event topic
    runtime_name: str
    runtime: Runtime
    request: TurnRequest  # as on the project host: the worktree, scratch folder and environment there
    limits: Limits
    stop: StopRequest  # set by a cancel, a shutdown or a forced stop
    raw_log: Path  # the CLI's stdout, appended
    stderr_log: Path
    marker: dict[str, str]  # TASK_ID and BATON_PROJECT: how the turn's processes are found
    summary: RunSummary  # filled as events come (and `failure` from the turn's replies)
    record: Callable[[AgentEvent], None]  # logs one event and adds it to `summary`
    # The CLI started: its pid on this machine (None elsewhere) and the worker's name (None here).
    on_start: Callable[[int | None, str | None], None]
    check: Callable[[Invocation], None]  # refuses an invocation (raises) before anything starts
    remote: RemoteWork | None = None  # set when the executor is remote
    say: Callable[[str], None] = lambda text: None  # a line of Baton's own in the task's transcript


@dataclass
class TurnResult:
    outcome: ProcessOutcome
    usage: AgentEvent | None = None  # what the turn used, if it ended without its result event
    head: str | None = None  # remote: the commit the turn's branch holds now (None: nothing came back)
    worker: str | None = None  # remote: where it ran
    lost: str | None = None  # remote: the worker went away (crashed, frozen, unreachable): why
    error: str | None = None  # remote: the worker could not run or save the turn (e.g. no access to the origin)
    moved: list[str] = field(default_factory=list)  # remote: refs the agent moved in the worker's clone


class Executor(Protocol):
    name: str
    remote: bool  # True: turns run elsewhere and their work comes back through git

    def problem(self) -> ExecutorProblem | None:
        """Why no turn can start now (no scheduler, no worker), or None. Never waits: called per
        tick and by /agent/health."""
        ...

    def listen(self, listener: Callable[[], None]) -> None:
        """Call `listener()` whenever problem() changes."""
        ...

    def places(self, run_on: str | None) -> bool:
        """Whether a turn pinned to the box `run_on` (None: anywhere) could start now; the
        dispatcher does not claim a pinned task whose box is not there."""
        ...

    def run_turn(self, spec: TurnSpec) -> TurnResult:
        """Run one turn to its end; never raises for the agent's own failures (the outcome says)."""
        ...

    def close(self) -> None:
        ...
