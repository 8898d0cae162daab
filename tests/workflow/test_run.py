"""A WORKFLOW.md task's run (dispatcher/run.py under a WorkflowPolicy): its issue's workspace kept
between runs, the hooks around its turns, the template as its first prompt, continuation turns of
the same session while its issue stays active, and how each ending treats branch and workspace.

Real agent app, real git repository with a bare origin, the fake Claude CLI. `FlowPolicy` below is
a small real implementation of the dispatcher's WorkflowPolicy (policy.py), the contract's other
side, with a scripted sequence of issue states in place of a tracker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment

from backend.dispatcher.events import TaskLogs
from backend.dispatcher.policy import HookSpec, IssueCheck, IssueStatus, PromptError
from backend.models import Task, TaskStatus
from conftest import fake_task
from support import git, origin_of, submit_task, task_events, wait_for, wait_task_done

SECRET_NAME = "SECRET_FOR_TEST"  # the fake CLI logs this variable: a hidden one must never reach it
SECRET = "wf-tracker-secret-0123456789"
ACTIVE = IssueCheck(IssueStatus.active, "In Progress")
HANDOFF = IssueCheck(IssueStatus.handoff, "Human Review")


@dataclass
class FlowPolicy:
    root: Path
    hooks: dict[str, str] = field(default_factory=dict)
    statuses: list[IssueCheck] = field(default_factory=lambda: [HANDOFF])  # the last one repeats
    template: str = "Issue {{ issue.identifier }}: {{ issue.title }}\n\n{{ issue.description }}\n"
    turns: int = 20
    hook_timeout: float = 30
    checks: int = 0
    started: list[tuple[str, int]] = field(default_factory=list)

    def governs(self, task: Task) -> bool:
        return task.source is not None

    def workspace_path(self, task: Task) -> Path:
        return self.root / task.source.identifier

    def hook(self, name):
        script = self.hooks.get(name)
        return HookSpec(name=name, script=script, timeout=self.hook_timeout) if script is not None else None

    def hook_env(self, task: Task) -> dict[str, str]:
        return {"BATON_ISSUE_ID": task.source.id, "BATON_ISSUE_IDENTIFIER": task.source.identifier,
                "BATON_WORKSPACE": str(self.workspace_path(task))}

    def first_prompt(self, task: Task) -> str:
        env = SandboxedEnvironment(undefined=jinja2.StrictUndefined)
        issue = {"identifier": task.source.identifier, "title": task.title, "description": task.content}
        try:
            return env.from_string(self.template).render(issue=issue, attempt=None)
        except jinja2.TemplateError as exc:
            raise PromptError(f"template: {exc}") from None

    def continuation_prompt(self, task: Task, turn: int, max_turns: int, state: str | None) -> str:
        return f"Continuation {turn} of {max_turns}: {task.source.identifier} is still {state}. Go on.\n"

    def max_turns(self) -> int:
        return self.turns

    def issue_status(self, task: Task) -> IssueCheck:
        self.checks += 1
        return self.statuses[min(self.checks, len(self.statuses)) - 1]

    def turn_started(self, task: Task, turn: int) -> None:
        self.started.append((task.id, turn))

    def claimable(self, task: Task, running: list[Task]) -> bool:
        return True

    def hidden_env(self) -> frozenset[str]:
        return frozenset({SECRET_NAME})


@pytest.fixture
def flow(agent_factory, fake_cli, tmp_path, monkeypatch):
    """start(policy) -> (agent, policy): the agent's dispatcher runs under the policy."""
    monkeypatch.setenv(SECRET_NAME, SECRET)

    def start(config=None, **policy_fields):
        policy = FlowPolicy(root=tmp_path / "ws-root" / "issues", **policy_fields)
        agent = agent_factory(config=config or fake_cli.config(), dispatch=False)
        dispatcher = agent.app.state.dispatcher
        dispatcher.ctx.workflow = policy
        dispatcher.start()
        return agent, policy

    return start


def issue_task(agent, identifier: str, scenario: dict, title: str = "Fix the thing") -> str:
    return submit_task(agent, fake_task(title, scenario, source={
        "kind": "linear", "id": f"uuid-{identifier}", "identifier": identifier}))


def baton_says(agent, task_id: str) -> str:
    return "\n".join(e.get("text", "") for e in task_events(agent, task_id) if e["kind"] == "baton")


