"""Merge queue edge cases (issue #15): a cancel that meets a landing already under way; the
coordinator meeting a test run that reports at the same moment."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import httpx

from backend.config import AgentConfig
from backend.dispatcher.mergequeue import Entry, MergeQueue
from backend.dispatcher.process import StopRequest
from backend.dispatcher.workspace import ProjectGit
from backend.models import TaskStatus
from conftest import fake_task
from support import git, make_repo, origin_of, wait_for
from support import submit_task as submit, wait_task_done as wait_done
from test_dispatcher import baton_says


def test_a_cancel_during_the_landing_push_leaves_the_task_completed(agent_factory, fake_cli, repo, tmp_path):
    # The origin holds the landing push until the cancel has reached the run: the landing was
    # under way, so it counts (README: cancel), and nothing of the cancel path may follow it.
    origin = origin_of(repo)
    pushing, gate = tmp_path / "pushing", tmp_path / "gate"
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\ntouch '{pushing}'\n"
                    f"while [ ! -e '{gate}' ]; do sleep 0.02; done\n")
    hook.chmod(0o755)
    agent = agent_factory(config=fake_cli.config(), project=repo, dispatch=True)
    task_id = submit(agent, fake_task("Lands", {"steps": [{"write": "l.txt", "text": "l\n"}]}))
    wait_for(pushing.exists, what="the landing push to reach the origin")
    run = agent.app.state.dispatcher._runs[task_id]
    answers: list[httpx.Response] = []
    canceller = threading.Thread(target=lambda: answers.append(
        httpx.post(f"{agent.url}/agent/tasks/{task_id}/cancel", timeout=30)))
    canceller.start()
    wait_for(run.stop.is_set, what="the cancel to reach the run")
    gate.touch()
    canceller.join(30)
    task = wait_done(agent, task_id)
    assert task.status is TaskStatus.completed and task.commit_sha == git(origin, "rev-parse", "main").strip()
    assert answers and answers[0].json()["status"] == "completed", answers
    wait_for(run.finished.is_set, what="the run to end")
    wait_for(lambda: not git(repo, "branch", "--list", f"task/{task_id}").strip(), what="the landed branch deleted")
    assert "stopped: cancelled" not in baton_says(agent, task_id)
    assert git(origin, "for-each-ref", "refs/heads/task/").strip() == ""  # no "cancelled" copy pushed


# ----- the coordinator meets a test run that reports at that very moment ------------------------
#
# A test thread reports (state set, test_stop dropped) under the queue's lock whenever its run
# ends, so between two looks the coordinator takes *without* that lock, the report may land.
# This entry replays that interleaving deterministically: once the coordinator has found it
# "testing" without the lock, its report lands just before the coordinator's next lock-free
# read of test_stop. (On a loaded machine this happens now and then; the crash ended the round
# and ejected an innocent task with `internal`.)

class LooksTesting(str):
    def __new__(cls, entry):
        obj = super().__new__(cls, "testing")
        obj.entry = entry
        return obj

    def __eq__(self, other):
        if other == "testing" and not self.entry.queue._cond._is_owned():
            self.entry.report_pending = True
        return str.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = str.__hash__


class ReportsBetweenLooks(Entry):
    queue = None
    report_pending = False

    @property
    def state(self):
        return self.__dict__["_state"]

    @state.setter
    def state(self, value) -> None:
        self.__dict__["_state"] = value

    @property
    def test_stop(self):
        if self.report_pending and not self.queue._cond._is_owned():
            self.report_pending = False
            with self.queue._cond:  # what MergeQueue._test does when the run ends
                self.__dict__["_state"], self.__dict__["_stop"] = "passed", None
        return self.__dict__.get("_stop")

    @test_stop.setter
    def test_stop(self, value) -> None:
        self.__dict__["_stop"] = value


def test_rebuilding_behind_a_test_run_that_just_reported_does_not_crash_the_round():
    queue = MergeQueue(SimpleNamespace(git=None))
    queue._base = "2" * 40  # the entry's candidate was built on something else: it must be rebuilt
    run = SimpleNamespace(task=SimpleNamespace(id="t1", title="t1"))
    entry = ReportsBetweenLooks(run=run, seq=0, built_on="1" * 40, safe=("", ""), candidate="3" * 40)
    entry.queue, entry.test_stop = queue, StopRequest()
    entry.state = LooksTesting(entry)
    queue._entries.append(entry)
    assert queue._build_chain([entry]) == []  # it waits for its test thread's report (a new round)


def test_a_branch_left_on_an_unlanded_candidate_is_put_back_when_the_queue_has_no_base_view(tmp_path):
    # A round that finds only withdrawn entries forgets the queue's base (`_base = None`); an
    # entry stacked on another task's candidate that leaves right after (its test run stopped
    # for a shutdown or a cancel) must still go back onto landed history, or its branch keeps
    # the other task's unlanded commits (and a cancel pushes them).
    repo = make_repo(tmp_path)
    project_git = ProjectGit(repo, AgentConfig(base_branch="main"))
    landed = git(repo, "rev-parse", "main").strip()
    other = git(repo, "commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "another task's candidate").strip()
    resets: list[str] = []
    run = SimpleNamespace(task=SimpleNamespace(id="t1", title="t1"), ws=SimpleNamespace(reset_branch=resets.append))
    queue = MergeQueue(SimpleNamespace(git=project_git))
    entry = Entry(run=run, seq=0, built_on=other, safe=(landed, landed))
    queue._restore_safe(entry)
    assert resets == [landed] and entry.built_on == landed
