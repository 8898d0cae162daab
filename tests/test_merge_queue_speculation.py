"""The merge queue's speculative, parallel part (issue #15): candidates are tested at the same
time, each on top of the ones ahead of it; a failure re-tests only what was stacked on it; test
runs and agents never share a TASK_PORT.

The test command is a probe: each run writes a marker (task, worktree HEAD, the files present,
TASK_PORT), then blocks until the test opens a gate. Markers that all exist while their runs
are blocked prove the runs were live at the same time, with no timing involved. A serial queue
(test, land, then test the next) would never show two of them at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from backend.models import TaskStatus
from conftest import fake_task
from support import commit_and_push, git, origin_of, wait_for
from support import wait_task_done as wait_done
from test_dispatcher import baton_says
from test_merge_queue import bulk, main_subjects

PROBE = """\
import json, os, subprocess, sys, time, uuid
marks, gate = {marks!r}, {gate!r}
head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
record = {{"task": os.environ["TASK_ID"], "port": os.environ["TASK_PORT"], "head": head, "cwd": os.getcwd(),
          "files": sorted(n for n in os.listdir(".") if n.startswith("task_") or n == "broken.txt")}}
path = os.path.join(marks, uuid.uuid4().hex + ".json")
with open(path + ".tmp", "w") as handle:
    json.dump(record, handle)
os.replace(path + ".tmp", path)  # whole or not there at all
while not os.path.exists(gate):  # the test opens the gate once it has seen what it needs
    time.sleep(0.02)
