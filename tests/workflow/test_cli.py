"""`baton-agent` started on a WORKFLOW.md, as a real process: which file it runs (--workflow,
the project's own, --no-workflow), what refuses the start (an invalid or missing file, an unset
tracker secret, a missing runtime CLI, a runtime bypassing its prompts without the guardrails flag
on this command line), and --logs-root moving the task logs and the agent's own log."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import sys
from pathlib import Path

import httpx

from backend.agent.logsroot import recorded_logs_dir
from backend.dashboard.config import ProjectConfig
from backend.dashboard.connectors.local import LocalConnector
from backend.guardrails import FLAG, ACK_NAME
from backend.store import TaskStore
from conftest import FAKE_CLAUDE, fake_task
from support import acknowledge_guardrails, free_port, git, run_agent, wait_for

FINISHED = ("completed", "failed", "cancelled")
SECRET = "lin_api_never_shown_0123456789"  # a tracker key that must appear in no output


def fake_claude(tmp_path: Path) -> Path:
    wrapper = tmp_path / "bin" / "claude"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_CLAUDE} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def workflow_text(endpoint: str, command: str, approval: str = "never", extra: str = "") -> str:
    return (f"---\ntracker:\n  kind: linear\n  endpoint: {endpoint}\n  api_key: $LINEAR_API_KEY\n  team: ENG\n"
            f"agent_runtime:\n  kind: claudecode\n  command: {command}\n  approval_policy: {approval}\n{extra}"
            "---\nWork on {{ issue.identifier }}: {{ issue.title }}\n")


def write_workflow(path: Path, tmp_path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(workflow_text(kw.pop("endpoint", "http://127.0.0.1:9/graphql"),
                                  kw.pop("command", str(fake_claude(tmp_path))), **kw))
    return path


def refused(result) -> list[str]:
    """The refusal's lines: exit status 2, each line on stderr saying who speaks."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("baton-agent: ") for line in lines), result.stderr
    return lines


def nothing_written(repo: Path) -> None:
    assert not (repo / "data").exists() and not (repo / "tasks").exists() and not (repo / "logs").exists()


# ----- which file, and files that refuse the start ---------------------------------------------