def registered(project: Path, path: Path) -> bool:
    return str(path) in git(project, "worktree", "list", "--porcelain")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ----- hooks ---------------------------------------------------------------------------------


def test_hooks_run_in_the_workspace_with_the_tasks_environment_and_a_failing_after_run_is_ignored(
        flow, fake_cli, tmp_path):
    record = tmp_path / "record"
    record.mkdir()
    agent, policy = flow(hooks={
        "after_create": f'echo "after_create in $(pwd)" >> {record}/order; echo setting up; echo made > setup.txt',
        "before_run": f"echo before_run >> {record}/order; env > {record}/before_run.env",
        "after_run": f"echo after_run >> {record}/order; echo cleanup went wrong; exit 4",
        "before_remove": f'echo "before_remove $(cat setup.txt)" >> {record}/order',
    })
    task_id = issue_task(agent, "MT-1", {"steps": [{"write": "feature.txt", "text": "done\n"},
                                                   {"commit": "the feature"}]})
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    workspace = policy.root / "MT-1"
    project = agent.settings.project_dir

    # The agent ran in the issue's workspace, without the workflow's hidden variable.
    (call,) = fake_cli.calls()
    assert call["cwd"] == str(workspace)
    assert call["env"][SECRET_NAME] is None and call["env"]["TASK_ID"] == task_id
    assert "Issue MT-1: Fix the thing" in call["prompt"]
    assert task.worktree == str(workspace)

    # The work landed, without the hook's untracked file; the workspace went after before_remove.
    origin = origin_of(project)
    assert git(origin, "show", "main:feature.txt") == "done\n"
    wait_for(lambda: not workspace.exists(), what="the workspace to be removed")
    wait_for(lambda: lines(record / "order")[-1:] == ["before_remove made"], what="before_remove")
    assert lines(record / "order") == [f"after_create in {workspace}", "before_run", "after_run", "before_remove made"]
    assert not registered(project, workspace)
    wait_for(lambda: git(project, "branch", "--list", f"task/{task_id}").strip() == "", what="branch deletion")

    env = dict(line.split("=", 1) for line in lines(record / "before_run.env") if "=" in line)
    assert env["BATON_ISSUE_ID"] == "uuid-MT-1" and env["BATON_ISSUE_IDENTIFIER"] == "MT-1"
    assert env["BATON_WORKSPACE"] == str(workspace) and env["TASK_ID"] == task_id
    assert 9200 <= int(env["TASK_PORT"]) <= 9299
    assert SECRET_NAME not in env and SECRET not in (record / "before_run.env").read_text()

    hooks_log = TaskLogs(agent.settings.logs_dir, task_id).hooks.read_text()
    assert "=== hook after_create in" in hooks_log and "setting up" in hooks_log
    assert "cleanup went wrong" in hooks_log and "=== hook after_run: failed (exit 4)" in hooks_log
    said = baton_says(agent, task_id)
    assert "hook after_create: ok in" in said and "hook before_run: ok in" in said
    assert "hook after_run: failed (exit 4)" in said and "cleanup went wrong" in said
    assert "MT-1 moved to Human Review: the agent handed it over; landing" in said
    assert policy.started == [(task_id, 1)]


def test_a_failing_after_create_fails_the_attempt_before_any_agent_turn(flow, fake_cli):
    agent, policy = flow(hooks={"after_create": "echo npm is not there >&2; exit 3"})
    task_id = issue_task(agent, "MT-2", {"steps": []})
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.failed and task.error_reason == "hook_failed"
    assert task.error_message.startswith("after_create hook failed (exit 3): npm is not there")
    assert fake_cli.calls() == []
    # Removed again, so that the next run makes it and runs after_create anew.
    assert not (policy.root / "MT-2").exists()
    assert not registered(agent.settings.project_dir, policy.root / "MT-2")


def test_a_before_run_that_times_out_fails_the_attempt(flow, fake_cli):
    agent, policy = flow(hooks={"before_run": "echo waiting; sleep 600"}, hook_timeout=1)
    task = wait_task_done(agent, issue_task(agent, "MT-9", {"steps": []}))
    assert task.status is TaskStatus.failed and task.error_reason == "hook_failed"
    assert task.error_message == "before_run hook timed out after 1s: waiting"
    assert fake_cli.calls() == []
    assert (policy.root / "MT-9").is_dir()  # a failed run keeps its workspace


# ----- turns ---------------------------------------------------------------------------------


