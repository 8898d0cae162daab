"""Codex's approval policy object and turn sandbox policy (WORKFLOW.md's agent_runtime keys):
accepted by the section, sent to the app-server (tests/fakes/fake_codex.py records and checks
them as Codex's deserializer does), overridden by a read-only planning turn, and counted by the
guardrails when they give full access."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.guardrails import WHY, WHY_CODEX_TURN, unguarded_reason
from backend.runtimes.base import TurnRequest
from backend.runtimes.codex import CodexConfig, CodexRuntime
from runtimes.runtime_fakes import make_fake
from runtimes.turns import run_turn, snapshot
from support import git, make_local_repo

GRANULAR = {"granular": {"mcp_elicitations": False, "rules": True, "sandbox_approval": True,
                         "request_permissions": False}}
WRITES = [{"write": "new.txt", "text": "new\n"}, {"run": ["sh", "-c", "echo x > shell.txt"]}]


@pytest.fixture
def project(tmp_path) -> Path:
    return make_local_repo(tmp_path, "project")


def codex(tmp_path: Path, monkeypatch, **section):
    fake = make_fake("codex", tmp_path, monkeypatch)
    config = CodexConfig(command=fake.command, timeout=60, stall_timeout=30, **section)
    return CodexRuntime(config), fake


def request(project: Path, tmp_path: Path, scenario: dict, read_only: bool = False) -> TurnRequest:
    return TurnRequest(prompt=f"# Task t1\n\nFAKE: {json.dumps(scenario)}\n", cwd=project, env=dict(os.environ),
                       scratch=tmp_path / "scratch", read_only=read_only)


def sent(fake, method: str) -> dict:
    (message,) = [e["received"] for e in fake.entries() if e.get("received", {}).get("method") == method]
    return message["params"]


# ----- the section --------------------------------------------------------------------------------


def test_the_section_takes_a_policy_name_or_object_and_a_turn_sandbox_policy():
    assert CodexConfig(approval_policy=GRANULAR).approval_policy == GRANULAR
    assert CodexConfig().sandbox_policy() is None
    assert CodexConfig(turn_sandbox_policy="workspace-write").sandbox_policy() == {"type": "workspaceWrite"}
    assert CodexConfig(turn_sandbox_policy="read-only").sandbox_policy() == {"type": "readOnly"}
    assert CodexConfig(turn_sandbox_policy="danger-full-access").sandbox_policy() == {"type": "dangerFullAccess"}
    custom = {"type": "workspaceWrite", "networkAccess": True, "writableRoots": ["/srv/cache"]}
    assert CodexConfig(turn_sandbox_policy=custom).sandbox_policy() == custom


@pytest.mark.parametrize("value, words", [
    ({"networkAccess": True}, "needs a string `type`"),
    ({"type": 3}, "needs a string `type`"),
    ("workspaceWrite", "turn_sandbox_policy"),  # the object's name is no mode name
])
def test_a_turn_sandbox_policy_without_a_type_is_refused(value, words):
    with pytest.raises(ValidationError) as caught:
        CodexConfig(turn_sandbox_policy=value)
    assert words in str(caught.value)


def test_an_unknown_approval_policy_name_is_refused():
    with pytest.raises(ValidationError, match="approval_policy"):
        CodexConfig(approval_policy="sometimes")


# ----- on the wire ------------------------------------------------------------------------------


def test_the_policy_object_and_the_turn_sandbox_policy_reach_the_app_server(project, tmp_path, monkeypatch):
    policy = {"type": "workspaceWrite", "networkAccess": True}
    runtime, fake = codex(tmp_path, monkeypatch, sandbox="workspace-write", approval_policy=GRANULAR,
                          turn_sandbox_policy=policy)
    summary, _, code = run_turn(runtime, request(project, tmp_path, {"steps": [{"write": "a.txt", "text": "a\n"}]}),
                                tmp_path / "logs")
    assert code == 0 and summary.succeeded
    assert sent(fake, "thread/start")["approvalPolicy"] == GRANULAR
    assert sent(fake, "turn/start")["sandboxPolicy"] == policy
    (call,) = fake.calls()
    assert (call["approval_policy"], call["sandbox_policy"], call["sandbox"]) == (GRANULAR, policy, "workspace-write")
    assert (project / "a.txt").read_text() == "a\n"


def test_without_a_turn_sandbox_policy_turn_start_carries_none(project, tmp_path, monkeypatch):
    runtime, fake = codex(tmp_path, monkeypatch)
    summary, _, _ = run_turn(runtime, request(project, tmp_path, {"steps": []}), tmp_path / "logs")
    assert summary.succeeded
    assert "sandboxPolicy" not in sent(fake, "turn/start")
    assert sent(fake, "thread/start")["approvalPolicy"] == "never"


def test_a_read_only_turn_policy_makes_codex_refuse_writes(project, tmp_path, monkeypatch):
    # The thread would allow everything: the turn's policy wins, as in Codex.
    runtime, fake = codex(tmp_path, monkeypatch, sandbox="danger-full-access", turn_sandbox_policy="read-only")
    before = snapshot(project)
    summary, _, _ = run_turn(runtime, request(project, tmp_path, {"steps": WRITES}), tmp_path / "logs")
    assert summary.succeeded
    assert snapshot(project) == before and git(project, "status", "--porcelain") == ""
    assert fake.calls()[0]["sandbox"] == "read-only"


def test_a_planning_turn_stays_read_only_whatever_the_policies_say(project, tmp_path, monkeypatch):
    runtime, fake = codex(tmp_path, monkeypatch, sandbox="danger-full-access", approval_policy=GRANULAR,
                          turn_sandbox_policy={"type": "dangerFullAccess"})
    before = snapshot(project)
    summary, _, _ = run_turn(runtime, request(project, tmp_path, {"steps": WRITES, "model_text": "PLAN"},
                                              read_only=True), tmp_path / "logs")
    assert summary.succeeded and summary.result.text == "PLAN"
    assert snapshot(project) == before
    thread = sent(fake, "thread/start")
    assert (thread["approvalPolicy"], thread["sandbox"]) == ("never", "read-only")
    assert sent(fake, "turn/start")["sandboxPolicy"] == {"type": "readOnly"}


@pytest.mark.parametrize("section, failed, message", [
    ({"turn_sandbox_policy": {"type": "fullAccess"}}, "turn/start",
     "unknown variant `fullAccess`, expected one of "
     "`dangerFullAccess`, `readOnly`, `externalSandbox`, `workspaceWrite`"),
    ({"turn_sandbox_policy": {"type": "workspaceWrite", "networkAccess": "yes"}}, "turn/start",
     'invalid type: "yes", expected a boolean'),
    ({"turn_sandbox_policy": {"type": "workspaceWrite", "writableRoots": ["relative/dir"]}}, "turn/start",
     "expected a sequence of absolute paths"),
    ({"approval_policy": {"granular": {"rules": True}}}, "thread/start", "missing field `mcp_elicitations`"),
    ({"approval_policy": {"always": True}}, "thread/start",
     "did not match any variant of untagged enum AskForApproval"),
])
def test_a_policy_codex_cannot_read_fails_the_turn_with_its_words(project, tmp_path, monkeypatch, section, failed,
                                                                  message):
    runtime, _ = codex(tmp_path, monkeypatch, **section)
    summary, _, code = run_turn(runtime, request(project, tmp_path, {"steps": [{"write": "a.txt", "text": "a"}]}),
                                tmp_path / "logs")
    assert code == 0 and not summary.succeeded
    (error,) = summary.result.errors
    assert error.startswith(f"{failed} failed: Invalid request: ") and message in error, error
    assert not (project / "a.txt").exists()


# ----- guardrails ----------------------------------------------------------------------------------


@pytest.mark.parametrize("section, why", [
    ({}, WHY["codex"]),  # sandbox danger-full-access by default
    ({"sandbox": "workspace-write"}, None),
    ({"sandbox": "workspace-write", "turn_sandbox_policy": "danger-full-access"}, WHY_CODEX_TURN),
    ({"sandbox": "read-only", "turn_sandbox_policy": {"type": "externalSandbox", "networkAccess": "enabled"}},
     WHY_CODEX_TURN),
    # Sent on every turn, the turn's policy is what the agent runs under.
    ({"sandbox": "danger-full-access", "turn_sandbox_policy": {"type": "workspaceWrite"}}, None),
    ({"sandbox": "workspace-write", "approval_policy": GRANULAR}, None),
])
def test_codex_is_unguarded_when_its_turns_get_full_access(section, why):
    assert unguarded_reason("codex", CodexConfig(**section)) == why
