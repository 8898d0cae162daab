"""A runtime that runs without its permission prompts (Claude Code skip_permissions, Codex full
access, OpenCode without `permission`) needs a one-time acknowledgement in
data/guardrails-acknowledged.json: until then its tasks wait, pending, and the dispatcher, the
health check and the board say why. `baton-agent --i-understand-...` writes it, once."""

from __future__ import annotations

import json

import httpx
import pytest

from backend.config import AgentConfig, ClaudeCodeConfig, CodexConfig
from backend.guardrails import (CODE, FLAG, WHY_CLAUDE_MODE, WHY_OPENCODE_ALLOW, Guardrails, ack_path, acknowledge,
                                unguarded, unguarded_reason)
from backend.models import TaskStatus
from conftest import fake_task
from runtimes.runtime_fakes import make_fake
from support import free_port, git, make_repo, origin_of, run_agent, wait_for

WRITE = {"steps": [{"write": "guarded.txt", "text": "ran\n"}, {"commit": "feature: guarded"}]}


def problem_codes(agent) -> list[str]:
    return [p["code"] for p in agent.client.get("/agent/dispatcher").json()["problems"]]


def status_of(url: str, task_id: str) -> str:
    groups = httpx.get(f"{url}/agent/tasks").json()
    return next(status for status, tasks in groups.items() for t in tasks if t["id"] == task_id)


def agent_yaml(repo, fake_cli) -> None:
    (repo / "agent.yaml").write_text(
        f"test_command: ''\npoll_interval_seconds: 0.5\nclaude_code:\n  command: {fake_cli.command}\n")


def test_an_unacknowledged_runtime_keeps_its_tasks_pending_until_the_file_says_so(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=True, guardrails_acknowledged=False)
    dispatcher = agent.app.state.dispatcher
    task_id = agent.client.post("/agent/tasks", json=fake_task("Waits for a yes", WRITE)).json()["id"]

    assert dispatcher.tick() == 0  # a whole round: nothing claimed
    assert agent.store.get(task_id).status is TaskStatus.pending
    assert fake_cli.calls() == []
    [problem] = agent.client.get("/agent/dispatcher").json()["problems"]
    assert problem["code"] == CODE
    assert problem["message"].startswith("claude_code runs without its permission prompts (")
    assert "skip_permissions" in problem["message"] and f"`baton-agent {FLAG}`" in problem["message"]
    assert "`baton-init`" in problem["message"] and problem["message"].endswith("until then its tasks wait")
    health = agent.client.get("/agent/health").json()
    assert health["status"] == "degraded" and CODE in [p["code"] for p in health["problems"]]

    # Another runtime's acknowledgement does not cover this one.
    acknowledge(agent.settings.project_dir, ["codex"], by="baton-init")
    assert dispatcher.tick() == 0 and problem_codes(agent) == [CODE]

    acknowledge(agent.settings.project_dir, ["claude_code"], by="baton-init")  # while the agent runs
    task = wait_for(lambda: (t := agent.store.get(task_id)).status is TaskStatus.completed and t, timeout=60,
                    what="the task to land once acknowledged")
    assert task.commit_sha
    assert problem_codes(agent) == []
    assert agent.client.get("/agent/health").json()["status"] == "ok"
    saved = json.loads(ack_path(agent.settings.project_dir).read_text())
    assert saved["runtimes"] == ["claude_code", "codex"] and saved["by"] == "baton-init" and saved["acknowledged_at"]
    assert "data/" not in git(agent.settings.project_dir, "status", "--porcelain")  # a local decision


def test_the_flag_acknowledges_for_the_agent_already_running_and_a_second_use_changes_nothing(
        started, fake_cli, tmp_path):
    repo = make_repo(tmp_path, "flagged")
    agent_yaml(repo, fake_cli)
    _, url = started(repo, guardrails_acknowledged=False)

    task_id = httpx.post(f"{url}/agent/tasks", json=fake_task("Waits for the flag", WRITE)).json()["id"]
    health = httpx.get(f"{url}/agent/health").json()
    assert health["status"] == "degraded" and CODE in [p["code"] for p in health["problems"]]
    assert CODE in [p["code"] for p in httpx.get(f"{url}/agent/dispatcher").json()["problems"]]
    assert status_of(url, task_id) == "pending"
    assert not ack_path(repo).exists()

    first = run_agent(["--project-dir", str(repo), "--port", str(free_port()), FLAG], repo)
    assert first.returncode == 0, first.stderr
    assert f"acknowledged running claude_code without the usual guardrails (recorded in {ack_path(repo)})" \
        in first.stderr
    assert "picks the acknowledgement up" in first.stderr  # this one did not start a second agent
    saved = ack_path(repo).read_bytes()
    assert json.loads(saved)["runtimes"] == ["claude_code"] and json.loads(saved)["by"] == "baton-agent"
    wait_for(lambda: status_of(url, task_id) == "completed", timeout=60,
             what="the task to land once acknowledged")
    assert httpx.get(f"{url}/agent/health").json()["status"] == "ok"

    second = run_agent(["--project-dir", str(repo), "--port", str(free_port()), FLAG], repo)
    assert second.returncode == 0, second.stderr
    assert "already acknowledged for claude_code" in second.stderr and "nothing changed" in second.stderr
    assert ack_path(repo).read_bytes() == saved


