"""Dependencies under a real dispatcher: a real agent app, real git repositories and the fake
Claude CLI. A task runs only after everything it depends on has landed; a failure blocks its
dependents until a rerun lands it."""

from __future__ import annotations

from backend.models import TaskStatus
from conftest import fake_task
from support import git, origin_of, wait_for, wait_task_done


def landed_subjects(agent) -> list[str]:
    """Commit subjects on origin's main, oldest first."""
    return git(origin_of(agent.settings.project_dir), "log", "--reverse", "--format=%s", "main").split("\n")[:-1]


def writes(name: str, *reads: str) -> dict:
    """A scenario that records what of `reads` its worktree held, writes `name` and commits."""
    steps = [{"read": f"{r}.txt", "into": f"{name}-saw-{r}.txt"} for r in reads]
    return {"steps": [*steps, {"write": f"{name}.txt", "text": f"{name}\n"}, {"commit": f"task {name}"}]}


def test_a_diamond_runs_in_dependency_order_on_two_workers(agent_factory, fake_cli):
    # A poll interval of an hour: each dependent is claimed because its dependency's landing woke
    # the dispatcher, not because a poll came round.
    agent = agent_factory(config=fake_cli.config(max_parallel_workers=2, poll_interval_seconds=3600), dispatch=True)
    created = agent.client.post("/agent/tasks/bulk", json={"tasks": [
        fake_task("D", writes("d", "b", "c"), ref="d", depends_on=["b", "c"]),
        fake_task("B", writes("b", "a"), ref="b", depends_on=["a"]),
        fake_task("C", writes("c", "a"), ref="c", depends_on=["a"]),
        fake_task("A", writes("a"), ref="a"),
    ]})
    assert created.status_code == 201, created.text
    ids = {t["ref"]: t["id"] for t in created.json()["tasks"]}
    done = {ref: wait_task_done(agent, task_id) for ref, task_id in ids.items()}
    assert all(t.status is TaskStatus.completed for t in done.values()), {r: t.error_message for r, t in done.items()}

    # Each started only after its dependencies had finished (landed)...
    for ref, deps in {"b": "a", "c": "a", "d": "bc"}.items():
        for dep in deps:
            assert done[ref].started_at >= done[dep].finished_at, f"{ref} started before {dep} finished"
    # ...so its worktree held their work, and main has them in that order.
    origin = origin_of(agent.settings.project_dir)
    for ref, deps in {"b": "a", "c": "a", "d": "bc"}.items():
        for dep in deps:
            assert git(origin, "show", f"main:{ref}-saw-{dep}.txt") == f"{dep}\n"
    subjects = landed_subjects(agent)
    assert subjects.index("task a") < min(subjects.index("task b"), subjects.index("task c"))
    assert subjects.index("task d") == len(subjects) - 1
    # Only the created tasks ran, once each.
    calls = fake_cli.calls()
    assert sorted(call["env"]["TASK_ID"] for call in calls) == sorted(ids.values())
    # D's prompt says what it builds on: B and C, each with its landed commit; A's says nothing of it.
    prompt_of = {call["env"]["TASK_ID"]: call["prompt"] for call in calls}
    assert "## Builds on" not in prompt_of[ids["a"]]
    d_prompt = prompt_of[ids["d"]]
    builds_on = d_prompt[d_prompt.index("## Builds on"):]
    for ref in "bc":
        assert f"- {ids[ref]} ({ref.upper()}), landed as commit {done[ref].commit_sha[:12]}" in builds_on
    assert ids["a"] not in builds_on  # only its direct dependencies


def test_a_failure_blocks_its_dependents_until_a_rerun_lands_it(agent_factory, fake_cli, tmp_path):
    agent = agent_factory(config=fake_cli.config(max_parallel_workers=2), dispatch=True)
    flaky = {**writes("a"), "fail_once": str(tmp_path / "failed-once"), "error": "the model gave up"}
    created = agent.client.post("/agent/tasks/bulk", json={"tasks": [
        fake_task("Schema", flaky, ref="a"),
        fake_task("API", writes("b", "a"), ref="b", depends_on=["a"]),
        fake_task("Docs", writes("c", "b"), ref="c", depends_on=["b"]),
        fake_task("Unrelated", writes("u")),
    ]})
    assert created.status_code == 201, created.text
    a, b, c, unrelated = (t["id"] for t in created.json()["tasks"])

    assert wait_task_done(agent, a).status is TaskStatus.failed
    blocked_b = wait_for(lambda: (t := agent.store.get(b)).status is TaskStatus.blocked and t, what="B blocked")
    assert blocked_b.blocked_reason.startswith(f"“Schema” ({a}) failed: ")
    blocked_c = agent.store.get(c)
    assert blocked_c.status is TaskStatus.blocked and blocked_c.blocked_reason == f"“API” ({b}) is blocked"
    # The unrelated task is not held up.
    assert wait_task_done(agent, unrelated).status is TaskStatus.completed
    assert {call["env"]["TASK_ID"] for call in fake_cli.calls()} == {a, unrelated}, "B and C never ran"
    # Blocked, as the board reads it.
    assert {t["id"] for t in agent.client.get("/agent/tasks/blocked").json()} == {b, c}

    rerun = agent.client.post(f"/agent/tasks/{a}/rerun")
    assert rerun.status_code == 200, rerun.text
    # The rerun itself unblocks both (one write), before anything runs.
    assert agent.store.get(c).status in (TaskStatus.pending, TaskStatus.in_progress, TaskStatus.completed)
    for task_id in (a, b, c):
        task = wait_for(lambda: (t := agent.store.get(task_id)).status in (TaskStatus.completed, TaskStatus.failed)
                        and t, timeout=60, what=f"{task_id} to finish")
        assert task.status is TaskStatus.completed, task.error_message
        assert task.blocked_reason is None
    subjects = landed_subjects(agent)
    assert subjects.index("task a") < subjects.index("task b") < subjects.index("task c")
    assert git(origin_of(agent.settings.project_dir), "show", "main:c-saw-b.txt") == "b\n"
