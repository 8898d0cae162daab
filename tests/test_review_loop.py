"""landing: review end to end with the fake CLI: nothing lands that a person did not approve;
changes requested go back to the same session and come back for review."""

from __future__ import annotations

from backend.models import TaskStatus
from conftest import fake_task
from support import commit_and_push, git, origin_of, submit_task, task_events, wait_for


def wait_status(agent, task_id: str, *statuses: TaskStatus, timeout: float = 60):
    return wait_for(lambda: (t := agent.store.get(task_id)).status in statuses and t, timeout=timeout,
                    what=f"task {task_id} to be {' or '.join(s.value for s in statuses)}")


def calls_of(fake_cli, task_id: str) -> list[dict]:
    return [c for c in fake_cli.calls() if c["env"]["TASK_ID"] == task_id]


def main_of(agent) -> str:
    return git(origin_of(agent.settings.project_dir), "rev-parse", "main").strip()


def push_elsewhere(agent, files: dict[str, str], message: str) -> str:
    """Someone else's commit lands on origin's main meanwhile: the new main."""
    other = agent.settings.project_dir.parent / "elsewhere"
    git(agent.settings.project_dir.parent, "clone", "-q", str(origin_of(agent.settings.project_dir)), str(other))
    commit_and_push(other, files, message)
    return main_of(agent)


HELLO = {"steps": [{"write": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}],
         "on_resume": [{"steps": [{"append": "hello.txt", "text": "and welcome\n"}, {"commit": "review: welcome"}]}]}


def test_review_waits_for_approval_and_changes_requested_reach_the_same_session(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(landing="review", test_command="test -f hello.txt"), dispatch=True)
    before = main_of(agent)
    task_id = submit_task(agent, fake_task("Say hello", HELLO))

    task = wait_status(agent, task_id, TaskStatus.review, TaskStatus.failed)
    assert task.status is TaskStatus.review, task.error_message
    assert main_of(agent) == before, "nothing lands before a person approves"
    assert task.review_base == before and git(agent.settings.project_dir, "rev-parse", f"task/{task_id}").strip() == task.review_sha
    assert not (agent.settings.project_dir / "worktrees" / task_id).exists()
    diff = agent.client.get(f"/agent/tasks/{task_id}/diff").json()
    assert [f["path"] for f in diff["files"]] == ["hello.txt"] and diff["head"] == task.review_sha

    # Approving a commit other than the one waiting is refused, and changes nothing.
    stale = agent.client.post(f"/agent/tasks/{task_id}/approve", json={"sha": "0" * 40})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_review"
    assert agent.store.get(task_id).status is TaskStatus.review

    first_session = task.session_id
    sent = agent.client.post(f"/agent/tasks/{task_id}/request-changes", json={
        "text": "Please welcome them too.",
        "comments": [{"path": "hello.txt", "line": 1, "text": "add a welcome line below"}]})
    assert sent.status_code == 200, sent.text
    task = wait_status(agent, task_id, TaskStatus.review, TaskStatus.failed)
    wait_for(lambda: len(calls_of(fake_cli, task_id)) == 2 and agent.store.get(task_id).status is TaskStatus.review,
             what="the second turn")
    assert task.status is TaskStatus.review, task.error_message
    second = calls_of(fake_cli, task_id)[1]
    assert second["argv"][second["argv"].index("--resume") + 1] == first_session  # the same session
    assert "Please welcome them too." in second["prompt"] and "hello.txt line 1: add a welcome line below" in second["prompt"]
    assert main_of(agent) == before
    assert git(agent.settings.project_dir, "show", f"{task.review_sha}:hello.txt") == "hi\nand welcome\n"

    approved = agent.client.post(f"/agent/tasks/{task_id}/approve", json={"sha": task.review_sha})
    assert approved.status_code == 200, approved.text
    task = wait_status(agent, task_id, TaskStatus.completed, TaskStatus.failed)
    assert task.status is TaskStatus.completed, task.error_message
    assert main_of(agent) == task.commit_sha == task.review_sha or git(
        origin_of(agent.settings.project_dir), "show", "main:hello.txt") == "hi\nand welcome\n"
    assert git(origin_of(agent.settings.project_dir), "show", "main:hello.txt") == "hi\nand welcome\n"
    assert len(calls_of(fake_cli, task_id)) == 2, "approving runs no agent turn"
    # The person's words are in the transcript, where they happened.
    human = [e for e in task_events(agent, task_id) if e["kind"] == "human"]
    assert [e["subtype"] for e in human] == ["changes", "approved"]
    assert human[0]["comments"][0]["path"] == "hello.txt"


