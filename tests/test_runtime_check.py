"""Without the coding-agent CLI nothing is claimed: tasks stay pending, the dispatcher and health
say `runtime_unavailable` with an install hint, and installing the CLI later unblocks it."""

from __future__ import annotations

import shutil
from pathlib import Path

from backend.config import ClaudeCodeConfig
from backend.models import NewTask, TaskStatus
from backend.runtimes.claude_code import ClaudeCodeRuntime
from conftest import fake_task
from runtimes.runtime_fakes import make_fake
from support import wait_for


def test_missing_cli_keeps_tasks_pending_until_it_is_installed(agent_factory, fake_cli, tmp_path):
    command = tmp_path / "later" / "claude"
    agent = agent_factory(config=fake_cli.config(claude_code={"command": str(command)}), dispatch=True)
    dispatcher = agent.app.state.dispatcher
    task_id = agent.client.post("/agent/tasks", json=fake_task("Waits for the CLI", {"steps": [
        {"write": "cli.txt", "text": "ran\n"}]})).json()["id"]

    assert dispatcher.tick() == 0  # a whole round: nothing claimed
    assert agent.store.get(task_id).status is TaskStatus.pending
    assert fake_cli.calls() == []  # nothing was started (no invented exit status 127)
    status = agent.client.get("/agent/dispatcher").json()
    [problem] = status["problems"]
    assert problem["code"] == "runtime_unavailable"
    assert str(command) in problem["message"] and "npm install -g @anthropic-ai/claude-code" in problem["message"]
    health = agent.client.get("/agent/health").json()
    assert health["status"] == "degraded" and "runtime_unavailable" in [p["code"] for p in health["problems"]]

    command.parent.mkdir()
    shutil.copy2(fake_cli.command, command)  # "installing" the CLI
    dispatcher.wake()
    task = wait_for(lambda: (t := agent.store.get(task_id)).status is TaskStatus.completed and t, timeout=60,
                    what="the task to run once the CLI exists")
    assert task.commit_sha
    assert agent.client.get("/agent/dispatcher").json()["problems"] == []


def test_check_resolves_names_on_path_and_paths_to_executables(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ClaudeCodeRuntime(ClaudeCodeConfig(command="claude")).check()["code"] == "runtime_unavailable"
    plain = tmp_path / "claude"
    plain.write_text("#!/bin/sh\n")
    assert ClaudeCodeRuntime(ClaudeCodeConfig(command=str(plain))).check() is not None  # not executable
    plain.chmod(0o755)
    assert ClaudeCodeRuntime(ClaudeCodeConfig(command="claude")).check() is None
    assert ClaudeCodeRuntime(ClaudeCodeConfig(command=str(plain))).check() is None
    assert ClaudeCodeRuntime(ClaudeCodeConfig(command=str(Path(tmp_path) / "gone"))).check() is not None


def test_each_configured_runtime_is_checked_and_only_its_own_tasks_wait(agent_factory, tmp_path, monkeypatch):
    claude, codex = make_fake("claude_code", tmp_path, monkeypatch), make_fake("codex", tmp_path, monkeypatch)
    missing = tmp_path / "later" / "codex"
    config = claude.config(codex={"command": str(missing)})
    agent = agent_factory(config=config, dispatch=True)
    waits = agent.client.post("/agent/tasks", json=fake_task("On codex", {"steps": [
        {"write": "codex.txt", "text": "c\n"}]}, runtime="codex")).json()["id"]
    runs = agent.client.post("/agent/tasks", json=fake_task("On the default", {"steps": [
        {"write": "claude.txt", "text": "d\n"}]})).json()["id"]
    # Written behind the API's back (e.g. agent.yaml changed since): fails at once, saying why.
    stray = agent.store.create(NewTask(title="On a runtime nobody configured", runtime="opencode")).id

    assert wait_for(lambda: agent.store.get(runs).status is TaskStatus.completed, timeout=60,
                    what="the default runtime's task to land")
    failed = wait_for(lambda: (t := agent.store.get(stray)).status is TaskStatus.failed and t,
                      what="the task of an unconfigured runtime to fail")
    assert failed.error_reason == "runtime_unavailable" and "claude_code, codex" in failed.error_message
    assert agent.store.get(waits).status is TaskStatus.pending
    [problem] = agent.client.get("/agent/dispatcher").json()["problems"]
    assert problem["code"] == "runtime_unavailable" and "codex.command" in problem["message"]

    missing.parent.mkdir()
    shutil.copy2(codex.command, missing)  # "installing" Codex
    agent.app.state.dispatcher.wake()
    assert wait_for(lambda: agent.store.get(waits).status is TaskStatus.completed, timeout=60,
                    what="the codex task to run once its CLI exists")
    assert agent.client.get("/agent/dispatcher").json()["problems"] == []