def test_an_issue_still_active_gets_a_continuation_turn_of_the_same_session_then_lands(flow, fake_cli):
    agent, policy = flow(statuses=[ACTIVE, HANDOFF])
    task_id = issue_task(agent, "MT-3", {
        "steps": [{"write": "one.txt", "text": "1\n"}, {"commit": "first turn"}],
        "on_resume": [{"steps": [{"write": "two.txt", "text": "2\n"}, {"commit": "second turn"}]}]})
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    first, second = fake_cli.calls()
    assert "--resume" not in first["argv"] and second["argv"][-2:] == ["--resume", task.session_id]
    assert second["prompt"] == "Continuation 2 of 20: MT-3 is still In Progress. Go on.\n"
    assert first["cwd"] == second["cwd"] == str(policy.root / "MT-3")
    origin = origin_of(agent.settings.project_dir)
    assert git(origin, "show", "main:one.txt") == "1\n" and git(origin, "show", "main:two.txt") == "2\n"
    assert policy.started == [(task_id, 1), (task_id, 2)] and policy.checks == 2
    said = baton_says(agent, task_id)
    assert "turn 1 of 20: the workflow's prompt for MT-3" in said
    assert "turn 2 of 20: MT-3 is still in In Progress" in said


def test_max_turns_fails_the_task_keeping_branch_and_workspace(flow, fake_cli):
    agent, policy = flow(statuses=[ACTIVE], turns=2)
    task_id = issue_task(agent, "MT-4", {"steps": [{"write": "half.txt", "text": "half\n"}]})
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.failed and task.error_reason == "max_turns"
    assert task.error_message.startswith(f"2 turns ran and MT-4 is still in In Progress; its work is kept on "
                                         f"task/{task_id}")
    assert len(fake_cli.calls()) == 2
    project, workspace = agent.settings.project_dir, policy.root / "MT-4"
    assert git(project, "show", f"task/{task_id}:half.txt") == "half\n"
    assert git(origin_of(project), "show", f"task/{task_id}:half.txt") == "half\n"
    assert workspace.is_dir() and registered(project, workspace)
    assert git(workspace, "symbolic-ref", "HEAD").strip() == f"refs/heads/task/{task_id}"
    assert git(workspace, "status", "--porcelain").strip() == ""  # its work is committed


def test_an_issue_gone_terminal_cancels_the_task_with_the_reason_and_removes_the_workspace(flow, fake_cli, tmp_path):
    marker = tmp_path / "before_remove.ran"
    done = IssueCheck(IssueStatus.terminal, "Done", reason="MT-5 moved to Done in linear")
    agent, policy = flow(statuses=[done], hooks={"before_remove": f"ls > {marker}"})
    task_id = issue_task(agent, "MT-5", {"steps": [{"write": "partial.txt", "text": "p\n"}]})
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.cancelled
    assert task.cancel_reason == "MT-5 moved to Done in linear"
    assert len(fake_cli.calls()) == 1
    project = agent.settings.project_dir
    assert git(project, "show", f"task/{task_id}:partial.txt") == "p\n"  # the work is kept on its branch
    assert not (policy.root / "MT-5").exists() and not registered(project, policy.root / "MT-5")
    assert "partial.txt" in marker.read_text()  # before_remove ran in the workspace, before its removal
    assert "MT-5 is Done: stopping (MT-5 moved to Done in linear)" in baton_says(agent, task_id)
    # Recorded like the sync engine's own stops, so an issue that comes back reruns the task.
    assert task.source.reports[f"stopped:{task.runs}"].state == "done"


def test_a_template_error_fails_the_task_with_the_templates_message(flow, fake_cli):
    agent, _ = flow(template="Issue {{ issue.identifier }} {{ issue.nope }}\n")
    task = wait_task_done(agent, issue_task(agent, "MT-6", {"steps": []}))
    assert task.status is TaskStatus.failed and task.error_reason == "template_error"
    assert "template:" in task.error_message and "nope" in task.error_message
    assert fake_cli.calls() == []


# ----- workspace reuse -----------------------------------------------------------------------