def test_an_approved_task_is_rebased_and_tested_again_when_the_base_moved(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(landing="review", test_command="test -f hello.txt"), dispatch=True)
    task_id = submit_task(agent, fake_task("Say hello", HELLO))
    task = wait_status(agent, task_id, TaskStatus.review, TaskStatus.failed)
    assert task.status is TaskStatus.review, task.error_message
    moved = push_elsewhere(agent, {"other.txt": "someone else\n"}, "someone else's work")

    assert agent.client.post(f"/agent/tasks/{task_id}/approve", json={"sha": task.review_sha}).status_code == 200
    task = wait_status(agent, task_id, TaskStatus.completed, TaskStatus.failed)
    assert task.status is TaskStatus.completed, task.error_message
    assert git(origin_of(agent.settings.project_dir), "rev-parse", "main~1").strip() == moved
    assert main_of(agent) == task.commit_sha != task.review_sha
    assert "running tests" in "\n".join(e.get("text", "") for e in task_events(agent, task_id))


def test_reject_cancels_and_keeps_the_branch(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(landing="review"), dispatch=True)
    before = main_of(agent)
    task_id = submit_task(agent, fake_task("Say hello", HELLO))
    task = wait_status(agent, task_id, TaskStatus.review, TaskStatus.failed)
    rejected = agent.client.post(f"/agent/tasks/{task_id}/reject", json={"reason": "not needed"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "cancelled"
    assert "not needed" in rejected.json()["error_message"]
    assert git(agent.settings.project_dir, "rev-parse", f"task/{task_id}").strip() == task.review_sha
    assert main_of(agent) == before
    again = agent.client.post(f"/agent/tasks/{task_id}/approve", json={})
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_transition"


def test_a_task_may_choose_review_in_an_auto_project(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    before = main_of(agent)
    task_id = submit_task(agent, fake_task("Say hello", HELLO, landing="review"))
    assert wait_status(agent, task_id, TaskStatus.review, TaskStatus.failed).status is TaskStatus.review
    assert main_of(agent) == before


def test_an_approved_task_that_needs_a_fix_to_land_comes_back_to_review(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config(landing="review"), dispatch=True)
    task_id = submit_task(agent, fake_task("Say hello", {
        "steps": [{"write": "hello.txt", "text": "mine\n"}, {"commit": "feature: hello"}],
        "on_resume": [{"steps": [{"rebase_resolve": {"hello.txt": "theirs and mine\n"}}]}]}))
    task = wait_status(agent, task_id, TaskStatus.review, TaskStatus.failed)
    assert task.status is TaskStatus.review, task.error_message
    moved = push_elsewhere(agent, {"hello.txt": "theirs\n"}, "a conflicting change")

    assert agent.client.post(f"/agent/tasks/{task_id}/approve", json={"sha": task.review_sha}).status_code == 200
    wait_for(lambda: len(calls_of(fake_cli, task_id)) == 2, what="the conflict's fix turn")
    task = wait_status(agent, task_id, TaskStatus.review, TaskStatus.completed, TaskStatus.failed)
    assert task.status is TaskStatus.review, task.error_message
    assert main_of(agent) == moved, "the fixed work was not approved: it must not land"
    assert task.review_base == moved
    assert git(agent.settings.project_dir, "show", f"{task.review_sha}:hello.txt") == "theirs and mine\n"


def test_a_message_to_a_running_task_is_read_at_its_next_turn(agent_factory, fake_cli, tmp_path):
    gate = tmp_path / "go"
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    task_id = submit_task(agent, fake_task("Long one", {
        "steps": [{"write": "a.txt", "text": "a\n"}, {"wait_for": str(gate), "seconds": 30}, {"commit": "a"}],
        "on_resume": [{"steps": [{"write": "b.txt", "text": "b\n"}, {"commit": "b"}]}]}))
    wait_status(agent, task_id, TaskStatus.in_progress)
    wait_for(lambda: calls_of(fake_cli, task_id), what="the agent to start")
    sent = agent.client.post(f"/agent/tasks/{task_id}/messages", json={"text": "Also add b.txt"})
    assert sent.status_code == 202 and sent.json()["delivery"] == "queued"
    assert agent.store.get(task_id).inbox[0].text == "Also add b.txt"
    gate.touch()
    task = wait_status(agent, task_id, TaskStatus.completed, TaskStatus.failed)
    assert task.status is TaskStatus.completed, task.error_message
    first, second = calls_of(fake_cli, task_id)
    assert "--resume" in second["argv"] and "Also add b.txt" in second["prompt"]
    files = set(git(origin_of(agent.settings.project_dir), "ls-tree", "--name-only", "main").split())
    assert {"a.txt", "b.txt"} <= files and task.inbox == []


def test_a_message_to_a_completed_task_starts_a_new_run_from_main(agent_factory, fake_cli):
    """Its branch and its runtime's state went with the landing: a new session from the current
    base branch, given the whole context (the task, that its work landed, the message)."""
    agent = agent_factory(config=fake_cli.config(), dispatch=True)
    task_id = submit_task(agent, fake_task("Say hello", {"steps": [
        {"append": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}]}))
    done = wait_status(agent, task_id, TaskStatus.completed, TaskStatus.failed)
    assert done.status is TaskStatus.completed, done.error_message
    wait_for(lambda: git(agent.settings.project_dir, "branch", "--list", f"task/{task_id}").strip() == "",
             what="the landed branch to go")
    sent = agent.client.post(f"/agent/tasks/{task_id}/messages", json={"text": "Now say it twice"})
    assert sent.status_code == 202 and sent.json()["delivery"] == "started"
    wait_for(lambda: len(calls_of(fake_cli, task_id)) == 2, what="the follow-up run")
    task = wait_status(agent, task_id, TaskStatus.completed, TaskStatus.failed)
    assert task.status is TaskStatus.completed, task.error_message
    second = calls_of(fake_cli, task_id)[1]
    assert "--resume" not in second["argv"]
    assert "Now say it twice" in second["prompt"] and "already landed" in second["prompt"] and "FAKE:" in second["prompt"]
    assert git(origin_of(agent.settings.project_dir), "show", "main:hello.txt") == "hi\nhi\n"
    assert task.runs == 2 and task.commit_sha == main_of(agent)


def test_messages_are_refused_clearly(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config())
    task_id = submit_task(agent, {"title": "Waiting"})
    empty = agent.client.post(f"/agent/tasks/{task_id}/messages", json={"text": "  "})
    assert empty.status_code == 422
    for n in range(20):
        assert agent.client.post(f"/agent/tasks/{task_id}/messages", json={"text": f"m{n}"}).status_code == 202
    full = agent.client.post(f"/agent/tasks/{task_id}/messages", json={"text": "one too many"})
    assert full.status_code == 409 and full.json()["error"]["code"] == "inbox_full"
    assert len(agent.store.get(task_id).inbox) == 20
    unknown = agent.client.post("/agent/tasks/nosuchtask/messages", json={"text": "hi"})
    assert unknown.status_code == 404


def test_an_approval_of_another_commit_than_the_branch_holds_goes_back_to_review(agent_factory, fake_cli):
    """E.g. a landing interrupted after its rebase: no agent turn, nothing lands, the branch as
    it is now is tested and offered for review again."""
    agent = agent_factory(config=fake_cli.config(landing="review"), dispatch=True)
    before = main_of(agent)
    task_id = submit_task(agent, fake_task("Say hello", HELLO))
    task = wait_status(agent, task_id, TaskStatus.review, TaskStatus.failed)
    assert agent.client.post("/agent/dispatcher/stop").status_code == 200
    assert agent.client.post(f"/agent/tasks/{task_id}/approve", json={"sha": task.review_sha}).status_code == 200
    project = agent.settings.project_dir
    git(project, "worktree", "add", "-q", str(project.parent / "moved"), f"task/{task_id}")
    (project.parent / "moved" / "extra.txt").write_text("not reviewed\n")
    git(project.parent / "moved", "add", "extra.txt")
    git(project.parent / "moved", "commit", "-q", "-m", "not reviewed")
    git(project, "worktree", "remove", str(project.parent / "moved"))
    moved = git(project, "rev-parse", f"task/{task_id}").strip()

    assert agent.client.post("/agent/dispatcher/start").status_code == 200
    wait_for(lambda: agent.store.get(task_id).runs == 2, what="the landing run")
    task = wait_status(agent, task_id, TaskStatus.review, TaskStatus.completed, TaskStatus.failed)
    assert task.status is TaskStatus.review and task.review_sha == moved and task.approved_sha is None
    assert main_of(agent) == before
    assert len(calls_of(fake_cli, task_id)) == 1, "no agent turn"
