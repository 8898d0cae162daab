"""What a repository's WORKFLOW.md adds to the runs of its tasks, as the dispatcher sees it.

`RunContext.workflow` is None for a project without a WORKFLOW.md: its runs are exactly as
before. Otherwise it is a `WorkflowPolicy` (implemented by backend/workflow/policy.py over the
live, reloadable workflow), consulted for the tasks it `governs` (those its tracker made):

- the task's worktree lives at `workspace_path(task)` (`<workspace.root>/<workspace key>`) and is
  kept between runs of the task until its issue is done or cancelled (then `before_remove`);
- hooks run in it (`after_create` when the folder was created by this run, `before_run` before
  the first turn, `after_run` after the last, `before_remove` before it is removed);
- the first turn's prompt is the rendered template (`first_prompt`: a PromptError fails the
  attempt with the template's message); after each turn the issue is read again
  (`issue_status`): still active, the same session gets a continuation turn (up to
  `max_turns()`); handed off (a state the workflow names for that), the turns end and the work
  lands as usual; terminal, the run stops and the task is cancelled with the reason.

Every method reads the workflow as it is now: an edit applies to the next run or turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal, Protocol

from ..models import Task

HookName = Literal["after_create", "before_run", "after_run", "before_remove"]


class IssueStatus(str, Enum):
    active = "active"  # still to be worked on: another turn
    handoff = "handoff"  # the agent (or a person) handed it over: the turns end, the work lands
    terminal = "terminal"  # done, closed, cancelled, duplicate: the run stops, the task is cancelled
    other = "other"  # neither (e.g. back in Backlog): the run stops, its work kept, the task cancelled
    unknown = "unknown"  # the tracker could not be asked: treated as active (bounded by max_turns)


class PromptError(Exception):
    """The template could not be rendered for this task (an unknown variable, a bad filter).
    str() is the template's own message, with its line."""


@dataclass(frozen=True)
class HookSpec:
    name: HookName
    script: str  # run as `bash -lc <script>` in the worktree
    timeout: float  # seconds


@dataclass(frozen=True)
class IssueCheck:
    status: IssueStatus
    state: str | None  # the tracker's state name, when known
    reason: str | None = None  # for terminal/other: the cancel reason, in words


class WorkflowPolicy(Protocol):
    def governs(self, task: Task) -> bool:
        """Whether this task is one of the workflow's (made from an issue of its tracker)."""
        ...

    def workspace_path(self, task: Task) -> Path:
        """The task's worktree: absolute, inside workspace.root, named by its issue's key."""
        ...

    def hook(self, name: HookName) -> HookSpec | None:
        """The hook as the workflow says now; None when it has none."""
        ...

    def hook_env(self, task: Task) -> dict[str, str]:
        """Variables added to a hook's environment (the issue's id, identifier, the workspace)."""
        ...

    def first_prompt(self, task: Task) -> str:
        """The rendered template for the task's first turn of this run (raises PromptError)."""
        ...

    def continuation_prompt(self, task: Task, turn: int, max_turns: int, state: str | None) -> str:
        """What a continuation turn (`turn` of `max_turns`, from 2) says to the same session."""
        ...

    def max_turns(self) -> int: ...

    def issue_status(self, task: Task) -> IssueCheck:
        """Ask the tracker where the task's issue is now. Blocks (bounded); never raises."""
        ...

    def turn_started(self, task: Task, turn: int) -> None:
        """A turn of this run began (for /api/v1's turn_count)."""
        ...

    def claimable(self, task: Task, running: list[Task]) -> bool:
        """Whether the dispatcher may start this task now, beside the `running` ones: the
        per-state limits (agent.max_concurrent_agents_by_state). True for tasks it does not govern."""
        ...

    def hidden_env(self) -> frozenset[str]:
        """Environment variables no process of a task may see (the tracker's secret)."""
        ...
