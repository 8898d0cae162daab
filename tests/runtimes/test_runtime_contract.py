"""What every runtime must do the same way: the same tasks, through a real agent, with each
runtime's fake CLI (tests/runtimes/runtime_fakes.py). Landing, failures, limits, cancel,
feedback turns in the same session, recovery, secrets and generated files."""

from __future__ import annotations

from pathlib import Path

from backend.dispatcher.process import find_processes
from backend.models import TaskStatus
from conftest import fake_task
from runtimes.runtime_fakes import FAKES, make_fake, runtime_fake  # noqa: F401 - a fixture
from support import (BREAK_THEN_FIX, add_status_check, git, origin_of, pid_alive, submit_task, task_events, wait_for,
                     wait_task_done)


def no_task_processes(agent, task_id: str) -> bool:
    marker = {"TASK_ID": task_id, "BATON_PROJECT": str(agent.settings.project_dir.resolve())}
    return not find_processes(None, marker)


def test_a_task_lands_and_its_session_and_usage_are_recorded(agent_factory, runtime_fake):
    agent = agent_factory(config=runtime_fake.config(), dispatch=True)
    task_id = submit_task(agent, fake_task("Add hello", {"steps": [
        {"write": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    origin = origin_of(agent.settings.project_dir)
    assert git(origin, "show", "main:hello.txt") == "hi\n"
    assert task.commit_sha == git(origin, "rev-parse", "main").strip()
    # Only the agent's file: nothing a runtime generates (configs, state) reaches the commit.
    assert git(origin, "show", "--name-only", "--format=", "main").split() == ["hello.txt"]
    assert task.agent_runtime == runtime_fake.runtime and task.session_id and task.agent_model
    assert task.input_tokens and task.output_tokens and task.cost_usd is not None and task.cost_usd > 0
    kinds = [e["kind"] for e in task_events(agent, task_id)]
    assert "session_started" in kinds and "tool_use" in kinds and "tool_result" in kinds and "result" in kinds
    assert git(agent.settings.project_dir, "status", "--porcelain").strip() == ""
    # The runtime's own files for the task (configs, isolated state) go with the landed task.
    runtime_dir = agent.settings.project_dir / "logs" / f"{task_id}.runtime"
    wait_for(lambda: not runtime_dir.exists(), what="the task's runtime folder to be removed")


def test_an_error_fails_the_task_with_the_agents_message_and_keeps_the_work(agent_factory, runtime_fake):
    agent = agent_factory(config=runtime_fake.config(), dispatch=True)
    task_id = submit_task(agent, fake_task("Breaks", {"steps": [{"write": "half.txt", "text": "half\n"}],
                                                 "result": "error_during_execution", "error": "model exploded"}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.failed and task.error_reason == "agent_error"
    assert "model exploded" in task.error_message
    assert git(agent.settings.project_dir, "show", f"task/{task_id}:half.txt") == "half\n"


def test_an_exit_without_a_result_is_an_agent_error(agent_factory, runtime_fake):
    agent = agent_factory(config=runtime_fake.config(), dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Crashes", {"steps": [], "no_result": True, "exit": 3})))
    assert task.status is TaskStatus.failed and task.error_reason == "agent_error"


def test_malformed_and_very_large_output_is_kept_and_does_not_crash(agent_factory, runtime_fake):
    agent = agent_factory(config=runtime_fake.config(), dispatch=True)
    size = 4 * 1024 * 1024
    task_id = submit_task(agent, fake_task("Noisy", {"garbage": True, "steps": [
        {"big_output": size}, {"write": "done.txt", "text": "ok\n"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    evs = task_events(agent, task_id)
    assert any(e["kind"] == "unparsed" for e in evs)
    assert all(len(e.get("text") or "") < 10_000 for e in evs)  # the transcript keeps a clip, the raw log all
    assert Path(task.log_path).stat().st_size > size


def test_a_silent_agent_is_stopped_by_the_stall_limit(agent_factory, runtime_fake):
    agent = agent_factory(config=runtime_fake.config(limits={"stall_timeout": 1}), dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Silent", {"steps": [{"sleep": 60}]})))
    assert task.status is TaskStatus.failed and task.error_reason == "stalled"
    assert "printed nothing for 1s" in task.error_message
    assert no_task_processes(agent, task.id)


def test_the_wall_limit_ends_every_process_even_an_escaped_one(agent_factory, runtime_fake, tmp_path):
    agent = agent_factory(config=runtime_fake.config(limits={"timeout": 3}), dispatch=True)
    pidfile = tmp_path / "escaped.pid"
    task = wait_task_done(agent, submit_task(agent, fake_task("Busy", {"steps": [
        {"escape": str(pidfile)}, {"tick": 1000, "every": 0.1}]})))
    assert task.status is TaskStatus.failed and task.error_reason == "timeout"
    wait_for(lambda: not pid_alive(int(pidfile.read_text())), timeout=10, what="the escaped child to be gone")


def test_cancel_stops_the_agent_and_keeps_its_branch(agent_factory, runtime_fake, tmp_path):
    agent = agent_factory(config=runtime_fake.config(), dispatch=True)
    marker, pidfile = tmp_path / "running", tmp_path / "escaped.pid"
    task_id = submit_task(agent, fake_task("Long", {"steps": [
        {"write": "partial.txt", "text": "started\n"}, {"escape": str(pidfile)}, {"marker": str(marker)},
        {"sleep": 120}]}))
    wait_for(marker.exists, timeout=30, what="the agent to start")
    resp = agent.client.post(f"/agent/tasks/{task_id}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.text
    assert not pid_alive(int(marker.read_text())) and not pid_alive(int(pidfile.read_text()))
    assert no_task_processes(agent, task_id)
    assert git(agent.settings.project_dir, "show", f"task/{task_id}:partial.txt") == "started\n"


def test_failing_tests_get_a_feedback_turn_in_the_same_session(agent_factory, runtime_fake, repo):
    agent = agent_factory(config=runtime_fake.config(test_command=add_status_check(repo)), project=repo, dispatch=True)
    task_id = submit_task(agent, fake_task("Break then fix", BREAK_THEN_FIX))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    assert git(origin_of(repo), "show", "main:status.txt") == "fixed\n"
    sessions = [e["session_id"] for e in task_events(agent, task_id) if e["kind"] == "session_started"]
    assert len(sessions) == 2 and sessions[0] == sessions[1] == task.session_id
    results = [e for e in task_events(agent, task_id) if e["kind"] == "result"]
    assert len(results) == 2
    # Both turns are accounted for.
    assert task.input_tokens == sum(r["input_tokens"] for r in results)


def test_a_forced_stop_returns_the_task_and_its_rerun_continues_the_branch(agent_factory, runtime_fake, tmp_path):
    agent = agent_factory(config=runtime_fake.config(), dispatch=True)
    marker = tmp_path / "running"
    task_id = submit_task(agent, fake_task("Interrupted", {"steps": [
        {"write": "first.txt", "text": "1\n"}, {"commit": "first part"},
        {"block_once": str(marker), "seconds": 120}, {"write": "second.txt", "text": "2\n"}]}))
    wait_for(marker.exists, timeout=30, what="the agent to start")
    agent.client.post("/agent/dispatcher/stop", params={"force": "true"})
    wait_for(lambda: agent.store.get(task_id).status is TaskStatus.pending, what="the task back to pending")
    assert no_task_processes(agent, task_id)
    agent.client.post("/agent/dispatcher/start")
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    origin = origin_of(agent.settings.project_dir)
    assert git(origin, "show", "main:first.txt") == "1\n" and git(origin, "show", "main:second.txt") == "2\n"


def test_secrets_never_reach_the_cli(agent_factory, runtime_fake, monkeypatch):
    monkeypatch.setenv("SECRET_FOR_TEST", "s3cr3t-value-never-shown")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-never-shown")
    monkeypatch.setenv("BATON_TOKEN", "baton-never-shown")  # hidden even when not listed
    # A "$NAME" in the section's env reads Baton's environment with the secrets already removed.
    config = runtime_fake.config(section={"env": {"PASSED_ON": "$SECRET_FOR_TEST"}},
                                 secret_env_vars=["GITHUB_TOKEN", "SECRET_FOR_TEST"])
    agent = agent_factory(config=config, dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Env", {"steps": [
        {"run": ["sh", "-c", "env | grep -c never-sh[o]wn || true"]}, {"write": "a.txt", "text": "a\n"}]})))
    assert task.status is TaskStatus.completed, task.error_message
    (call,) = runtime_fake.calls()
    assert call["env"]["SECRET_FOR_TEST"] is None and call["env"]["GITHUB_TOKEN"] is None
    assert call["env"]["BATON_TOKEN"] is None and call["env"]["TASK_ID"] == task.id
    counted = [e for e in task_events(agent, task.id) if e["kind"] == "tool_result"][0]
    assert counted["text"].strip() == "0"  # neither the CLI nor the agent's own commands see them
    logs = agent.settings.project_dir / "logs"
    # A landed task's runtime folder is removed just after it is recorded completed: walk the
    # logs once that cleanup is over, not while it deletes under the walk.
    wait_for(lambda: not (logs / f"{task.id}.runtime").exists(), what="the landed task's cleanup")
    for path in [runtime_fake.log, *logs.rglob("*"), *(agent.settings.project_dir / "data").rglob("*")]:
        if path.is_file():
            assert b"never-shown" not in path.read_bytes(), path
    assert "never-shown" not in " ".join(call["argv"])


def test_one_project_runs_a_mix_of_runtimes_task_by_task(agent_factory, tmp_path, monkeypatch):
    """Every registered runtime configured in one project; each task picks its own."""
    fakes = {name: make_fake(name, tmp_path, monkeypatch) for name in sorted(FAKES)}
    assert len(fakes) == 3, "every runtime has a fake"
    first = next(iter(fakes.values()))
    sections = {name: {"command": fake.command, "timeout": 60, "stall_timeout": 30, **fake.kind.section}
                for name, fake in fakes.items()}
    config = first.config(**{k: v for k, v in sections.items() if k != first.runtime})
    agent = agent_factory(config=config, dispatch=True)
    ids = {name: submit_task(agent, fake_task(f"On {name}", {"steps": [
        {"write": f"{name}.txt", "text": f"{name}\n"}]}, runtime=name)) for name in fakes}
    origin = origin_of(agent.settings.project_dir)
    for name, task_id in ids.items():
        task = wait_task_done(agent, task_id)
        assert task.status is TaskStatus.completed, task.error_message
        assert task.runtime == name and task.agent_runtime == name
        assert git(origin, "show", f"main:{name}.txt") == f"{name}\n"


def test_a_secret_written_into_the_command_line_is_refused_before_the_cli_starts(agent_factory, runtime_fake,
                                                                                  monkeypatch):
    monkeypatch.setenv("SECRET_FOR_TEST", "s3cr3t-in-argv")
    config = runtime_fake.config(section={"extra_args": ["--note=s3cr3t-in-argv"]},
                                 secret_env_vars=["BATON_TOKEN", "SECRET_FOR_TEST"])
    agent = agent_factory(config=config, dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Leaky", {"steps": []})))
    assert task.status is TaskStatus.failed and task.error_reason == "runtime_unavailable"
    assert "SECRET_FOR_TEST" in task.error_message and "s3cr3t-in-argv" not in task.error_message
    assert runtime_fake.calls() == []  # never started


def test_a_turn_killed_by_a_limit_still_counts_the_model_calls_it_made(agent_factory, runtime_fake):
    # 3 s: the fake's start and its first model call must come before the limit, even on a busy machine.
    agent = agent_factory(config=runtime_fake.config(limits={"stall_timeout": 3}), dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Works, then goes quiet", {"steps": [
        {"write": "a.txt", "text": "a\n"}, {"sleep": 60}]})))
    assert task.status is TaskStatus.failed and task.error_reason == "stalled"
    assert task.input_tokens and task.output_tokens  # what the model calls before the stall used
    assert not [e for e in task_events(agent, task.id) if e["kind"] == "result"]  # no result was invented
