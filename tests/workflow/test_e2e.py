"""WORKFLOW.md end to end, with real processes only: a bare origin and its clone, `baton-agent`
started by its CLI (--project-dir, --port, --logs-root and the guardrails flag) on the clone's
WORKFLOW.md, a stand-in Linear or Jira server, and the fake Claude CLI as agent_runtime.command.
The tests touch only the tracker (its admin API, as a person would) and read /api/v1 and /agent/*.

- an issue flows to Done across continuation turns of one session, the hooks around it, the
  workspace gone once the work landed, /api/v1 in Symphony's shapes;
- a person cancels the issue mid-run: the task is cancelled saying why, its half-done work kept
  on its branch on origin, no process of it left, its workspace removed;
- Ctrl+C mid-turn: exit status 0, the task back to pending, its workspace kept and reused by the
  next start (no second after_create), which lands it; after a restart on another port the
  rerun's tracker tools reach the new agent (its grant is pointed at the new port);
- live reload: an invalid edit keeps the last good workflow running (and says so), a fix applies.

The stand-ins have Linear's and Jira's default states: the handoff state is "In Review" (they have
no "Human Review"), and Jira's only terminal state is Done.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
import yaml

from backend.guardrails import FLAG
from backend.models import TaskStatus
from backend.store import TaskStore
from support import AgentProcess, free_port, git, make_repo, origin_of, pid_alive, wait_for, wait_for_http
from trackers_support import StandIn, start_standin
from workflow.test_runner import wrapper

WAIT = 180  # seconds: a generous deadline for anything the processes do (the machine is shared)
STATES = {  # per kind: the states the workflow names, as the stand-in has them
    "linear": {"todo": "Todo", "active": ["Todo", "In Progress"], "terminal": ["Done", "Canceled"],
               "closed": "Canceled"},
    "jira": {"todo": "To Do", "active": ["To Do", "In Progress"], "terminal": ["Done"], "closed": "Done"},
}
HANDOFF, ON_START, ON_COMPLETE = "In Review", "In Progress", "Done"
HOOKS = ("after_create", "before_run", "after_run", "before_remove")
TEMPLATE = "Work on {{ issue.identifier }}: {{ issue.title }}\n\n{{ issue.description }}"
# Symphony's suggested shapes (SPEC 13.7.2): every key there must be in Baton's answers.
STATE_KEYS = {"generated_at", "counts", "running", "retrying", "codex_totals", "rate_limits"}
RUNNING_KEYS = {"issue_id", "issue_identifier", "issue_url", "state", "session_id", "turn_count", "last_event",
                "last_message", "started_at", "last_event_at", "tokens"}
TOKEN_KEYS = {"input_tokens", "output_tokens", "total_tokens"}
ISSUE_KEYS = {"issue_identifier", "issue_id", "status", "workspace", "attempts", "running", "retry", "logs",
              "recent_events", "last_error", "tracked"}


def fake(steps: list[dict], *on_resume: list[dict]) -> str:
    """An issue description the fake CLI follows (the rendered template carries it)."""
    return "FAKE: " + json.dumps({"steps": steps, "on_resume": [{"steps": s} for s in on_resume]})


def handoff_step() -> dict:
    """The coding agent hands its issue over through its tracker tools."""
    return {"mcp": "tracker_update_state", "arguments": {"state": HANDOFF}}


class Flow:
    """A stand-in tracker, a repository with a bare origin and a WORKFLOW.md, and the
    baton-agent process running it."""

    def __init__(self, root: Path, kind: str, body: str = TEMPLATE, **agent) -> None:
        self.root, self.kind, self.states = root, kind, STATES[kind]
        self.standin: StandIn = start_standin(kind, root / "standin")
        self.agent: AgentProcess | None = None
        self.starts = 0
        try:
            self.repo = make_repo(root, "p")
            # The agent's own settings; everything about the issues is the workflow's.
            (self.repo / "agent.yaml").write_text(
                "test_command: ''\npoll_interval_seconds: 0.5\npush_to_remote: true\n")
            self.claude = wrapper(root / "bin", "claude", "fake_claude.py")
            self.ws_root = root / "ws"
            self.hooks_file = root / "hooks.log"  # outside the repository and the workspaces
            self.fake_log, self.fake_state = root / "fake-calls.jsonl", root / "fake-state"
            self.logs = root / "logs"
            self.path = self.repo / "WORKFLOW.md"
            self.write(self.text(body, **agent))
            self.origin_main = git(origin_of(self.repo), "rev-parse", "main").strip()
            self.start()
        except BaseException:
            self.close()
            raise

    # ----- the workflow file ---------------------------------------------------------------------

    def front(self, **agent) -> dict:
        s = self.standin
        tracker = {"kind": self.kind, "endpoint": s.url}
        if self.kind == "linear":
            tracker |= {"api_key": f"${s.var}", "team": s.team}
        else:
            tracker |= {"email": s.email, "api_token": f"${s.var}", "project": s.project}
        tracker |= {"active_states": self.states["active"], "terminal_states": self.states["terminal"],
                    "handoff_states": [HANDOFF], "on_start": ON_START, "on_complete": ON_COMPLETE}
        return {
            "tracker": tracker,
            "polling": {"interval_ms": 1000},
            "workspace": {"root": str(self.ws_root)},
            # Each hook says it ran, and for which issue (the variables Baton adds).
            "hooks": {name: f'echo "{name} $BATON_ISSUE_IDENTIFIER" >> "$HOOKS_FILE"' for name in HOOKS},
            "agent": {"max_turns": 4, **agent},
            "agent_runtime": {"kind": "claudecode", "command": str(self.claude), "approval_policy": "never"},
        }

    def text(self, body: str, **agent) -> str:
        return "---\n" + yaml.safe_dump(self.front(**agent), sort_keys=False) + "---\n" + body + "\n"

    def write(self, text: str) -> None:
        """Write WORKFLOW.md; its mtime moves on whatever the clock's resolution (no sleeping)."""
        before = self.path.stat().st_mtime_ns if self.path.exists() else None
        self.path.write_text(text)
        if before is not None:
            os.utime(self.path, ns=(before + 1_000_000_000, before + 1_000_000_000))

    # ----- the agent process -----------------------------------------------------------------------

    def start(self, port: int | None = None) -> None:
        """baton-agent on `port` (default: a free one)."""
        self.starts += 1
        port = port or free_port()
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {**self.standin.environ, "HOOKS_FILE": str(self.hooks_file), "FAKE_CLAUDE_LOG": str(self.fake_log),
               "FAKE_CLAUDE_STATE": str(self.fake_state)}
        self.agent = AgentProcess(["--project-dir", str(self.repo), "--port", str(port), "--logs-root",
                                   str(self.logs), FLAG], self.root, self.root / f"agent-{self.starts}", env,
                                  guardrails_acknowledged=False)
        wait_for_http(f"{self.url}/agent/health", self.agent.proc, timeout=WAIT)

    def close(self) -> None:
        if self.agent is not None and self.agent.proc.poll() is None:
            self.agent.proc.send_signal(signal.SIGINT)
            try:
                self.agent.proc.wait(timeout=60)
            except Exception:  # noqa: BLE001 - it would not stop: it must not outlive the test
                self.agent.proc.kill()
                self.agent.proc.wait()
        self.standin.stop()

    def explain(self) -> str:
        """What the agent said, for a failure's message."""
        return self.agent.output()[-4000:] if self.agent is not None else ""

    # ----- what the test reads -------------------------------------------------------------------

    def get(self, path: str, status: int = 200) -> dict:
        answer = httpx.get(f"{self.url}{path}", timeout=30)
        assert answer.status_code == status, (path, answer.status_code, answer.text)
        return answer.json()

    def tasks(self) -> list[dict]:
        return [task for tasks in self.get("/agent/tasks").values() for task in tasks]

    def task_of(self, identifier: str) -> dict | None:
        found = [t for t in self.tasks() if (t.get("source") or {}).get("identifier") == identifier]
        assert len(found) <= 1, f"{len(found)} tasks for {identifier}"
        return found[0] if found else None

    def until(self, condition, what: str):
        try:
            return wait_for(condition, timeout=WAIT, interval=0.1, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the agent said:\n{self.explain()}") from None

    def task_until(self, identifier: str, status: str) -> dict:
        return self.until(lambda: (t := self.task_of(identifier)) is not None and t["status"] == status and t,
                          f"{identifier}'s task to be {status}")

    def reported(self, identifier: str) -> dict:
        """The issue's task once it landed and the sync told the tracker (moved, commented)."""
        def told(task: dict | None) -> bool:
            return task is not None and task["status"] == "completed" and (
                task["source"]["reports"].get(f"done:{task['runs']}") or {}).get("state") == "done"

        return self.until(lambda: told(t := self.task_of(identifier)) and t,
                          f"{identifier}'s task to land and the sync to report it")

    def running_row(self, identifier: str) -> dict | None:
        state = self.get("/api/v1/state")
        return next((row for row in state["running"] if row["issue_identifier"] == identifier), None)

    def calls(self, task_id: str) -> list[dict]:
        """The fake CLI's invocations for the task, in order."""
        if not self.fake_log.exists():
            return []
        calls = [json.loads(line) for line in self.fake_log.read_text().splitlines()]
        return [c for c in calls if c["env"]["TASK_ID"] == task_id]

    def hooks(self) -> list[str]:
        return self.hooks_file.read_text().splitlines() if self.hooks_file.exists() else []

    def workspace(self, identifier: str) -> Path:
        return self.ws_root / identifier  # ENG-1 / SHOP-1 are their own workspace keys

    def task_processes(self, task_id: str) -> list[int]:
        """Live processes carrying the task's marker (TASK_ID and BATON_PROJECT, as Baton stops them)."""
        marker = {f"TASK_ID={task_id}".encode(), f"BATON_PROJECT={self.repo.resolve()}".encode()}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = set((entry / "environ").read_bytes().split(b"\0"))
            except OSError:
                continue  # gone, or not ours to read
            if marker <= environ and pid_alive(int(entry.name)):
                found.append(int(entry.name))
        return found


@pytest.fixture
def flows(tmp_path):
    made: list[Flow] = []

    def make(kind: str = "linear", **kwargs) -> Flow:
        flow = Flow(tmp_path / f"f{len(made)}", kind, **kwargs)
        made.append(flow)
        return flow

    yield make
    for release in tmp_path.glob("release-*"):  # the held turns end (they would time out anyway)
        release.touch()
    for flow in made:
        flow.close()


def on_origin(flow: Flow, ref: str, path: str) -> str | None:
    try:
        return git(origin_of(flow.repo), "show", f"{ref}:{path}")
    except Exception:  # noqa: BLE001 - not there
        return None


# ----- 1. to Done across continuation turns ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "jira"])
def test_an_issue_flows_to_done_across_continuation_turns_of_one_session(flows, kind, tmp_path):
    go = tmp_path / "release-go"
    flow = flows(kind)
    todo = flow.states["todo"]
    [issue] = flow.standin.admin.seed([{"title": "Add the greeting", "state": todo, "description": fake(
        [{"write": "greeting.txt", "text": "hello\n"}, {"commit": "add the greeting"}],
        [{"wait_for": str(go), "seconds": 300}, handoff_step()])}])
    ident = issue["identifier"]

    # Turn 1 ended with the issue still active: a second turn of the same session runs.
    row = flow.until(lambda: (r := flow.running_row(ident)) is not None and r["turn_count"] == 2 and r,
                     f"/api/v1/state to show {ident} running its second turn")
    state = flow.get("/api/v1/state")
    assert STATE_KEYS <= set(state), state
    assert state["counts"] == {"running": 1, "retrying": 0} and state["retrying"] == []
    assert RUNNING_KEYS <= set(row) and TOKEN_KEYS <= set(row["tokens"]), row
    assert (row["issue_id"], row["issue_url"]) == (issue["id"], issue["url"])
    assert row["session_id"] and row["tokens"]["total_tokens"] > 0  # turn 1's usage counted
    assert {"input_tokens", "output_tokens", "total_tokens", "seconds_running"} <= set(state["codex_totals"])
    running = flow.get(f"/api/v1/{ident}")
    assert running["status"] == "running" and running["running"]["turn_count"] == 2
    go.touch()

    task = flow.reported(ident)
    sha = task["commit_sha"]
    assert sha and git(origin_of(flow.repo), "merge-base", "--is-ancestor", sha, "main") == ""
    assert on_origin(flow, "main", "greeting.txt") == "hello\n"
    view = flow.standin.admin.issue(ident)
    moves = [(h["from"], h["to"]) for h in view["history"] if h["by"] == "api"]
    assert moves == [(todo, ON_START), (ON_START, HANDOFF), (HANDOFF, ON_COMPLETE)], view["history"]
    assert view["state"] == ON_COMPLETE
    [comment] = view["comments"]  # the landing's, once
    assert f"as {sha[:7]}" in comment["body"], comment["body"]

    # Two invocations of the CLI: the template, then the continuation on --resume of that session.
    first, second = flow.calls(task["id"])
    assert "--resume" not in first["argv"]
    assert first["prompt"].startswith(f"Work on {ident}: Add the greeting\n\nFAKE: "), first["prompt"][:300]
    [session] = flow.fake_state.glob("*.json")  # the one session the first invocation began
    argv = second["argv"]
    assert "--resume" in argv and argv[argv.index("--resume") + 1] == session.stem == task["session_id"]
    assert json.loads(session.read_text())["resumes"] == 1
    assert "Continuation guidance" in second["prompt"] and "turn 2 of 4" in second["prompt"]
    assert "FAKE:" not in second["prompt"] and "Work on" not in second["prompt"]

    # Each hook once, in order, with the issue's variables; the workspace gone after landing.
    flow.until(lambda: not flow.workspace(ident).exists(), "the landed task's workspace to be removed")
    assert flow.hooks() == [f"{name} {ident}" for name in HOOKS]

    answer = flow.get(f"/api/v1/{ident}")
    assert ISSUE_KEYS <= set(answer), answer
    assert (answer["status"], answer["issue_id"], answer["running"], answer["retry"]) == (
        "completed", issue["id"], None, None)
    assert answer["workspace"]["path"] is None  # removed with the landed task
    assert answer["attempts"] == {"restart_count": 0, "current_retry_attempt": 0}
    assert answer["tracked"]["commit_sha"] == sha and answer["tracked"]["task_id"] == task["id"]
    assert answer["recent_events"] and {"at", "event", "message"} <= set(answer["recent_events"][-1])
    assert [log["label"] for log in answer["logs"]["codex_session_logs"]] == ["latest"]
    after = flow.get("/api/v1/state")
    assert after["counts"] == {"running": 0, "retrying": 0} and after["codex_totals"]["total_tokens"] > 0
    missing = flow.get("/api/v1/ENG-999", status=404)
    assert missing["error"]["code"] == "issue_not_found"


# ----- 2. a person cancels mid-run --------------------------------------------------------------------

def test_an_issue_cancelled_mid_run_stops_its_task_keeping_the_half_done_work(flows, tmp_path):
    marker = tmp_path / "cli.pid"
    flow = flows("linear")
    [issue] = flow.standin.admin.seed([{"title": "Long job", "state": "Todo", "description": fake(
        [{"write": "progress.txt", "text": "half done\n"}, {"commit": "half of it"}, {"marker": str(marker)},
         {"tick": 1500, "every": 0.2}])}])
    ident = issue["identifier"]
    task = flow.task_until(ident, "in_progress")
    cli = int(flow.until(lambda: marker.exists() and marker.read_text().strip(), "the fake CLI's pid"))
    flow.until(lambda: flow.standin.admin.issue(ident)["state"] == ON_START, f"{ident} moved to {ON_START}")
    assert flow.task_processes(task["id"])  # the scan finds the task's processes while it runs

    flow.standin.admin.move(ident, "Canceled")  # a person, in the tracker

    done = flow.task_until(ident, "cancelled")
    assert ident in done["cancel_reason"] and "Canceled" in done["cancel_reason"], done["cancel_reason"]
    flow.until(lambda: not pid_alive(cli), "the coding agent to be stopped")
    flow.until(lambda: not flow.task_processes(task["id"]), "no process of the task to be left")
    # The half-done work is on its branch, on origin; main is as it was.
    assert done["branch"] == f"task/{task['id']}"
    assert on_origin(flow, done["branch"], "progress.txt") == "half done\n"
    assert git(origin_of(flow.repo), "rev-parse", "main").strip() == flow.origin_main
    flow.until(lambda: not flow.workspace(ident).exists(), "the cancelled task's workspace to be removed")
    assert flow.hooks()[-1] == f"before_remove {ident}"
    assert flow.get(f"/api/v1/{ident}")["status"] == "cancelled"


# ----- 3. Ctrl+C ----------------------------------------------------------------------------------------

def interrupted(flows, tmp_path) -> tuple[Flow, dict, str]:
    """A flow whose agent was stopped by Ctrl+C in the middle of the first run's turn: checks
    what that leaves; returns the flow, the task and its issue's identifier."""
    marker = tmp_path / "cli.pid"
    flow = flows("linear")
    # The first run holds its turn (block_once: only the run that writes the marker); a later
    # run (a new session: Claude Code's are not resumed after a restart) goes on and hands over.
    [issue] = flow.standin.admin.seed([{"title": "Interrupted", "state": "Todo", "description": fake(
        [{"write": "progress.txt", "text": "started\n"}, {"block_once": str(marker), "seconds": 1500},
         handoff_step()])}])
    ident = issue["identifier"]
    task = flow.task_until(ident, "in_progress")
    cli = int(flow.until(lambda: marker.exists() and marker.read_text().strip(), "the fake CLI's pid"))
    assert flow.task_processes(task["id"])  # the scan finds the task's processes while it runs

    flow.agent.proc.send_signal(signal.SIGINT)
    assert flow.agent.proc.wait(timeout=WAIT) == 0, flow.explain()

    store = TaskStore(flow.repo / "data" / "dev-tasks.json")
    assert store.get(task["id"]).status is TaskStatus.pending
    assert not pid_alive(cli)
    flow.until(lambda: not flow.task_processes(task["id"]), "no process of the task to be left")
    # Kept for the next start, with what the agent wrote there.
    workspace = flow.workspace(ident)
    assert (workspace / "progress.txt").read_text() == "started\n"
    assert git(workspace, "rev-parse", "--abbrev-ref", "HEAD").strip() == f"task/{task['id']}"
    assert flow.hooks() == [f"after_create {ident}", f"before_run {ident}"]  # no after_run, no before_remove
    return flow, task, ident


def test_ctrl_c_mid_turn_exits_0_and_puts_the_task_back_keeping_its_workspace(flows, tmp_path):
    flow, task, ident = interrupted(flows, tmp_path)

    # The next start (the same command line) runs the task again in that same workspace (no
    # after_create) and lands it.
    flow.start(flow.port)
    done = flow.reported(ident)
    assert done["id"] == task["id"] and done["runs"] == 2
    assert on_origin(flow, "main", "progress.txt") == "started\n"
    flow.until(lambda: not flow.workspace(ident).exists(), "the landed task's workspace to be removed")
    assert flow.hooks() == [f"{name} {ident}" for name in ("after_create", "before_run", "before_run", "after_run",
                                                          "before_remove")]


def tool_results(flow: Flow, task_id: str, tool: str) -> list[dict]:
    events = flow.get(f"/agent/tasks/{task_id}/events?limit=5000")["events"]
    calls = {e["tool_use_id"] for e in events if e["kind"] == "tool_use" and e.get("tool_name", "").endswith(tool)}
    return [e for e in events if e["kind"] == "tool_result" and e.get("tool_use_id") in calls]


# The grant's URL was the first agent's: the runner points it at the new one (runner.retarget_grant).
def test_after_a_restart_on_another_port_the_tracker_tools_reach_the_new_agent(flows, tmp_path):
    flow, task, ident = interrupted(flows, tmp_path)
    first_port = flow.port
    flow.start()  # --port is another now
    assert flow.port != first_port
    [result] = flow.until(lambda: tool_results(flow, task["id"], "tracker_update_state"),
                          "the rerun's tracker_update_state call")
    assert result["ok"], result["text"]
    assert flow.reported(ident)["runs"] == 2


# ----- 4. live reload -------------------------------------------------------------------------------------

def test_an_invalid_edit_keeps_the_last_good_workflow_running_and_a_fix_applies(flows):
    good = "GOOD TEMPLATE for {{ issue.identifier }}\n\n{{ issue.description }}"
    flow = flows("linear", body=good)
    health = flow.get("/agent/health")["workflow"]
    assert health["state"] == "ok" and health["error"] is None
    digest = health["digest"]

    bad = flow.text("BAD TEMPLATE for {{ issue.identifier }}\n\n{{ issue.description }}").replace(
        "max_turns: 4", "max_turns: 4\n  max_turn: 3")
    assert "max_turn: 3" in bad
    flow.write(bad)
    invalid = flow.until(lambda: (w := flow.get("/agent/health")["workflow"])["state"] == "invalid" and w,
                         "/agent/health to say the edit is invalid")
    assert str(flow.path) in invalid["error"]["message"] and "agent.max_turn" in invalid["error"]["message"]
    assert "unknown key" in invalid["error"]["message"] and invalid["digest"] == digest

    # A new issue still becomes a task and runs, with the last good template.
    steps = [{"write": "one.txt", "text": "1\n"}, {"commit": "one"}, handoff_step()]
    [one] = flow.standin.admin.seed([{"title": "During the bad edit", "state": "Todo", "description": fake(steps)}])
    task = flow.reported(one["identifier"])
    [call] = flow.calls(task["id"])
    assert call["prompt"].startswith(f"GOOD TEMPLATE for {one['identifier']}\n"), call["prompt"][:300]
    assert flow.get("/agent/health")["workflow"]["state"] == "invalid"  # still said

    # Fixed: the state is ok again and the new version runs the next issue.
    flow.write(flow.text("FIXED TEMPLATE for {{ issue.identifier }}\n\n{{ issue.description }}"))
    fixed = flow.until(lambda: (w := flow.get("/agent/health")["workflow"])["state"] == "ok" and w,
                       "/agent/health to say the workflow is ok again")
    assert fixed["error"] is None and fixed["digest"] != digest
    steps = [{"write": "two.txt", "text": "2\n"}, {"commit": "two"}, handoff_step()]
    [two] = flow.standin.admin.seed([{"title": "After the fix", "state": "Todo", "description": fake(steps)}])
    task = flow.reported(two["identifier"])
    [call] = flow.calls(task["id"])
    assert call["prompt"].startswith(f"FIXED TEMPLATE for {two['identifier']}\n"), call["prompt"][:300]
    assert {"one.txt", "two.txt"} <= set(git(origin_of(flow.repo), "ls-tree", "--name-only", "main").split())
