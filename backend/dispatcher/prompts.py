"""What Baton tells the coding agent: the task, and feedback when landing fails."""

from __future__ import annotations

from ..config import AgentConfig
from ..models import Task


def commit_message(task: Task) -> str:
    return f"{task.task_type}({task.id}): {task.title}"


def task_prompt(task: Task, config: AgentConfig, *, continuing: bool) -> str:
    tests = config.test_command.strip()
    lines = [
        f"# Task {task.id}: {task.title}",
        "",
        f"Type: {task.task_type}. Priority: {task.priority}.",
        "",
        task.content.strip() or "(no further description)",
        "",
        "## How to work",
        "",
        "- You are in a git worktree of the project on branch "
        f"`task/{task.id}`, started from the newest `{config.base_branch}`. Stay inside it.",
        "- Follow the project's conventions: read CLAUDE.md (and PROGRESS.md) first if they exist.",
        "- If you start a server, use the port in the TASK_PORT environment variable.",
    ]
    if tests:
        lines.append(f"- The project's tests run with `{tests}`; they must pass.")
    lines += [
        f"- Commit your work when done, with a message like `{commit_message(task)}`.",
        "- Do not push and do not change other branches: Baton rebases, tests and lands your commits.",
    ]
    if continuing:
        lines += ["", "This branch already holds commits from an earlier attempt; check `git log` and continue."]
    return "\n".join(lines) + "\n"


def conflict_prompt(base_ref: str, files: list[str]) -> str:
    listed = "\n".join(f"- {f}" for f in files)
    return (
        f"Landing your work failed: rebasing your branch onto `{base_ref}` conflicts in:\n\n{listed}\n\n"
        f"Run `git rebase {base_ref}`, resolve each conflict so that both your change and the one "
        "already on the base branch keep working, `git add` the files and `git rebase --continue` "
        "(with GIT_EDITOR=true). Make sure everything is committed when you finish.\n"
    )


def tests_prompt(command: str, output_tail: str) -> str:
    return (
        f"Landing your work failed: after rebasing onto the newest base branch, the test command "
        f"`{command}` failed. The end of its output:\n\n```\n{output_tail}\n```\n\n"
        "Fix the code so the tests pass, and commit the fix.\n"
    )
