"""What the dispatcher offers WORKFLOW.md's live reload: runtimes replaced while it runs (with
their guardrails), per-state limits asked at each claim, a worker limit that changes, and the
logs somewhere else than <project>/logs. The real agent app and dispatcher, real git, the fake
CLIs (tests/fakes/fake_claude.py, fake_codex.py)."""

from __future__ import annotations

from pathlib import Path

from backend.agent.app import create_app
from backend.agent.settings import AgentSettings
from backend.guardrails import CODE as GUARDRAILS, WHY_CODEX_TURN, acknowledge
from backend.mirrors import MirrorWriter
from backend.models import Task, TaskStatus
from backend.runtimes.codex import CodexConfig, CodexRuntime
from backend.runtimes.demo import DemoConfig, DemoRuntime
from backend.store import TaskStore
from conftest import fake_task
from runtimes.runtime_fakes import make_fake
from support import FINISHED, acknowledge_guardrails, make_repo, serve, submit_task, wait_for, wait_task_done

import httpx

GRANULAR = {"granular": {"mcp_elicitations": False, "rules": True, "sandbox_approval": True}}


def held(flag: Path) -> dict:
    """A scenario whose agent waits until `flag` exists (the test lets it go)."""
    return {"steps": [{"wait_for": str(flag), "seconds": 60}]}


def status(agent, task_id: str) -> TaskStatus:
    return agent.store.get(task_id).status


# ----- runtimes replaced while the agent runs -------------------------------------------------


def test_replaced_runtimes_serve_the_next_claim_and_bring_their_guardrails(agent_factory, tmp_path, monkeypatch):
    codex = make_fake("codex", tmp_path, monkeypatch)
    # workspace-write: guarded, so nothing is acknowledged and none is needed at first.
    agent = agent_factory(config=codex.config(section={"sandbox": "workspace-write"}), dispatch=True,
                          guardrails_acknowledged=False)
    dispatcher = agent.app.state.dispatcher
    before = wait_task_done(agent, submit_task(agent, fake_task("Before", {"steps": []})))
    assert before.status is TaskStatus.completed, before.error_message
    assert agent.client.post("/agent/tasks", json={"title": "demo", "runtime": "demo"}).status_code == 422

    section = CodexConfig(command=codex.command, timeout=60, stall_timeout=30, model="gpt-5.4",
                          sandbox="workspace-write", approval_policy=GRANULAR,
                          turn_sandbox_policy={"type": "workspaceWrite", "networkAccess": True})
    dispatcher.set_runtimes({"codex": CodexRuntime(section), "demo": DemoRuntime(DemoConfig())}, {"codex": section})
    listed = agent.client.get("/agent/runtimes").json()
    assert [r["name"] for r in listed["runtimes"]] == ["codex", "demo"]
    after = wait_task_done(agent, submit_task(agent, fake_task("After", {"steps": []})))
    assert after.status is TaskStatus.completed, after.error_message
    first, second = codex.calls()
    assert (first["approval_policy"], first["sandbox_policy"]) == ("never", None)
    assert second["approval_policy"] == GRANULAR
    assert second["sandbox_policy"] == {"type": "workspaceWrite", "networkAccess": True}
    assert after.agent_model == "gpt-5.4" and before.agent_model == "gpt-5.5"

    # A replacement that gives full access waits for the acknowledgement, as agent.yaml's would.
    unguarded = section.model_copy(update={"turn_sandbox_policy": "danger-full-access"})
    dispatcher.set_runtimes({"codex": CodexRuntime(unguarded)}, {"codex": unguarded})
    (problem,) = dispatcher.problems()
    assert problem["code"] == GUARDRAILS and WHY_CODEX_TURN in problem["message"]
    assert agent.client.get("/agent/health").json()["status"] == "degraded"
    assert agent.client.post("/agent/tasks", json={"title": "demo", "runtime": "demo"}).status_code == 422
    waiting = submit_task(agent, fake_task("Waits", {"steps": []}))
    assert dispatcher.tick() == 0 and status(agent, waiting) is TaskStatus.pending

    acknowledge(agent.settings.project_dir, ["codex"], by="test")
    assert dispatcher.problems() == []
    done = wait_task_done(agent, waiting)
    assert done.status is TaskStatus.completed, done.error_message
    assert codex.calls()[-1]["sandbox_policy"] == {"type": "dangerFullAccess"}


# ----- per-state limits -------------------------------------------------------------------------


class StateLimits:
    """A WorkflowPolicy reduced to agent.max_concurrent_agents_by_state: the issue state of each
    task (by title) and a limit per state. It governs no task, so the runs themselves are
    ordinary ones and this test sees the claims alone."""

    def __init__(self, states: dict[str, str], limits: dict[str, int]) -> None:
        self.states, self.limits = states, limits
        self.asked: list[tuple[str, list[str]]] = []

    def governs(self, task: Task) -> bool:
        return False

    def claimable(self, task: Task, running: list[Task]) -> bool:
        self.asked.append((task.title, sorted(t.title for t in running)))
        state = self.states.get(task.title)
        if state not in self.limits:
            return True
        return sum(self.states.get(t.title) == state for t in running) < self.limits[state]

    def hidden_env(self) -> frozenset[str]:
        return frozenset()

    # Nothing else is asked of a policy that governs no task.
    def _unexpected(self, *args, **kwargs):
        raise AssertionError("a run asked about a task the policy does not govern")

    workspace_path = hook = hook_env = first_prompt = continuation_prompt = _unexpected
    max_turns = issue_status = turn_started = _unexpected