def test_missing_workflow_file_named_relative_to_cwd(repo, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    result = run_agent(["--port", str(free_port()), "--project-dir", str(repo), "--workflow", "conf/WORKFLOW.md"], cwd,
                       env={"LINEAR_API_KEY": SECRET})
    lines = refused(result)
    assert any(str(cwd / "conf" / "WORKFLOW.md") in line for line in lines), lines
    nothing_written(repo)


def test_invalid_key_names_the_file_and_the_key(repo, tmp_path):
    path = write_workflow(tmp_path / "wf" / "WORKFLOW.md", tmp_path, extra="agent:\n  max_turn: 3\n")
    result = run_agent(["--port", str(free_port()), "--workflow", str(path)], repo, env={"LINEAR_API_KEY": SECRET})
    lines = refused(result)
    assert any(str(path) in line and "agent.max_turn" in line and "unknown key" in line for line in lines), lines
    nothing_written(repo)


def test_project_workflow_is_the_default_and_an_invalid_one_refuses(repo, tmp_path):
    write_workflow(repo / "WORKFLOW.md", tmp_path, extra="polling:\n  interval_ms: fast\n")
    result = run_agent(["--port", str(free_port())], repo, env={"LINEAR_API_KEY": SECRET})
    lines = refused(result)
    assert any(str(repo / "WORKFLOW.md") in line and "polling.interval_ms" in line for line in lines), lines
    nothing_written(repo)


def test_no_workflow_ignores_an_invalid_workflow_file(repo, started):
    (repo / "WORKFLOW.md").write_text("---\ntracker: [not, a, map]\n---\n{{ broken\n")
    agent, url = started(repo, "--no-workflow")
    health = httpx.get(f"{url}/agent/health").json()
    assert health.get("workflow") is None
    assert f"workflow {repo / 'WORKFLOW.md'}" not in agent.output()  # no start line
    assert agent.stop(signal.SIGINT) == 0


def test_workflow_and_no_workflow_conflict(repo, tmp_path):
    path = write_workflow(tmp_path / "WORKFLOW.md", tmp_path)
    result = run_agent(["--workflow", str(path), "--no-workflow"], repo)
    assert result.returncode == 2
    assert "--no-workflow: not allowed with argument --workflow" in result.stderr
    nothing_written(repo)


# ----- what must be there to run unattended ----------------------------------------------------


def test_unset_tracker_secret_refuses_naming_the_variable(repo, tmp_path):
    path = write_workflow(tmp_path / "WORKFLOW.md", tmp_path)
    result = run_agent(["--port", str(free_port()), "--workflow", str(path), FLAG], repo, env={"LINEAR_API_KEY": ""})
    lines = refused(result)
    assert any("tracker.api_key" in line and "LINEAR_API_KEY" in line for line in lines), lines
    nothing_written(repo)  # the flag wrote no acknowledgement either


def test_missing_runtime_cli_refuses_naming_the_command(repo, tmp_path):
    missing = tmp_path / "nowhere" / "claude"
    path = write_workflow(tmp_path / "WORKFLOW.md", tmp_path, command=str(missing))
    result = run_agent(["--port", str(free_port()), "--workflow", str(path), FLAG], repo,
                       env={"LINEAR_API_KEY": SECRET})
    lines = refused(result)
    assert any(f"{path}: agent_runtime.command: " in line and str(missing) in line for line in lines), lines
    assert SECRET not in result.stdout + result.stderr
    nothing_written(repo)


def test_unguarded_runtime_needs_the_flag_at_every_start(repo, tmp_path):
    path = write_workflow(tmp_path / "WORKFLOW.md", tmp_path)  # approval_policy never: no prompts
    acknowledge_guardrails(repo)  # acknowledged for the project once: not enough for an unattended run
    before = (repo / "data" / ACK_NAME).read_bytes()
    result = run_agent(["--port", str(free_port()), "--workflow", str(path)], repo, env={"LINEAR_API_KEY": SECRET})
    lines = refused(result)
    assert len(lines) == 1 and lines[0].startswith(f"baton-agent: {path}: agent_runtime: ")
    assert lines[0].endswith(f"; running unattended like that needs {FLAG}")
    assert "without asking" in lines[0]  # says why (guardrails.WHY)
    assert SECRET not in result.stdout + result.stderr
    assert (repo / "data" / ACK_NAME).read_bytes() == before
    assert not (repo / "data" / "dev-tasks.json").exists()


def test_guarded_runtime_needs_no_flag(repo, tmp_path, started, linear_standin):
    path = write_workflow(repo / "WORKFLOW.md", tmp_path, endpoint=linear_standin.url, approval="acceptEdits")
    agent, url = started(repo, env=linear_standin.environ, guardrails_acknowledged=False)
    health = httpx.get(f"{url}/agent/health").json()
    assert health["workflow"]["path"] == str(path)
    assert not (repo / "data" / ACK_NAME).exists()  # nothing to acknowledge
    assert agent.stop(signal.SIGINT) == 0


def test_with_the_flag_it_starts_and_runs_the_workflow(repo, tmp_path, started, linear_standin):
    path = write_workflow(tmp_path / "conf" / "WORKFLOW.md", tmp_path, endpoint=linear_standin.url)
    (repo / "agent.yaml").write_text("claude_code:\n  skip_permissions: false\n")  # only the workflow's bypasses
    agent, url = started(repo, "--workflow", str(path), FLAG, env=linear_standin.environ,
                         guardrails_acknowledged=False)
    health = httpx.get(f"{url}/agent/health").json()
    assert health["workflow"]["path"] == str(path) and health["workflow"]["state"] == "ok"
    # The flag acknowledged the workflow's runtime, so the dispatcher claims its tasks.
    assert json.loads((repo / "data" / ACK_NAME).read_text())["runtimes"] == ["claude_code"]
    root = repo / "worktrees" / "issues"
    wait_for(lambda: f"workflow {path}: linear issues, runtime claude_code, workspaces in {root}" in agent.output(),
             what="the start line")
    assert agent.stop(signal.SIGINT) == 0
    assert linear_standin.environ["LINEAR_API_KEY"] not in agent.output()


# ----- --logs-root -----------------------------------------------------------------------------


def test_logs_root_holds_task_logs_and_the_agents_log(repo, tmp_path, started, fake_cli):
    (repo / "agent.yaml").write_text(json.dumps({"claude_code": {"command": fake_cli.command}, "test_command": "",
                                                 "poll_interval_seconds": 0.2}))
    logs = tmp_path / "var" / "baton-logs"
    agent, url = started(repo, "--logs-root", str(logs))
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    created = httpx.post(f"{url}/agent/tasks", json=fake_task("Logged elsewhere", {"steps": [
        {"write": "hello.txt", "text": "hi\n"}, {"commit": "add hello"}]}))
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    store = TaskStore(repo / "data" / "dev-tasks.json")
    task = wait_for(lambda: (t := store.get(task_id)).status.value in FINISHED and t, timeout=120,
                    what="the task to finish")
    assert task.status.value == "completed", task
    assert (logs / f"{task_id}.events.jsonl").exists() and (logs / f"{task_id}.jsonl").exists()
    assert not (repo / "logs").exists() or not list((repo / "logs").glob(f"{task_id}*"))
    events = httpx.get(f"{url}/agent/tasks/{task_id}/events").json()["events"]
    assert events  # the agent reads them where it wrote them
    own = (logs / "baton-agent.log").read_text()
    assert f"project {repo} (" in own  # the start line, as on stderr
    assert agent.stop(signal.SIGINT) == 0

    # Without its agent, the dashboard's local connector finds the logs where the agent kept them.
    assert recorded_logs_dir(repo) == logs
    connector = LocalConnector(ProjectConfig(id="p", path=str(repo)))
    read = asyncio.run(connector.events(task_id, 0, 1000))
    assert [e["seq"] for e in read["events"]] == [e["seq"] for e in events]


def test_logs_root_record_goes_when_the_agent_starts_without_it(repo, tmp_path, started):
    logs = tmp_path / "logs-elsewhere"
    agent, _ = started(repo, "--logs-root", str(logs))
    assert agent.stop() == 0
    assert recorded_logs_dir(repo) == logs
    agent, _ = started(repo)
    assert agent.stop() == 0
    assert recorded_logs_dir(repo) == repo / "logs"


def test_a_tracked_logs_record_does_not_count(repo, tmp_path):
    """A landed commit could carry the record: only the agent's own, untracked one counts."""
    (repo / "data").mkdir()
    (repo / "data" / "baton-agent.json").write_text(json.dumps({"logs_dir": str(tmp_path / "elsewhere")}))
    assert recorded_logs_dir(repo) == tmp_path / "elsewhere"
    git(repo, "add", "-f", "data/baton-agent.json")
    git(repo, "commit", "-m", "a record")
    assert recorded_logs_dir(repo) == repo / "logs"


def test_logs_root_that_cannot_hold_logs_refuses(repo, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for bad, problem in [(a_file, "not a directory"), (a_file / "sub", "cannot create it"),
                         (repo / "worktrees" / "logs", "where the coding agents work")]:
        result = run_agent(["--port", str(free_port()), "--logs-root", str(bad)], repo)
        lines = refused(result)
        assert any(f"--logs-root {bad}: " in line and problem in line for line in lines), (bad, lines)
    assert not (repo / "data").exists() and not (repo / "worktrees").exists()