def test_an_agent_started_with_the_flag_runs_its_tasks(started, fake_cli, tmp_path):
    repo = make_repo(tmp_path, "started")
    agent_yaml(repo, fake_cli)
    agent, url = started(repo, FLAG, guardrails_acknowledged=False)

    task_id = httpx.post(f"{url}/agent/tasks", json=fake_task("Runs at once", WRITE)).json()["id"]
    wait_for(lambda: status_of(url, task_id) == "completed", timeout=60,
             what="the task to land")
    assert httpx.get(f"{url}/agent/dispatcher").json()["problems"] == []
    assert "acknowledged running claude_code" in agent.output()
    assert git(origin_of(repo), "show", "main:guarded.txt") == "ran\n"  # landed


def test_a_runtime_that_keeps_its_prompts_needs_no_acknowledgement(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(claude_code={"skip_permissions": False}), dispatch=True,
                          guardrails_acknowledged=False)
    task_id = agent.client.post("/agent/tasks", json=fake_task("Asks first", WRITE)).json()["id"]
    wait_for(lambda: agent.store.get(task_id).status is TaskStatus.completed, timeout=60, what="the task to land")
    assert problem_codes(agent) == []
    assert not ack_path(agent.settings.project_dir).exists()


def test_codex_with_full_access_needs_it_whatever_its_approval_policy(agent_factory, tmp_path, monkeypatch):
    codex = make_fake("codex", tmp_path, monkeypatch)
    agent = agent_factory(config=codex.config(section={"approval_policy": "on-request"}), dispatch=True,
                          guardrails_acknowledged=False)
    task_id = agent.client.post("/agent/tasks", json=fake_task("On codex", WRITE)).json()["id"]
    assert agent.app.state.dispatcher.tick() == 0
    assert agent.store.get(task_id).status is TaskStatus.pending and codex.calls() == []
    [problem] = agent.client.get("/agent/dispatcher").json()["problems"]
    assert problem["code"] == CODE and problem["message"].startswith("codex runs without its permission prompts")
    assert "danger-full-access" in problem["message"]

    acknowledge(agent.settings.project_dir, ["codex"], by="tests")
    wait_for(lambda: agent.store.get(task_id).status is TaskStatus.completed, timeout=60, what="the codex task")


def test_which_configurations_bypass_their_prompts():
    assert set(unguarded(AgentConfig())) == {"claude_code"}  # the default: skip_permissions true
    assert unguarded(AgentConfig(claude_code=ClaudeCodeConfig(skip_permissions=False))) == {}
    assert set(unguarded(AgentConfig(runtime="codex"))) == {"codex"}
    for policy in ("never", "on-request", "untrusted"):
        assert set(unguarded(AgentConfig(runtime="codex", codex=CodexConfig(approval_policy=policy)))) == {"codex"}
    assert unguarded(AgentConfig(runtime="codex", codex=CodexConfig(sandbox="workspace-write"))) == {}
    assert set(unguarded(AgentConfig.model_validate({"runtime": "opencode"}))) == {"opencode"}
    asks = AgentConfig.model_validate({"runtime": "opencode", "opencode": {"config": {"permission": {"bash": "ask"}}}})
    assert unguarded(asks) == {}
    both = AgentConfig.model_validate({"claude_code": {"skip_permissions": False}, "codex": {}})
    assert set(unguarded(both)) == {"codex"}  # every configured runtime, not only the default


