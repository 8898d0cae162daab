"""What Baton tells the coding agent: the task, and feedback when landing fails."""

from __future__ import annotations

from collections.abc import Sequence

from ..attachments import describe
from ..config import AgentConfig
from ..models import Attachment, Task, TaskStatus


def commit_message(task: Task) -> str:
    return f"{task.task_type}({task.id}): {task.title}"


def builds_on_text(dependencies: Sequence[Task]) -> str:
    """What the tasks this one depends on did: those completed (landed, or done with no changes)."""
    done = [dep for dep in dependencies if dep.status is TaskStatus.completed]
    if not done:
        return ""
    lines = ["", "## Builds on", "",
             "This task depends on these completed tasks; what they landed is on the base branch you started from:", ""]
    for dep in done:
        what = f"landed as commit {dep.commit_sha[:12]}" if dep.commit_sha else "completed with no changes"
        summary = " ".join((dep.result_text or "").split())
        summary = summary if len(summary) <= 600 else summary[:599] + "…"
        lines.append(f"- {dep.id} ({dep.title}), {what}" + (f". Its agent's report: {summary}" if summary else ""))
    return "\n".join(lines) + "\n"


def task_prompt(task: Task, config: AgentConfig, *, continuing: bool, dependencies: Sequence[Task] = ()) -> str:
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
    return "\n".join(lines) + "\n" + builds_on_text(dependencies)


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


def _comment_lines(message) -> list[str]:
    out = []
    for c in message.comments:
        where = c.path + (f" line {c.line}" + (" (old side)" if c.side == "old" else "") if c.line else "")
        out.append(f"- {where}: {c.text.strip()}")
    return out


def messages_text(messages) -> str:
    """A person's messages (follow-ups, requested changes, plan revisions) as the agent reads them."""
    intro = {"changes": "A reviewer requested changes before your work lands:",
             "revise": "The person reviewing your plan asks you to revise it:",
             "message": "A follow-up from the person who gave you this task:"}
    blocks = []
    for message in messages:
        lines = [intro.get(message.kind, intro["message"])]
        if message.text.strip():
            lines += ["", message.text.strip()]
        comments = _comment_lines(message)
        if comments:
            lines += ["", "Comments on the diff (paths are relative to the repository root):", *comments]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def follow_up_prompt(messages, config: AgentConfig) -> str:
    """A turn in the session that did the work: only what is new."""
    tests = config.test_command.strip()
    return (messages_text(messages) + "\nMake the changes on this branch and commit them"
            + (f"; the tests (`{tests}`) must still pass" if tests else "")
            + ". Do not push and do not change other branches.\n")


def work_prompt(task: Task, config: AgentConfig, *, continuing: bool, messages=(), landed_before: bool = False,
                dependencies: Sequence[Task] = ()) -> str:
    """A fresh session's whole context: the task, its approved plan, what happened before and
    every message waiting for it."""
    text = task_prompt(task, config, continuing=continuing, dependencies=dependencies)
    if task.plan_approved and task.plan:
        text += "\n## The approved plan\n\nA person reviewed and approved this plan; carry it out.\n\n" + task.plan.strip() + "\n"
    if landed_before:
        text += ("\n## Earlier work\n\nAn earlier run of this task already landed on "
                 f"`{config.base_branch}` (see `git log`)."
                 + (f" Its summary: {task.result_text.strip()[:4000]}" if task.result_text else "") + "\n")
    if messages:
        text += "\n## Messages\n\n" + messages_text(messages)
    return text


def planning_prompt(task: Task, config: AgentConfig, messages=(), dependencies: Sequence[Task] = ()) -> str:
    """A read-only planning turn: the answer is the plan a person reviews."""
    lines = [
        f"# Plan task {task.id}: {task.title}",
        "",
        f"Type: {task.task_type}. Priority: {task.priority}.",
        "",
        task.content.strip() or "(no further description)",
        "",
        "## What to do now",
        "",
        "- Do not change anything yet: this turn is read-only (file writes and commands that change "
        "things are refused). Read the code you need.",
        "- Answer with a plan a person can review: the approach, the files you would change and how, "
        "the tests you would add or run, and the risks. Your final answer is the plan.",
    ]
    text = "\n".join(lines) + "\n" + builds_on_text(dependencies)
    if task.plan:
        text += "\n## Your earlier plan\n\n" + task.plan.strip() + "\n"
    if messages:
        text += "\n## Messages\n\n" + messages_text(messages)
    return text


def revision_prompt(messages) -> str:
    """Another planning turn in the planning session."""
    return messages_text(messages) + "\nRevise the plan accordingly. This turn is read-only too; answer with the whole revised plan.\n"


def attachments_text(attachments: list[Attachment]) -> str:
    """The files a person attached, as the agent finds them in its worktree."""
    lines = ["## Attached files", "",
             "A person attached these files to the task. Baton placed copies in your worktree; read them "
             "(images too) where they help. They are never committed: do not add them to a commit.", ""]
    lines += [f"- {describe(a)}" for a in attachments]
    return "\n".join(lines) + "\n"
