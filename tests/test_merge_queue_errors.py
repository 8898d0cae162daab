"""An unexpected error in a merge queue round fails the task the round was working on, not
whichever task happens to be first in the queue (issue #15 review)."""

from __future__ import annotations

import sys

from backend.models import TaskStatus
from conftest import fake_task
from support import commit_and_push, wait_for
from support import wait_task_done as wait_done
from test_dispatcher import baton_says
from test_merge_queue import bulk, main_subjects

# The project's own pre-rebase hook refuses to rebase a branch holding poison.txt: for Baton
# that is a rebase failing without a conflict, on exactly one task, every time.
PRE_REBASE = "#!/bin/sh\nif git cat-file -e HEAD:poison.txt 2>/dev/null; then\n" \
             "    echo 'poison.txt may not be rebased' >&2\n    exit 1\nfi\n"


def test_a_rebase_error_fails_only_the_task_being_rebased(agent_factory, fake_cli, repo, tmp_path):
    gate = tmp_path / "tests-may-finish"
    commit_and_push(repo, {"gated.py": f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n"
                                       "    time.sleep(0.02)\n"}, "gated tests")
    hook = repo / ".git" / "hooks" / "pre-rebase"
    hook.write_text(PRE_REBASE)
    hook.chmod(0o755)
    # One test run at a time: while A is tested, B waits (built on A) ahead of C, so B is the
    # first entry not being tested when C's rebase onto B fails.
    config = fake_cli.config(test_command=f"{sys.executable} gated.py", max_parallel_workers=1,
                             max_parallel_tests=1, max_merge_retries=1)
    agent = agent_factory(config=config, project=repo, dispatch=False)

    def task(name: str, *extra: dict) -> dict:
        return fake_task(f"Task {name}", {"steps": [{"write": f"{name}.txt", "text": f"{name}\n"}, *extra,
                                                    {"commit": f"task {name}"}]})

    a, b, c = bulk(agent, [task("a"), task("b"), task("c", {"write": "poison.txt", "text": "x\n"})])
    agent.client.post("/agent/dispatcher/start")
    culprit = wait_done(agent, c)  # while A's tests are still held at the gate
    innocent = agent.store.get(b)
    assert innocent.status is TaskStatus.in_progress, innocent.error_message  # it keeps its place
    assert culprit.status is TaskStatus.failed and culprit.error_reason == "internal"
    assert "pre-rebase hook refused" in culprit.error_message, culprit.error_message
    view = {e["task_id"]: e for e in agent.client.get("/agent/dispatcher").json()["merge_queue"]}
    assert view[a]["state"] == "testing" and view[b]["on_top_of"] == a and c not in view
    gate.touch()
    tasks = [wait_done(agent, i) for i in (a, b)]
    assert [t.status for t in tasks] == [TaskStatus.completed] * 2, [t.error_message for t in tasks]
    assert [s for s in main_subjects(repo) if s.startswith("task ")] == ["task a", "task b"]
    assert "failed (internal)" in baton_says(agent, c) and "failed" not in baton_says(agent, b)
    wait_for(lambda: not agent.client.get("/agent/dispatcher").json()["merge_queue"], what="the queue to empty")