@pytest.mark.parametrize(("section", "unguarded_by_mode"), [
    ({"skip_permissions": False, "permission_mode": "bypassPermissions"}, True),
    ({"skip_permissions": False, "permission_mode": "acceptEdits"}, False),
    ({"skip_permissions": False, "permission_mode": "dontAsk"}, False),
])
def test_claude_codes_bypass_permissions_mode_is_unguarded(section, unguarded_by_mode):
    config = AgentConfig.model_validate({"runtime": "claude_code", "claude_code": section})
    reasons = unguarded(config)
    assert ("claude_code" in reasons) is unguarded_by_mode
    if unguarded_by_mode:
        assert reasons["claude_code"] == WHY_CLAUDE_MODE
        assert unguarded_reason("claude_code", ClaudeCodeConfig(**section)) == WHY_CLAUDE_MODE


@pytest.mark.parametrize(("permission", "allows_all"), [
    ("allow", True),
    ({"*": "allow"}, True),
    ({"*": "allow", "bash": {"*": "allow", "git push*": "allow"}}, True),
    ("ask", False),
    ({"*": "allow", "bash": "ask"}, False),
    ({"*": "allow", "bash": {"*": "allow", "rm *": "deny"}}, False),
    ({"edit": "allow", "bash": "allow"}, False),  # what it leaves out, OpenCode asks about
])
def test_opencode_permissions_that_allow_everything_are_unguarded(permission, allows_all):
    config = AgentConfig.model_validate({"runtime": "opencode", "opencode": {"config": {"permission": permission}}})
    reason = unguarded(config).get("opencode")
    assert reason == (WHY_OPENCODE_ALLOW if allows_all else None)


def test_an_unreadable_acknowledgement_acknowledges_nothing_and_says_so(tmp_path):
    project = make_repo(tmp_path)
    guard = Guardrails(project, {"claude_code": "why"})
    assert set(guard.problems()) == {"claude_code"}
    ack_path(project).parent.mkdir()
    ack_path(project).write_text("{not json")
    [problem] = guard.problems().values()
    assert str(ack_path(project)) in problem["message"] and "cannot be read" in problem["message"]
    ack_path(project).write_text(json.dumps({"runtimes": "claude_code"}))  # not a list
    assert "no list of runtime names" in guard.problems()["claude_code"]["message"]
    assert acknowledge(project, ["claude_code"], by="tests") is True  # the flag replaces it
    assert guard.problems() == {}
    assert acknowledge(project, ["claude_code"], by="tests") is False


def test_the_board_shows_the_problem_on_the_project_card(agent_factory, dashboard_factory, fake_cli):
    from browsing import chromium, playwright_or_skip

    api = playwright_or_skip()
    agent = agent_factory(config=fake_cli.config(), dispatch=True, guardrails_acknowledged=False)
    client = dashboard_factory([{"id": "alpha", "name": "Alpha", "agent_url": agent.url,
                                 "agent_project_id": agent.settings.project_id}], timeout=5)
    with chromium(api) as browser:
        page = browser.new_page()
        page.goto(str(client.base_url))
        card = page.locator(".project[data-project='alpha']")
        api.expect(card.locator(".badge")).to_have_text("degraded", timeout=15000)
        api.expect(card.locator(f".project-problems li[data-code='{CODE}']")).to_contain_text(
            "claude_code runs without its permission prompts")
        api.expect(card.locator(f".project-problems li[data-code='{CODE}']")).to_contain_text(FLAG)


def test_an_acknowledgement_that_git_tracks_does_not_count(tmp_path):
    # A coding agent can commit data/guardrails-acknowledged.json (`git add -f`); once that lands,
    # Baton fast-forwards the user's checkout and the file appears. Only an untracked copy counts.
    repo = make_repo(tmp_path)
    guardrails = Guardrails(repo, {"claude_code": "skip_permissions is true"})
    path = ack_path(repo)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runtimes": ["claude_code"], "by": "an agent"}))
    git(repo, "add", "-f", "data/guardrails-acknowledged.json")
    git(repo, "commit", "-q", "-m", "acknowledge")

    [problem] = guardrails.problems().values()
    assert problem["code"] == CODE and "is tracked by git" in problem["message"]
    try:
        acknowledge(repo, ["claude_code"], by="baton-init")
    except OSError as exc:
        assert "git rm --cached data/guardrails-acknowledged.json" in str(exc)
    else:
        raise AssertionError("acknowledge rewrote a tracked file that would still not count")

    git(repo, "rm", "-q", "--cached", "data/guardrails-acknowledged.json")
    git(repo, "commit", "-q", "-m", "untrack")
    path.unlink()
    assert acknowledge(repo, ["claude_code"], by="baton-init") is True
    assert guardrails.problems() == {}
