"""The review loop with the real Claude Code CLI (pinned, from npm) against the local stand-in of
the Messages API: the work waits for review; a comment sent back reaches the same session (the
model sees the first turn and the comment in one conversation); approving lands it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.config import AgentConfig, ClaudeCodeConfig
from backend.models import TaskStatus
from fakes.anthropic_standin import StandInMessagesAPI
from realcli import npm_cli
from support import git, origin_of, wait_for

CLAUDE_CODE_VERSION = "2.1.329"


@pytest.fixture(scope="module")
def claude_binary() -> Path:
    return npm_cli("@anthropic-ai/claude-code", CLAUDE_CODE_VERSION, "claude")


def test_real_claude_code_review_comment_reaches_the_same_session(agent_factory, claude_binary, tmp_path, monkeypatch):
    with StandInMessagesAPI("Bash", {"command": "printf 'hello\\n' > hello.txt", "description": "write hello.txt"}) as api:
        home = tmp_path / "home"
        home.mkdir()
        for key, value in {
            "HOME": str(home), "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-ant-test-not-real",
            "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }.items():
            monkeypatch.setenv(key, value)
        config = AgentConfig(claude_code=ClaudeCodeConfig(command=str(claude_binary), timeout=180, stall_timeout=120),
                             test_command="test -f hello.txt", poll_interval_seconds=0.5, landing="review")
        agent = agent_factory(config=config, dispatch=True)
        origin = origin_of(agent.settings.project_dir)
        before = git(origin, "rev-parse", "main").strip()
        task_id = agent.client.post("/agent/tasks", json={"title": "Say hello", "content": "Create hello.txt."}).json()["id"]

        def settled(runs: int):
            task = agent.store.get(task_id)
            return task.runs == runs and task.status in (TaskStatus.review, TaskStatus.failed) and task

        task = wait_for(lambda: settled(1), timeout=180, what="the first review")
        stderr = agent.settings.logs_dir / f"{task_id}.stderr.log"
        assert task.status is TaskStatus.review, f"{task.error_message}\n{stderr.read_text() if stderr.exists() else ''}"
        assert git(origin, "rev-parse", "main").strip() == before
        first_session = task.session_id

        sent = agent.client.post(f"/agent/tasks/{task_id}/request-changes", json={
            "text": "Looks fine; one more thing.", "comments": [{"path": "hello.txt", "line": 1,
                                                                 "text": "say hello to the world"}]})
        assert sent.status_code == 200, sent.text
        task = wait_for(lambda: settled(2), timeout=180, what="the second review")
        assert task.status is TaskStatus.review, task.error_message
        assert task.session_id == first_session
        # The model got the comment in the conversation that did the work: one request carries both.
        bodies = [json.dumps(r["body"]["messages"]) for r in api.requests
                  if r["path"].startswith("/v1/messages") and r["body"].get("tools")]
        assert any("Create hello.txt." in b and "say hello to the world" in b and "tool_result" in b for b in bodies)

        assert agent.client.post(f"/agent/tasks/{task_id}/approve", json={"sha": task.review_sha}).status_code == 200
        task = wait_for(lambda: (t := agent.store.get(task_id)).status in (TaskStatus.completed, TaskStatus.failed)
                        and t, timeout=120, what="the landing")
        assert task.status is TaskStatus.completed, task.error_message
        assert git(origin, "show", "main:hello.txt") == "hello\n"
