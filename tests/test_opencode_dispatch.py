"""OpenCode through a real agent: tasks run by tests/fakes/fake_opencode.py (which speaks
`opencode run --format json` and fails loudly on the real CLI's traps: $PWD, OPENCODE_CONFIG)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.config import AgentConfig
from backend.dispatcher.process import find_processes
from backend.models import TaskStatus
from conftest import fake_task
from runtimes.runtime_fakes import RuntimeFake, make_fake
from support import (BREAK_THEN_FIX, add_status_check, git, origin_of, pid_alive, submit_task, task_events,
                     wait_task_done)

PROVIDER = {"fake": {"npm": "@ai-sdk/openai-compatible", "name": "Fake",
                     "options": {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "{env:PROVIDER_KEY}"},
                     "models": {"m1": {"tool_call": True}}}}


@pytest.fixture
def opencode(tmp_path, monkeypatch) -> RuntimeFake:
    monkeypatch.setenv("PWD", str(tmp_path))  # Baton's own $PWD: never the worktree
    return make_fake("opencode", tmp_path, monkeypatch)


def opencode_config(opencode: RuntimeFake, section: dict | None = None, **overrides) -> AgentConfig:
    """The fake's config (model fake/m1, isolated_state) with PROVIDER in opencode.config."""
    return opencode.config(section={"config": {"provider": PROVIDER}, **(section or {})}, **overrides)