def test_a_failed_runs_workspace_is_reused_by_the_rerun_and_after_create_runs_once(flow, fake_cli, tmp_path):
    record = tmp_path / "record"
    record.mkdir()
    # Still active when the rerun starts (a rerun of a handed-off issue lands without a turn).
    agent, policy = flow(hooks={"after_create": f"echo created >> {record}/after_create; echo cache > .cache-file",
                                "before_run": f"echo run >> {record}/before_run"}, statuses=[ACTIVE, HANDOFF])
    task_id = issue_task(agent, "MT-7", {"steps": [{"write": "wip.txt", "text": "wip\n"}],
                                         "fail_once": str(tmp_path / "failed-once")})
    first = wait_task_done(agent, task_id)
    assert first.status is TaskStatus.failed and first.error_reason == "agent_error"
    workspace = policy.root / "MT-7"
    assert (workspace / ".cache-file").exists()  # the failed run's folder is still there

    assert agent.client.post(f"/agent/tasks/{task_id}/rerun").status_code == 200
    task = wait_for(lambda: (t := agent.store.get(task_id)).status is TaskStatus.completed and t,
                    timeout=60, what="the rerun to land")
    assert lines(record / "after_create") == ["created"]
    assert lines(record / "before_run") == ["run", "run"]
    first_call, second_call = fake_cli.calls()
    assert first_call["cwd"] == second_call["cwd"] == str(workspace)
    assert git(origin_of(agent.settings.project_dir), "show", "main:wip.txt") == "wip\n"
    assert "(kept from an earlier run)" in baton_says(agent, task_id)
    assert json.loads(json.dumps(policy.started)) == [[task_id, 1], [task_id, 1]]


def test_tasks_the_workflow_does_not_govern_run_as_before(flow, fake_cli):
    agent, policy = flow(hooks={"before_run": "exit 1"})
    task_id = submit_task(agent, fake_task("Plain task", {"steps": [{"write": "plain.txt", "text": "x\n"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    (call,) = fake_cli.calls()
    assert call["cwd"] == str(agent.settings.project_dir / "worktrees" / task_id)
    assert "# Task" in call["prompt"] and policy.checks == 0 and policy.started == []
    assert call["env"][SECRET_NAME] is None  # the workflow's secret is hidden from every task
    assert not TaskLogs(agent.settings.logs_dir, task_id).hooks.exists()


# ----- stopped from outside ------------------------------------------------------------------


def test_a_forced_stop_puts_the_task_back_to_pending_keeping_its_workspace(flow, fake_cli, tmp_path):
    busy = tmp_path / "agent-busy"
    agent, policy = flow(hooks={"after_run": f"touch {tmp_path}/after_run.ran"})
    task_id = issue_task(agent, "MT-8", {"steps": [{"write": "draft.txt", "text": "d\n"},
                                                   {"block_once": str(busy), "seconds": 60}]})
    wait_for(busy.exists, timeout=30, what="the agent to be working")
    agent.app.state.dispatcher.stop(force=True)
    task = wait_for(lambda: (t := agent.store.get(task_id)).status is TaskStatus.pending and t, timeout=30,
                    what="the task back to pending")
    workspace = policy.root / "MT-8"
    assert workspace.is_dir() and registered(agent.settings.project_dir, workspace)
    assert git(agent.settings.project_dir, "show", f"task/{task_id}:draft.txt") == "d\n"
    assert not (tmp_path / "after_run.ran").exists()
    assert "hook after_run skipped: stopping (interrupted)" in baton_says(agent, task.id)


def test_a_persons_cancel_still_runs_after_run_and_before_remove(flow, fake_cli, tmp_path):
    busy = tmp_path / "agent-busy"
    agent, policy = flow(hooks={"after_run": f"echo after_run >> {tmp_path}/order",
                                "before_remove": f"echo before_remove >> {tmp_path}/order"})
    task_id = issue_task(agent, "MT-10", {"steps": [{"block_once": str(busy), "seconds": 60}]})
    wait_for(busy.exists, timeout=30, what="the agent to be working")
    assert agent.client.post(f"/agent/tasks/{task_id}/cancel").status_code in (200, 202)
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.cancelled
    assert lines(tmp_path / "order") == ["after_run", "before_remove"]
    assert not (policy.root / "MT-10").exists()


def test_the_workflows_secret_in_a_command_line_refuses_the_start(flow, fake_cli):
    config = fake_cli.config(claude_code={"extra_args": ["--append-system-prompt", f"key {SECRET}"]})
    agent, _ = flow(config=config)
    task = wait_task_done(agent, issue_task(agent, "MT-11", {"steps": []}))
    assert task.status is TaskStatus.failed and task.error_reason == "runtime_unavailable"
    assert SECRET_NAME in task.error_message and SECRET not in task.error_message
    assert fake_cli.calls() == []
