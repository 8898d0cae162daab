"""Issue 14, fixes of R1's findings in the runner, its policy and baton-agent (F-B1):

- edits that need a restart are refused like invalid ones (runner.accept): a changed tracker
  kind, endpoint or credential (the key must never follow an edit to another URL, R1-H2), a
  runtime bypassing its prompts without the guardrails flag on the command line (R1-M2), a
  workspace.root holding --logs-root (R1-L5);
- an invalid edit kept out makes /agent/health `degraded` (workflow_invalid);
- the first prompt shows the issue as the tracker has it now, not as the last poll saw it;
- the tracker tools' grants made for an agent on another port reach this one;
- the start's "CLI not found" names the workflow's key, and --help says the guardrails flag is
  needed at every start with a WORKFLOW.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.agent.cli import _parse_args
from backend.guardrails import FLAG
from backend.models import NewTask
from backend.sources.tools import CALL_PATH, ToolGate
from backend.workflow.loader import load_workflow
from support import free_port, run_agent, wait_for
from trackers_support import start_linear_standin
from workflow.test_cli import refused, write_workflow
from workflow.test_runner import front_matter, lin, stack, start_workflow_agent, workflow_text  # noqa: F401 (fixtures)

RESTART = "restart baton-agent to apply it (the running sync keeps the loaded one)"


def invalid(agent) -> dict:
    return wait_for(lambda: (w := agent.health()["workflow"])["state"] == "invalid" and w,
                    what="health to report the edit kept out")


# ----- R1-H2: the tracker's key never follows an edit ---------------------------------------------

def test_an_edit_of_the_endpoint_is_refused_and_the_key_goes_nowhere_new(tmp_path, lin, stack):
    lin.admin.seed([{"title": "First", "state": "Todo"}])
    front = front_matter(lin, tmp_path / "ws")
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front))
    agent.wait_task("ENG-1")
    source, digest = agent.runner.source, agent.runner.live.current.digest
    with start_linear_standin(tmp_path / "elsewhere", teams=["ENG"]) as elsewhere:
        agent.write(workflow_text({**front, "tracker": {**front["tracker"], "endpoint": elsewhere.url},
                                   "agent": {"max_concurrent_agents": 3, "max_turns": 3}}))
        workflow = invalid(agent)
        assert workflow["error"]["code"] == "restart_required"
        assert workflow["error"]["message"] == f"{agent.path}: tracker.endpoint changed: {RESTART}"
        assert workflow["digest"] == digest and agent.dispatcher.ctx.slots.limit == 2  # nothing of it applied
        polls = source.polls_done
        assert agent.runner.refresh()
        wait_for(lambda: source.polls_done > polls, what="a poll after the edit")
        assert agent.runner.source is source and source.config.base_url == lin.url
        assert elsewhere.admin.requests() == []  # the key was never sent there


@pytest.mark.parametrize("change, key", [
    ({"api_key": "$OTHER_TRACKER_KEY"}, "tracker.api_key"),
    ({"kind": "jira", "endpoint": "https://x.atlassian.net", "email": "a@b.c", "project": "SHOP", "team": None,
      "api_key": None}, "tracker.kind"),
], ids=["api_key", "kind"])
def test_a_changed_tracker_credential_or_kind_needs_a_restart(tmp_path, lin, stack, change, key):
    front = front_matter(lin, tmp_path / "ws")
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front))
    old = agent.runner.live.current
    tracker = {k: v for k, v in {**front["tracker"], **change}.items() if v is not None}
    edited = tmp_path / "edited.md"
    edited.write_text(workflow_text({**front, "tracker": tracker}))
    new = load_workflow(edited, project_dir=agent.settings.project_dir,
                        environ={"OTHER_TRACKER_KEY": "x", "JIRA_API_TOKEN": "y", lin.var: "z"})
    said = agent.runner.accept(old, new)
    assert said is not None and f"{edited}: {key} changed: {RESTART}" in said.splitlines()
    # Filters, states and limits are no restart's business.
    other = tmp_path / "filter.md"
    other.write_text(workflow_text({**front, "tracker": {**front["tracker"], "team": "OPS"}, "agent": {"max_turns": 9}}))
    assert agent.runner.accept(old, load_workflow(other, project_dir=agent.settings.project_dir)) is None


# ----- R1-M2: no runtime without its prompts unless the flag was given ----------------------------

def guarded(tmp_path: Path, lin, approval: str) -> dict:
    claude = tmp_path / "bin" / "claude"
    claude.parent.mkdir(parents=True, exist_ok=True)
    claude.write_text("#!/bin/sh\nexit 0\n")
    claude.chmod(0o755)
    return front_matter(lin, tmp_path / "ws", agent_runtime={"kind": "claudecode", "command": str(claude),
                                                             "approval_policy": approval})


def test_an_edit_to_a_runtime_without_prompts_needs_the_flag_on_the_command_line(tmp_path, lin, stack):
    front = guarded(tmp_path, lin, "acceptEdits")
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front))  # acknowledged for the project, no flag
    digest = agent.runner.live.current.digest
    agent.write(workflow_text(guarded(tmp_path, lin, "never")))
    workflow = invalid(agent)
    assert workflow["error"]["code"] == "restart_required" and workflow["digest"] == digest
    [line] = workflow["error"]["message"].splitlines()
    assert line.startswith(f"{agent.path}: agent_runtime: ") and "without asking" in line
    assert line.endswith(f"that needs {FLAG} on baton-agent's command line: restart with it")
    assert agent.dispatcher.ctx.runtimes["claude_code"].config.skip_permissions is False


def test_with_the_flag_on_the_command_line_such_an_edit_applies(tmp_path, lin, stack):
    front = guarded(tmp_path, lin, "acceptEdits")
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front), guardrails_flag=True)
    agent.write(workflow_text(guarded(tmp_path, lin, "never")))
    wait_for(lambda: agent.dispatcher.ctx.runtimes["claude_code"].config.skip_permissions is True,
             what="the edit to apply")
    assert agent.health()["workflow"]["state"] == "ok"


# ----- R1-L5: the workspaces never hold the logs ----------------------------------------------------

def test_an_edit_putting_the_logs_root_inside_the_workspaces_is_refused(tmp_path, lin, stack):
    logs = tmp_path / "shared" / "logs"
    logs.mkdir(parents=True)
    front = front_matter(lin, tmp_path / "ws")
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front), logs_root=logs)
    agent.write(workflow_text({**front, "workspace": {"root": str(tmp_path / "shared")}}))
    workflow = invalid(agent)
    assert workflow["error"]["code"] == "restart_required"
    assert workflow["error"]["message"].startswith(f"{agent.path}: workspace.root: would contain --logs-root {logs}")
    assert agent.runner.live.current.config.workspace.root == tmp_path / "ws"


# ----- /agent/health ---------------------------------------------------------------------------------

def test_an_invalid_edit_kept_out_makes_the_agent_degraded_until_fixed(tmp_path, lin, stack):
    front = guarded(tmp_path, lin, "acceptEdits")  # a CLI that is there: nothing else to say
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front))
    assert agent.health()["status"] == "ok"
    agent.write(workflow_text({**front, "polling": {"interval_ms": "soon"}}))
    workflow = invalid(agent)
    health = agent.health()
    assert health["status"] == "degraded"
    [problem] = [p for p in health["problems"] if p["code"] == "workflow_invalid"]
    first = workflow["error"]["message"].splitlines()[0]
    assert problem["message"] == (f"WORKFLOW.md: invalid edit ignored, running the version loaded at "
                                  f"{workflow['loaded_at']}: {first}")
    assert "polling.interval_ms" in first
    agent.write(workflow_text({**front, "agent": {"max_concurrent_agents": 4, "max_turns": 3}}))
    wait_for(lambda: agent.health()["status"] == "ok", what="the fixed file to clear the problem")


# ----- the first prompt reads the issue afresh ------------------------------------------------------

def test_the_first_prompt_shows_the_issue_as_it_is_now(tmp_path, lin, stack, fake_cli):
    [issue] = lin.admin.seed([{"title": "Old title", "state": "Todo", "description": "FAKE: " + json.dumps({"steps": []})}])
    front = front_matter(lin, tmp_path / "ws", agent_runtime={"kind": "claudecode", "command": fake_cli.command})
    body = "STATE={{ issue.state }} TITLE={{ issue.title }}\n\n{{ issue.description }}"
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front, body), config=fake_cli.config())
    agent.wait_task("ENG-1")
    lin.admin.move("ENG-1", "In Progress")  # polls are hourly: the engine's copy stays as it was
    lin.admin.update("ENG-1", title="New title")
    assert agent.runner.engine.issues[issue["id"]].state == "Todo"
    agent.dispatcher.start()
    [call] = wait_for(lambda: fake_cli.calls(), timeout=60, what="the first turn")
    assert call["prompt"].startswith("STATE=In Progress TITLE=New title\n"), call["prompt"][:200]


# ----- grants made for another port -----------------------------------------------------------------

def test_grants_made_for_an_agent_on_another_port_reach_this_one(tmp_path, lin, stack):
    ours, theirs = lin.admin.seed([{"title": "Ours", "state": "Todo"}, {"title": "Theirs", "state": "Todo"}])
    made: dict[str, str] = {}

    def prepare(project: Path, store) -> None:
        old_gate = ToolGate(project / "data" / "tool-key", "http://127.0.0.1:1")  # this agent's key, an old port
        other_gate = ToolGate(tmp_path / "other-key", "http://127.0.0.1:2")  # another gate's (a dashboard's)
        for issue, gate in ((ours, old_gate), (theirs, other_gate)):
            source = {"kind": "linear", "id": issue["id"], "identifier": issue["identifier"]}
            task = store.create(NewTask(title=issue["identifier"], source=source,
                                        tool_grant=gate.grant("project", "linear", issue["id"])),
                                f"source:linear:{issue['id']}")
            made[issue["identifier"]] = task.id

    port = free_port()
    agent = start_workflow_agent(stack, tmp_path, workflow_text(front_matter(lin, tmp_path / "ws")), prepare=prepare,
                                 port=port)
    grants = agent.store.grants
    assert grants.get(made["ENG-1"]).url == f"http://127.0.0.1:{port}{CALL_PATH}"
    assert grants.get(made["ENG-2"]).url == f"http://127.0.0.1:2{CALL_PATH}"  # not this gate's: left alone


# ----- baton-agent's words ----------------------------------------------------------------------------

def test_a_missing_runtime_cli_names_the_workflows_key_to_fix(repo, tmp_path):
    missing = tmp_path / "nowhere" / "claude"
    path = write_workflow(tmp_path / "WORKFLOW.md", tmp_path, command=str(missing))
    result = run_agent(["--port", str(free_port()), "--workflow", str(path), FLAG], repo,
                       env={"LINEAR_API_KEY": "lin_api_x0123456789"})
    [line] = [line for line in refused(result) if "agent_runtime.command" in line]
    assert f"set agent_runtime.command in {path} to its path" in line, line
    assert "stay pending" not in line and "agent.yaml" not in line and "claude_code.command" not in line


def test_help_says_the_flag_is_needed_at_every_start_with_a_workflow(capsys):
    with pytest.raises(SystemExit):
        _parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "With a WORKFLOW.md whose runtime bypasses them, it is needed on the command line at every start" in text
