"""OpenCode through a real agent: tasks run by tests/fakes/fake_opencode.py (which speaks
`opencode run --format json` and fails loudly on the real CLI's traps: $PWD, OPENCODE_CONFIG)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.config import AgentConfig
from backend.dispatcher.process import find_processes
from backend.models import TaskStatus
from backend.runtimes.opencode import OpenCodeConfig
from conftest import fake_task
from support import commit_and_push, git, origin_of, pid_alive, wait_for

FAKE = Path(__file__).parent / "fakes" / "fake_opencode.py"
DONE = {TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled}
PROVIDER = {"fake": {"npm": "@ai-sdk/openai-compatible", "name": "Fake",
                     "options": {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "{env:PROVIDER_KEY}"},
                     "models": {"m1": {"tool_call": True}}}}


@dataclass
class FakeOpenCode:
    command: str
    log: Path

    def calls(self) -> list[dict]:
        return [json.loads(x) for x in self.log.read_text().splitlines()] if self.log.exists() else []

    def config(self, section: dict | None = None, **overrides) -> AgentConfig:
        values = {"command": self.command, "model": "fake/m1", "isolated_state": True, "timeout": 60,
                  "stall_timeout": 30, "config": {"provider": PROVIDER}, **(section or {})}
        base = {"test_command": "", "poll_interval_seconds": 0.5, "max_parallel_workers": 2, **overrides}
        return AgentConfig(runtime="opencode", opencode=OpenCodeConfig(**values), **base)


@pytest.fixture
def opencode(tmp_path, monkeypatch) -> FakeOpenCode:
    # A Python script, not a shell wrapper: a shell would reset an inherited $PWD to its working
    # folder and hide the very mistake the fake checks for (the real `opencode` is a binary).
    wrapper = tmp_path / "bin" / "opencode"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {str(FAKE)!r}\n"
                       f"runpy.run_path({str(FAKE)!r}, run_name='__main__')\n")
    wrapper.chmod(0o755)
    log = tmp_path / "opencode-calls.jsonl"
    monkeypatch.setenv("FAKE_CLI_LOG", str(log))
    monkeypatch.setenv("FAKE_CLI_STATE", str(tmp_path / "opencode-state"))  # only without isolated_state
    monkeypatch.setenv("PWD", str(tmp_path))  # Baton's own $PWD: never the worktree
    return FakeOpenCode(command=str(wrapper), log=log)


def submit(agent, body: dict) -> str:
    resp = agent.client.post("/agent/tasks", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def wait_done(agent, task_id: str, timeout: float = 60):
    return wait_for(lambda: (t := agent.store.get(task_id)).status in DONE and t, timeout=timeout,
                    what=f"task {task_id} to finish")


def events(agent, task_id: str) -> list[dict]:
    return agent.client.get(f"/agent/tasks/{task_id}/events", params={"limit": 5000}).json()["events"]


def test_success_lands_a_commit_with_usage_summed_over_the_steps(agent_factory, opencode):
    agent = agent_factory(config=opencode.config(), dispatch=True)
    task_id = submit(agent, fake_task("Add hello", {"steps": [
        {"write": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}]}))
    task = wait_done(agent, task_id)
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
    kinds = [e["kind"] for e in events(agent, task_id)]
    assert kinds.index("session_started") < kinds.index("tool_use") < kinds.index("tool_result") < kinds.index("result")
    assert kinds.count("result") == 1
    (call,) = opencode.calls()
    worktree = agent.settings.project_dir / "worktrees" / task_id
    assert call["argv"][:7] == ["run", "--format", "json", "--dir", str(worktree), "-m", "fake/m1"]
    assert call["cwd"] == str(worktree) and call["env"]["PWD"] == str(worktree)


def test_generated_config_stays_outside_the_worktree_and_out_of_the_commit(agent_factory, opencode):
    agent = agent_factory(config=opencode.config(), dispatch=True)
    task_id = submit(agent, fake_task("Everything", {"steps": [
        {"write": "work.txt", "text": "work\n"},
        {"run": ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"]},
        {"git": ["add", "-A", "-f"]}, {"commit": "all I see, ignored files too"}]}))
    task = wait_done(agent, task_id)
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
    status = [e for e in events(agent, task_id) if e["kind"] == "tool_result"][1]
    seen = status["text"].split()
    # git status, ignored files included, saw the agent's file and Baton's own (read-only) store view only.
    assert status["ok"] is True
    assert set(zip(seen[::2], seen[1::2])) == {("??", "work.txt"), ("!!", "data/dev-tasks.json")}


def test_a_provider_error_fails_the_task_with_its_message(agent_factory, opencode):
    agent = agent_factory(config=opencode.config(), dispatch=True)
    task = wait_done(agent, submit(agent, fake_task("Bad key", {
        "steps": [{"write": "half.txt", "text": "half\n"}], "result": "error", "error": "Invalid API key",
        "status": 401})))
    assert task.status is TaskStatus.failed and task.error_reason == "agent_error"
    assert "APIError" in task.error_message and "Invalid API key (HTTP 401)" in task.error_message
    assert task.cost_usd == pytest.approx(0.001)  # the step before the error is still counted


def test_silent_provider_retries_end_stalled_with_the_hint_and_nothing_left(agent_factory, opencode, tmp_path):
    agent = agent_factory(config=opencode.config({"stall_timeout": 1}), dispatch=True)
    marker = tmp_path / "pid"
    task = wait_done(agent, submit(agent, fake_task("Provider down", {
        "steps": [{"marker": str(marker)}], "silent_retry": True})))
    assert task.status is TaskStatus.failed and task.error_reason == "stalled"
    assert "printed nothing for 1s" in task.error_message
    assert "retries a failing model provider silently" in task.error_message
    # The fake ignored SIGTERM: only the SIGKILL that follows ended it.
    assert not pid_alive(int(marker.read_text()))
    marker_env = {"TASK_ID": task.id, "BATON_PROJECT": str(agent.settings.project_dir.resolve())}
    assert find_processes(None, marker_env) == {}


def test_a_feedback_turn_continues_the_same_session_and_lands(agent_factory, opencode, repo):
    commit_and_push(repo, {
        "check.py": "import os, sys\nstatus = open('status.txt').read().strip() if os.path.exists('status.txt') else ''\n"
                    "print('status is', repr(status))\nsys.exit(0 if status == 'fixed' else 1)\n",
        "status.txt": "fixed\n"}, "add check")
    agent = agent_factory(config=opencode.config(test_command=f"{sys.executable} check.py"), project=repo,
                          dispatch=True)
    task_id = submit(agent, fake_task("Break then fix", {
        "steps": [{"write": "status.txt", "text": "broken\n"}, {"commit": "break it"}],
        "on_resume": [{"steps": [{"write": "status.txt", "text": "fixed\n"}, {"commit": "fix it"}]}]}))
    task = wait_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    first, second = opencode.calls()
    assert "-s" not in first["argv"] and second["argv"][-2:] == ["-s", task.session_id]
    # The session is found because both turns share the task's own state folder.
    assert first["env"]["XDG_DATA_HOME"] == second["env"]["XDG_DATA_HOME"]
    assert "status is 'broken'" in second["prompt"]
    assert git(origin_of(repo), "show", "main:status.txt") == "fixed\n"
    assert task.cost_usd == pytest.approx(0.006) and task.input_tokens == 6000  # both turns, 3 steps each


def test_a_very_long_prompt_reaches_the_cli_intact(agent_factory, opencode):
    agent = agent_factory(config=opencode.config(), dispatch=True)
    filler = "".join(f"line {i}: {'x' * 90} \"quoted\" and spaced\n" for i in range(2000))  # ~240 KB
    assert len(filler.encode()) > 200 * 1024
    body = fake_task("Long", {"steps": [{"write": "a.txt", "text": "a\n"}]})
    body["content"] += "\n" + filler
    task = wait_done(agent, submit(agent, body))
    assert task.status is TaskStatus.completed, task.error_message
    (call,) = opencode.calls()
    assert body["content"] in call["prompt"] and not call["prompt"].startswith('"')
    assert all(len(arg) < 4096 for arg in call["argv"])  # not an argument: stdin


def test_secrets_never_reach_the_cli_its_config_or_the_logs(agent_factory, opencode, monkeypatch):
    monkeypatch.setenv("SECRET_FOR_TEST", "s3cr3t-never-shown")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-never-shown")
    monkeypatch.setenv("MY_PROVIDER_KEY", "provider-key-given-on-purpose")
    config = opencode.config({"env": {"PROVIDER_KEY": "$MY_PROVIDER_KEY", "LEAK": "$SECRET_FOR_TEST"}},
                             secret_env_vars=["BATON_TOKEN", "GITHUB_TOKEN", "SECRET_FOR_TEST"])
    agent = agent_factory(config=config, dispatch=True)
    task = wait_done(agent, submit(agent, fake_task("Env", {"steps": [
        {"run": ["sh", "-c", "env | grep -c never-sh[o]wn || true"]}, {"write": "a.txt", "text": "a\n"}]})))
    assert task.status is TaskStatus.completed, task.error_message
    (call,) = opencode.calls()
    assert call["env"]["SECRET_FOR_TEST"] is None and call["env"]["GITHUB_TOKEN"] is None
    assert call["env"]["PROVIDER_KEY"] == "provider-key-given-on-purpose"  # opencode.env, as configured
    assert call["env"]["TASK_ID"] == task.id
    assert "never-shown" not in " ".join(call["argv"]) and "never-shown" not in call["config"]
    counted = [e for e in events(agent, task.id) if e["kind"] == "tool_result"][0]
    assert counted["text"] == "0"  # the agent's own commands do not see them either
    project = agent.settings.project_dir
    for path in [*(project / "logs").rglob("*"), *(project / "data").rglob("*")]:
        if path.is_file():
            assert b"never-shown" not in path.read_bytes(), path