sys.exit(1 if os.path.exists("broken.txt") else 0)
"""


class Probe:
    def __init__(self, repo: Path, tmp_path: Path) -> None:
        self.marks, self.gate = tmp_path / "probe-marks", tmp_path / "tests-may-finish"
        self.marks.mkdir()
        commit_and_push(repo, {"probe.py": PROBE.format(marks=str(self.marks), gate=str(self.gate))}, "probe")
        self.command = f"{sys.executable} probe.py"

    def runs(self, task_id: str | None = None) -> list[dict]:
        """Every test run so far (oldest first), or one task's."""
        paths = sorted(self.marks.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        runs = [json.loads(p.read_text()) for p in paths]
        return [r for r in runs if task_id is None or r["task"] == task_id]

    def live(self, *task_ids: str) -> dict[str, dict]:
        """Each task's latest run, once every one of them has one (else {})."""
        latest = {r["task"]: r for r in self.runs()}
        return {t: latest[t] for t in task_ids} if all(t in latest for t in task_ids) else {}


def adds(name: str, *extra: dict, **scenario) -> dict:
    return fake_task(f"Task {name}", {"steps": [{"write": f"task_{name}.txt", "text": f"{name}\n"}, *extra,
                                                {"commit": f"task {name}"}], **scenario})


def queue_view(agent) -> dict[str, dict]:
    return {e["task_id"]: e for e in agent.client.get("/agent/dispatcher").json()["merge_queue"]}


def parent(repo: Path, sha: str) -> str:
    return git(repo, "rev-parse", f"{sha}^").strip()


def test_two_candidates_are_tested_at_once_the_second_on_top_of_the_first(agent_factory, fake_cli, repo, tmp_path):
    probe = Probe(repo, tmp_path)
    config = fake_cli.config(test_command=probe.command, max_parallel_workers=1, max_parallel_tests=2)
    agent = agent_factory(config=config, project=repo, dispatch=False)
    a, b, c = bulk(agent, [adds("a"), adds("b"), adds("c")])
    agent.client.post("/agent/dispatcher/start")
    # Both runs blocked on the gate at once: tested concurrently, not one after the other.
    live = wait_for(lambda: probe.live(a, b), what="A's and B's test runs to be live together")
    assert live[a]["files"] == ["task_a.txt"]
    assert live[b]["files"] == ["task_a.txt", "task_b.txt"]  # on top of A
    assert parent(repo, live[b]["head"]) == live[a]["head"]  # stacked on A's very candidate
    # The third is built on B but not tested: the bound of two test runs holds.
    view = wait_for(lambda: (v := queue_view(agent)).get(c, {}).get("on_top_of") == b and v,
                    what="C to be built on top of B")
    assert (view[a]["state"], view[a]["on_top_of"]) == ("testing", None)
    assert (view[b]["state"], view[b]["on_top_of"]) == ("testing", a)
    assert view[c]["state"] == "waiting" and probe.runs(c) == []
    assert agent.store.get(a).status is TaskStatus.in_progress  # nothing landed while A is tested
    probe.gate.touch()
    tasks = [wait_done(agent, i) for i in (a, b, c)]
    assert [t.status for t in tasks] == [TaskStatus.completed] * 3, [t.error_message for t in tasks]
    assert [s for s in main_subjects(repo) if s.startswith("task ")] == ["task a", "task b", "task c"]
    # What landed is exactly what was tested, and each was tested once.
    assert (tasks[0].commit_sha, tasks[1].commit_sha) == (live[a]["head"], live[b]["head"])
    assert [len(probe.runs(i)) for i in (a, b, c)] == [1, 1, 1]
    assert git(origin_of(repo), "rev-parse", "main").strip() == tasks[2].commit_sha == probe.runs(c)[0]["head"]


def test_a_failure_retests_only_what_was_stacked_on_it(agent_factory, fake_cli, repo, tmp_path):
    probe = Probe(repo, tmp_path)
    config = fake_cli.config(test_command=probe.command, max_parallel_workers=1, max_parallel_tests=3,
                             max_merge_retries=1)
    agent = agent_factory(config=config, project=repo, dispatch=False)
    fix = {"steps": [{"run": ["git", "rm", "-q", "broken.txt"]}]}
    a, b, c = bulk(agent, [adds("a"), adds("b", {"write": "broken.txt", "text": "breaks the tests\n"},
                                              on_resume=[fix]), adds("c")])
    agent.client.post("/agent/dispatcher/start")
    first = wait_for(lambda: probe.live(a, b, c), what="A, B on A and C on B tested together")
    assert parent(repo, first[b]["head"]) == first[a]["head"]
    assert parent(repo, first[c]["head"]) == first[b]["head"] and "broken.txt" in first[c]["files"]
    probe.gate.touch()
    tasks = {i: wait_done(agent, i) for i in (a, b, c)}
    assert all(t.status is TaskStatus.completed for t in tasks.values()), [t.error_message for t in tasks.values()]
    # A passed once and was never re-tested; C was re-tested on A (without B) and landed; B
    # got its feedback turn, fixed its change and landed behind C.
    assert len(probe.runs(a)) == 1
    c_runs = probe.runs(c)
    assert len(c_runs) == 2, c_runs
    assert parent(repo, c_runs[1]["head"]) == tasks[a].commit_sha == first[a]["head"]
    assert "task_b.txt" not in c_runs[1]["files"] and "broken.txt" not in c_runs[1]["files"]
    assert tasks[c].commit_sha == c_runs[1]["head"]
    b_runs = probe.runs(b)
    assert len(b_runs) == 2 and "broken.txt" not in b_runs[1]["files"], b_runs
    assert "feedback turn 1 of 1" in baton_says(agent, b)
    assert [c_["env"]["TASK_ID"] for c_ in fake_cli.calls() if "--resume" in c_["argv"]] == [b]
    assert [s for s in main_subjects(repo) if s.startswith("task ")] == ["task a", "task c", "task b"]


def test_test_runs_and_agents_never_share_a_port(agent_factory, fake_cli, repo, tmp_path):
    probe = Probe(repo, tmp_path)
    agent_started, agent_gate = tmp_path / "c-agent-started", tmp_path / "c-agent-may-finish"
    config = fake_cli.config(test_command=probe.command, max_parallel_workers=1, max_parallel_tests=2)
    agent = agent_factory(config=config, project=repo, dispatch=False)
    a, b, c = bulk(agent, [adds("a"), adds("b"), adds("c", {"marker": str(agent_started)},
                                                    {"wait_for": str(agent_gate), "seconds": 60})])
    agent.client.post("/agent/dispatcher/start")
    # Two test runs and C's agent, all live at once (each blocked on its gate).
    live = wait_for(lambda: agent_started.exists() and probe.live(a, b), what="two test runs and an agent live")
    agent_port = [call["env"]["TASK_PORT"] for call in fake_cli.calls() if call["env"]["TASK_ID"] == c]
    assert len(agent_port) == 1
    ports = [live[a]["port"], live[b]["port"], agent_port[0]]
    assert len(set(ports)) == 3, ports
    in_use = agent.client.get("/agent/dispatcher").json()["ports_in_use"]
    assert {p: in_use.get(p) for p in ports} == {live[a]["port"]: f"tests:{a}", live[b]["port"]: f"tests:{b}",
                                                agent_port[0]: c}
    probe.gate.touch()
    agent_gate.touch()
    tasks = [wait_done(agent, i) for i in (a, b, c)]
    assert [t.status for t in tasks] == [TaskStatus.completed] * 3, [t.error_message for t in tasks]
