"""Security review (issue 14): what a WORKFLOW.md edit must never do, each found once and fixed.

WORKFLOW.md is the repository's: an unsandboxed coding agent can write the
project's copy (same user), a sandboxed one through a landed commit, and it is reloaded within a
second, so nothing it says may reveal or redirect a secret Baton keeps from the agent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backend.config import AgentConfig
from backend.guardrails import unguarded_reason
from backend.runtimes import RUNTIMES
from backend.runtimes.claude_code import ClaudeCodeConfig
from backend.workflow.live import LiveWorkflow
from backend.workflow.loader import WorkflowError, load_workflow
from backend.workflow.policy import WorkflowPolicyImpl

SECRET = "ghp_r1SecretValue0123456789"
ENV = {"LINEAR_API_KEY": "lin-secret-value", "JIRA_API_TOKEN": "jira-secret-value", "BATON_TOKEN": SECRET, "OTHER_KEY": "other-secret", "HOME": "/root"}


def write(path: Path, front: str, tick: int = 0) -> None:
    path.write_text(f"---\n{front}\n---\nWork on {{{{ issue.identifier }}}}\n", encoding="utf-8")
    stamp = 1_700_000_000_000_000_000 + tick * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


GOOD = "tracker: {kind: linear, project_slug: abc123}"


@pytest.mark.parametrize("edit", [
    "tracker: {kind: linear, project_slug: $BATON_TOKEN}",
    "tracker: {kind: linear, project_slug: abc123, endpoint: $BATON_TOKEN}",
    "tracker: {kind: jira, endpoint: 'https://x.atlassian.net', email: $BATON_TOKEN, project: SHOP}",
], ids=["project_slug", "endpoint", "email"])
def test_an_edit_naming_a_secret_variable_never_shows_its_value_on_health(tmp_path, edit):
    path = tmp_path / "WORKFLOW.md"
    write(path, GOOD)
    live = LiveWorkflow(path, project_dir=tmp_path, environ=ENV)
    write(path, edit, tick=1)
    live.check()
    status = live.status()  # what /agent/health's `workflow` shows, without a token
    assert status["state"] == "invalid"
    assert SECRET not in json.dumps(status)


@pytest.mark.parametrize("front", [
    GOOD + "\nworkspace: {root: /tmp/ws/$BATON_TOKEN}",
    GOOD + "\nagent_runtime: {kind: codex, command: \"$BATON_TOKEN app-server\"}",
], ids=["workspace.root", "command"])
def test_a_path_or_command_never_carries_a_secret_variables_value(tmp_path, front):
    path = tmp_path / "WORKFLOW.md"
    write(path, front)
    try:
        workflow = load_workflow(path, project_dir=tmp_path, environ=ENV)
    except WorkflowError as exc:  # refusing the variable is a fix too, if the message keeps it out
        assert SECRET not in exc.message
        return
    assert SECRET not in str(workflow.config.workspace.root)  # the agent's cwd, BATON_WORKSPACE, /api/v1
    name, section = workflow.config.runtime(AgentConfig())
    problem = RUNTIMES[name].build(section).check()  # shown in /agent/health's problems
    assert SECRET not in section.command and SECRET not in json.dumps(problem)


def test_claude_codes_bypass_permissions_mode_needs_the_acknowledgement():
    section = ClaudeCodeConfig(skip_permissions=False, permission_mode="bypassPermissions")
    assert unguarded_reason("claude_code", section) is not None


def test_an_edit_does_not_unhide_the_tracker_secret_the_agent_started_with(tmp_path):
    path = tmp_path / "WORKFLOW.md"
    write(path, GOOD)
    live = LiveWorkflow(path, project_dir=tmp_path, environ=ENV)
    policy = WorkflowPolicyImpl(live, runner=None)
    assert "LINEAR_API_KEY" in policy.hidden_env()
    write(path, "tracker: {kind: linear, project_slug: abc123, api_key: $OTHER_KEY}", tick=1)
    assert live.check() is True
    assert {"LINEAR_API_KEY", "OTHER_KEY"} <= policy.hidden_env()


@pytest.mark.parametrize("scalar", ["2020-13-45", "1" * 5000], ids=["bad-date", "5000-digits"])
def test_a_scalar_yaml_cannot_build_is_a_parse_error(tmp_path, scalar):
    path = tmp_path / "WORKFLOW.md"
    write(path, f"{GOOD}\nunused: {scalar}")
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path, project_dir=tmp_path, environ=ENV)
    assert caught.value.code == "workflow_parse_error"