def test_per_state_limits_hold_a_second_task_of_a_full_state_until_the_first_ends(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(max_parallel_workers=3))
    dispatcher = agent.app.state.dispatcher
    flag = tmp_path / "release"
    x1 = submit_task(agent, fake_task("x1", held(flag)))
    x2 = submit_task(agent, fake_task("x2", {"steps": []}))
    y1 = submit_task(agent, fake_task("y1", {"steps": []}))
    policy = StateLimits({"x1": "In Progress", "x2": "In Progress", "y1": "Todo"}, {"In Progress": 1})
    dispatcher.set_workflow(policy)
    dispatcher.start()
    # One round claimed x1 then, beside it, refused x2 and took y1 (another state).
    wait_for(lambda: status(agent, x1) is TaskStatus.in_progress, what="x1 to start")
    assert wait_task_done(agent, y1).status is TaskStatus.completed
    assert dispatcher.tick() == 0 and status(agent, x2) is TaskStatus.pending
    assert ("x2", ["x1"]) in policy.asked
    flag.touch()
    assert wait_task_done(agent, x1).status is TaskStatus.completed
    assert wait_task_done(agent, x2).status is TaskStatus.completed

    # Without the workflow the limits are gone: two held tasks of that state run side by side.
    dispatcher.set_workflow(None)
    assert agent.app.state.dispatcher.ctx.workflow is None
    flag2 = tmp_path / "release2"
    both = [submit_task(agent, fake_task(title, held(flag2))) for title in ("x1", "x2")]
    wait_for(lambda: all(status(agent, t) is TaskStatus.in_progress for t in both), what="both to run")
    flag2.touch()
    assert all(wait_task_done(agent, t).status is TaskStatus.completed for t in both)


# ----- the worker limit ---------------------------------------------------------------------------


def test_a_larger_worker_limit_lets_the_next_task_start_beside_the_running_one(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(max_parallel_workers=1), dispatch=True)
    dispatcher = agent.app.state.dispatcher
    flag = tmp_path / "release"
    first = submit_task(agent, fake_task("first", held(flag)))
    wait_for(lambda: status(agent, first) is TaskStatus.in_progress, what="the first task to start")
    second = submit_task(agent, fake_task("second", held(flag)))
    assert dispatcher.tick() == 0 and status(agent, second) is TaskStatus.pending

    dispatcher.resize_workers(2)
    wait_for(lambda: status(agent, second) is TaskStatus.in_progress, what="the second task to start")
    assert status(agent, first) is TaskStatus.in_progress  # the first was never touched
    assert agent.client.get("/agent/dispatcher").json()["workers"] == {"max": 2, "busy": 2}
    flag.touch()
    assert wait_task_done(agent, first).status is TaskStatus.completed
    assert wait_task_done(agent, second).status is TaskStatus.completed


def test_a_worker_limit_below_one_is_refused(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(max_parallel_workers=2))
    slots = agent.app.state.dispatcher.ctx.slots
    try:
        slots.resize(0)
    except ValueError as exc:
        assert "at least 1" in str(exc)
    else:
        raise AssertionError("resize(0) was accepted")
    assert slots.limit == 2


# ----- logs elsewhere ----------------------------------------------------------------------------


def test_task_logs_go_to_the_settings_logs_folder(tmp_path, fake_cli):
    project = make_repo(tmp_path)
    acknowledge_guardrails(project)
    logs_root = tmp_path / "elsewhere" / "logs"
    config = fake_cli.config().model_copy(update={"dispatcher_autostart": True})
    settings = AgentSettings(project_dir=project, config=config, logs_root=logs_root)
    store = TaskStore(settings.store_path, mirrors=MirrorWriter(settings.tasks_dir))
    store.initialize()
    with serve(create_app(settings, store)) as url, httpx.Client(base_url=url, timeout=10) as client:
        created = client.post("/agent/tasks", json=fake_task("Logged", {"steps": [
            {"write": "a.txt", "text": "a\n"}, {"commit": "feature: a"}]}))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        task = wait_for(lambda: (t := store.get(task_id)).status in FINISHED and t, timeout=60,
                        what="the task to finish")
        assert task.status is TaskStatus.completed and task.commit_sha, task.error_message
        for name in (f"{task_id}.jsonl", f"{task_id}.events.jsonl", f"{task_id}.stderr.log"):
            assert (logs_root / name).is_file(), name
        assert not (project / "logs" / f"{task_id}.events.jsonl").exists()
        # The API reads the transcript from there too.
        events = client.get(f"/agent/tasks/{task_id}/events", params={"limit": 5000}).json()["events"]
        assert [e["kind"] for e in events if e["kind"] == "result"] == ["result"]
