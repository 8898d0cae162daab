"""End to end with the real Claude Code CLI (pinned, from npm), talking to a local stand-in of
the Messages API: the CLI runs its own Bash tool to write a file; Baton commits and lands it."""

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
    """@anthropic-ai/claude-code, installed into the test cache once (see realcli.py)."""
    return npm_cli("@anthropic-ai/claude-code", CLAUDE_CODE_VERSION, "claude")


def test_real_claude_code_writes_a_file_and_baton_lands_it(agent_factory, claude_binary, tmp_path, monkeypatch):
    with StandInMessagesAPI("Bash", {"command": "printf 'hello from the real CLI\\n' > hello.txt",
                                     "description": "write hello.txt"}) as api:
        home = tmp_path / "home"
        home.mkdir()
        for key, value in {
            "HOME": str(home), "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-ant-test-not-real",
            "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("IS_SANDBOX", raising=False)  # Baton must set it itself when root
        config = AgentConfig(claude_code=ClaudeCodeConfig(command=str(claude_binary), timeout=180, stall_timeout=120),
                             test_command="", poll_interval_seconds=0.5)
        agent = agent_factory(config=config, dispatch=True)
        resp = agent.client.post("/agent/tasks", json={"title": "Say hello", "content": "Create hello.txt.",
                                                       "task_type": "docs"})
        task_id = resp.json()["id"]
        task = wait_for(lambda: (t := agent.store.get(task_id)).status not in (TaskStatus.pending,
                                                                                 TaskStatus.in_progress) and t,
                        timeout=180, what="the real CLI task to finish")
        stderr = Path(agent.settings.logs_dir / f"{task_id}.stderr.log")
        assert task.status is TaskStatus.completed, f"{task.error_message}\n{stderr.read_text() if stderr.exists() else ''}"

        origin = origin_of(agent.settings.project_dir)
        assert git(origin, "show", "main:hello.txt") == "hello from the real CLI\n"
        assert git(origin, "log", "-1", "--format=%s", "main").strip() == f"docs({task_id}): Say hello"
        assert task.commit_sha == git(origin, "rev-parse", "main").strip()
        assert task.session_id and task.cost_usd is not None and task.cost_usd > 0
        events = agent.client.get(f"/agent/tasks/{task_id}/events").json()["events"]
        kinds = [e["kind"] for e in events]
        assert "session_started" in kinds and "result" in kinds
        assert any(e["kind"] == "tool_use" and e["tool_name"] == "Bash" for e in events)
        assert any(e["kind"] == "tool_result" and e["ok"] for e in events)
        messages = [r for r in api.requests if r["path"].startswith("/v1/messages")]
        assert len(messages) >= 2
        assert "Say hello" in json.dumps(messages[0]["body"]["messages"])