def test_success_lands_a_commit_with_usage_summed_over_the_steps(agent_factory, opencode):
    agent = agent_factory(config=opencode_config(opencode), dispatch=True)
    task_id = submit_task(agent, fake_task("Add hello", {"steps": [
        {"write": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    origin = origin_of(agent.settings.project_dir)
    assert git(origin, "show", "main:hello.txt") == "hi\n"
    assert task.commit_sha == git(origin, "rev-parse", "main").strip()
    assert task.agent_runtime == "opencode" and task.agent_model == "fake/m1" and task.session_id.startswith("ses_")
    # Three model calls (write, commit, the final answer), each 1000 in / 20+5 out / 100 read / 10 written, $0.001.
    assert task.cost_usd == pytest.approx(0.003) and task.cost_estimated is False
    assert (task.input_tokens, task.output_tokens) == (3000, 75)
    assert (task.cache_read_tokens, task.cache_creation_tokens) == (300, 30)
    assert task.result_text == "Done."
    kinds = [e["kind"] for e in task_events(agent, task_id)]
    assert kinds.index("session_started") < kinds.index("tool_use") < kinds.index("tool_result") < kinds.index("result")
    assert kinds.count("result") == 1
    (call,) = opencode.calls()
    worktree = agent.settings.project_dir / "worktrees" / task_id
    assert call["argv"][:7] == ["run", "--format", "json", "--dir", str(worktree), "-m", "fake/m1"]
    assert call["cwd"] == str(worktree) and call["env"]["PWD"] == str(worktree)


def test_generated_config_stays_outside_the_worktree_and_out_of_the_commit(agent_factory, opencode):
    agent = agent_factory(config=opencode_config(opencode), dispatch=True)
    task_id = submit_task(agent, fake_task("Everything", {"steps": [
        {"write": "work.txt", "text": "work\n"},
        {"run": ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"]},
        {"git": ["add", "-A", "-f"]}, {"commit": "all I see, ignored files too"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    origin = origin_of(agent.settings.project_dir)
    assert git(origin, "show", "--name-only", "--format=", "main").split() == ["work.txt"]
    (call,) = opencode.calls()
    worktree = agent.settings.project_dir / "worktrees" / task_id
    config_path = Path(call["env"]["OPENCODE_CONFIG"])
    assert config_path.name == "opencode.json" and worktree not in config_path.parents
    assert Path(call["env"]["XDG_DATA_HOME"]).parent == config_path.parent  # isolated_state: per task, beside it
    config = json.loads(call["config"])
    assert config["autoupdate"] is False and config["share"] == "disabled" and config["permission"] == {"*": "allow"}
    assert config["provider"] == PROVIDER
    status = [e for e in task_events(agent, task_id) if e["kind"] == "tool_result"][1]
    seen = status["text"].split()
    # git status, ignored files included, saw the agent's file and Baton's own (read-only) store view only.
    assert status["ok"] is True
    assert set(zip(seen[::2], seen[1::2])) == {("??", "work.txt"), ("!!", "data/dev-tasks.json")}


def test_a_provider_error_fails_the_task_with_its_message(agent_factory, opencode):
    agent = agent_factory(config=opencode_config(opencode), dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Bad key", {
        "steps": [{"write": "half.txt", "text": "half\n"}], "result": "error", "error": "Invalid API key",
        "status": 401})))
    assert task.status is TaskStatus.failed and task.error_reason == "agent_error"
    assert "APIError" in task.error_message and "Invalid API key (HTTP 401)" in task.error_message
    assert task.cost_usd == pytest.approx(0.001)  # the step before the error is still counted


def test_silent_provider_retries_end_stalled_with_the_hint_and_nothing_left(agent_factory, opencode, tmp_path):
    agent = agent_factory(config=opencode_config(opencode, {"stall_timeout": 1}), dispatch=True)
    marker = tmp_path / "pid"
    task = wait_task_done(agent, submit_task(agent, fake_task("Provider down", {
        "steps": [{"marker": str(marker)}], "silent_retry": True})))
    assert task.status is TaskStatus.failed and task.error_reason == "stalled"
    assert "printed nothing for 1s" in task.error_message
    assert "retries a failing model provider silently" in task.error_message
    # The fake ignored SIGTERM: only the SIGKILL that follows ended it.
    assert not pid_alive(int(marker.read_text()))
    marker_env = {"TASK_ID": task.id, "BATON_PROJECT": str(agent.settings.project_dir.resolve())}
    assert find_processes(None, marker_env) == {}


def test_a_feedback_turn_continues_the_same_session_and_lands(agent_factory, opencode, repo):
    agent = agent_factory(config=opencode_config(opencode, test_command=add_status_check(repo)), project=repo,
                          dispatch=True)
    task_id = submit_task(agent, fake_task("Break then fix", BREAK_THEN_FIX))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    first, second = opencode.calls()
    assert "-s" not in first["argv"] and second["argv"][-2:] == ["-s", task.session_id]
    # The session is found because both turns share the task's own state folder.
    assert first["env"]["XDG_DATA_HOME"] == second["env"]["XDG_DATA_HOME"]
    assert "status is 'broken'" in second["prompt"]
    assert git(origin_of(repo), "show", "main:status.txt") == "fixed\n"
    assert task.cost_usd == pytest.approx(0.006) and task.input_tokens == 6000  # both turns, 3 steps each


def test_a_very_long_prompt_reaches_the_cli_intact(agent_factory, opencode):
    agent = agent_factory(config=opencode_config(opencode), dispatch=True)
    filler = "".join(f"line {i}: {'x' * 90} \"quoted\" and spaced\n" for i in range(2000))  # ~240 KB
    assert len(filler.encode()) > 200 * 1024
    body = fake_task("Long", {"steps": [{"write": "a.txt", "text": "a\n"}]})
    body["content"] += "\n" + filler
    task = wait_task_done(agent, submit_task(agent, body))
    assert task.status is TaskStatus.completed, task.error_message
    (call,) = opencode.calls()
    assert body["content"] in call["prompt"] and not call["prompt"].startswith('"')
    assert all(len(arg) < 4096 for arg in call["argv"])  # not an argument: stdin


def test_the_provider_key_reaches_opencode_by_its_env_and_no_secret_reaches_its_config(agent_factory, opencode,
                                                                                        monkeypatch):
    """What the contract's secrets test (tests/runtimes) does not cover: opencode.env and opencode.json."""
    monkeypatch.setenv("SECRET_FOR_TEST", "s3cr3t-never-shown")
    monkeypatch.setenv("MY_PROVIDER_KEY", "provider-key-given-on-purpose")
    section = {"env": {"PROVIDER_KEY": "$MY_PROVIDER_KEY", "LEAK": "$SECRET_FOR_TEST"}}
    agent = agent_factory(config=opencode_config(opencode, section, secret_env_vars=["BATON_TOKEN", "SECRET_FOR_TEST"]),
                          dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Env", {"steps": [{"write": "a.txt", "text": "a\n"}]})))
    assert task.status is TaskStatus.completed, task.error_message
    (call,) = opencode.calls()
    assert call["env"]["PROVIDER_KEY"] == "provider-key-given-on-purpose"  # opencode.env, as configured
    assert "never-shown" not in call["config"] and "provider-key-given-on-purpose" not in call["config"]
