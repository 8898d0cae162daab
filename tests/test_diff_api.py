"""GET /agent/tasks/{id}/diff on a real agent (uvicorn, real repository, the fake Claude CLI):
the branch range of a failed task whose branch is kept, the landed range of a completed task,
the review range, and the errors."""

from __future__ import annotations

import os
from pathlib import Path

from backend.models import NewTask, Owner, TaskStatus
from conftest import fake_task
from support import git, wait_for, submit_task as submit, wait_task_done as wait_done

OWNER = Owner(pid=os.getpid(), host="test", instance="diff")


def rev(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref).strip()


def test_a_failed_task_shows_its_kept_branch_since_it_left_main(agent_factory, fake_cli) -> None:
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    project = agent.settings.project_dir
    left_at = rev(project, "main")
    task = wait_done(agent, submit(agent, fake_task("Half done", {
        "steps": [{"write": "notes/work in progress.txt", "text": "first line\nsecond line\n"},
                  {"write": "README.md", "text": "# demo\nchanged by the agent\n"}],
        "result": "error_during_execution"})))
    assert task.status is TaskStatus.failed, task.error_message
    answer = agent.client.get(f"/agent/tasks/{task.id}/diff", params={"context": 0})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["range"], body["base"], body["head"]) == ("branch", left_at, rev(project, f"task/{task.id}"))
    files = {f["path"]: f for f in body["files"]}
    assert set(files) == {"notes/work in progress.txt", "README.md"}
    assert [(l["kind"], l["new"], l["text"]) for l in files["notes/work in progress.txt"]["hunks"][0]["lines"]] == \
        [("add", 1, "first line"), ("add", 2, "second line")]
    assert [(l["kind"], l["old"], l["new"], l["text"]) for l in files["README.md"]["hunks"][0]["lines"]] == \
        [("add", None, 2, "changed by the agent")]
    assert body["stats"] == {"files": 2, "additions": 3, "deletions": 0}
    assert body["truncated"] is False


def test_a_completed_task_shows_what_it_landed(agent_factory, fake_cli) -> None:
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    project = agent.settings.project_dir
    before = rev(project, "main")
    task = wait_done(agent, submit(agent, fake_task("Lands", {"steps": [{"write": "landed.txt", "text": "in\n"}]})))
    assert task.status is TaskStatus.completed and task.commit_sha, task.error_message
    if task.base_sha is None:  # recorded by landing (issue #11); set here where it is not yet
        agent.store.update(task.id, base_sha=before)
    # The branch is gone once landed: only the recorded commits can answer.
    wait_for(lambda: git(project, "branch", "--list", f"task/{task.id}").strip() == "",
             what="the landed branch to be deleted")
    body = agent.client.get(f"/agent/tasks/{task.id}/diff").json()
    assert (body["range"], body["base"], body["head"]) == ("landed", before, task.commit_sha)
    assert [(f["path"], f["status"], f["additions"]) for f in body["files"]] == [("landed.txt", "added", 1)]


def test_a_task_in_review_shows_the_tested_commit_on_its_base(agent_factory) -> None:
    agent = agent_factory()
    project = agent.settings.project_dir
    base = rev(project, "main")
    git(project, "checkout", "-q", "-b", "elsewhere")
    (project / "reviewed.txt").write_text("look at me\n")
    git(project, "add", "reviewed.txt")
    git(project, "commit", "-q", "-m", "tested work")
    tested = rev(project, "HEAD")
    task = agent.store.create(NewTask(title="waits for a person", landing="review"))
    agent.store.claim(OWNER, 60, task.id)
    agent.store.transition(task.id, TaskStatus.review, review_sha=tested, review_base=base)
    body = agent.client.get(f"/agent/tasks/{task.id}/diff").json()
    assert (body["range"], body["base"], body["head"]) == ("review", base, tested)
    assert [f["path"] for f in body["files"]] == ["reviewed.txt"]


def test_errors_use_the_one_shape(agent_factory) -> None:
    agent = agent_factory()
    pending = agent.client.post("/agent/tasks", json={"title": "not started"}).json()["id"]
    no_branch = agent.client.get(f"/agent/tasks/{pending}/diff")
    assert no_branch.status_code == 404
    assert no_branch.json()["error"]["code"] == "no_diff"
    assert f"task/{pending}" in no_branch.json()["error"]["message"]
    unknown = agent.client.get("/agent/tasks/nosuchtask/diff")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    bad_id = agent.client.get("/agent/tasks/Not_An_Id/diff")
    assert (bad_id.status_code, bad_id.json()["error"]["code"]) == (400, "invalid_id")
    for context in (-1, 21, "x"):
        bad = agent.client.get(f"/agent/tasks/{pending}/diff", params={"context": context})
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "validation_error"), context


def test_the_diff_is_documented_in_openapi(agent_factory) -> None:
    agent = agent_factory()
    op = agent.client.get("/openapi.json").json()["paths"]["/agent/tasks/{task_id}/diff"]["get"]
    assert {p["name"] for p in op["parameters"]} == {"task_id", "context"}
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Diff")
