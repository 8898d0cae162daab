"""Tasks on the Codex runtime end to end: the real agent app and dispatcher, real git, and
tests/fakes/fake_codex.py speaking `codex app-server`'s JSON-RPC."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.models import TaskStatus
from conftest import fake_task
from runtimes.runtime_fakes import RuntimeFake, make_fake
from support import (BREAK_THEN_FIX, add_status_check, git, origin_of, pid_alive, submit_task, task_events, wait_for,
                     wait_task_done)


@pytest.fixture
def fake_codex(tmp_path: Path, monkeypatch) -> RuntimeFake:
    return make_fake("codex", tmp_path, monkeypatch)


def received(fake: RuntimeFake, method: str) -> list[dict]:
    """The JSON-RPC messages with this method that Baton sent the fake."""
    return [e["received"] for e in fake.entries() if e.get("received", {}).get("method") == method]


# ----- landing --------------------------------------------------------------------------------


def test_success_lands_a_commit_with_estimated_cost_and_tokens(agent_factory, fake_codex):
    agent = agent_factory(config=fake_codex.config(), dispatch=True)
    task_id = submit_task(agent, fake_task("Add hello", {"steps": [
        {"write": "hello.txt", "text": "hi\n"}, {"commit": "feature: hello"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    origin = origin_of(agent.settings.project_dir)
    assert git(origin, "show", "main:hello.txt") == "hi\n" and git(origin, "rev-parse", "main").strip() == task.commit_sha
    (call,) = fake_codex.calls()
    assert task.agent_runtime == "codex" and task.agent_model == "gpt-5.5" and task.session_id == call["thread"]
    # Three model requests (write, commit, final message) of 1000 input (200 cached) and 50 output.
    assert (task.input_tokens, task.cache_read_tokens, task.output_tokens) == (3000, 600, 150)
    assert task.cost_usd == pytest.approx((2400 * 5.00 + 600 * 0.50 + 150 * 30.00) / 1e6)  # gpt-5.5's list price
    assert task.cost_estimated is True
    shown = agent.client.get(f"/agent/tasks/completed/{task_id}").json()
    assert shown["cost_estimated"] is True and shown["cost_usd"] == pytest.approx(task.cost_usd)
    kinds = [e["kind"] for e in task_events(agent, task_id)]
    assert kinds.index("session_started") < kinds.index("tool_use") < kinds.index("result")
    # The conversation was the documented one, and it ended by closing stdin.
    assert [m for m in ("initialize", "thread/start", "turn/start") if received(fake_codex, m)] == [
        "initialize", "thread/start", "turn/start"]
    assert received(fake_codex, "thread/start")[0]["params"]["cwd"] == str(agent.settings.project_dir / "worktrees" / task_id)


def test_config_overrides_and_extra_args_reach_the_command_line_exactly(agent_factory, fake_codex):
    codex = {"config": {"model_provider": "standin", "model_providers.standin.base_url": "http://127.0.0.1:9/v1",
                        "model_providers.standin.wire_api": "responses", "request_max_retries": 0,
                        "sandbox_permissions": ["disk-full-read-access"], "tools": {"web_search": False}},
             "extra_args": ["--enable", "unified_exec"], "model": "gpt-5.4"}
    agent = agent_factory(config=fake_codex.config(section=codex), dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Configured", {"steps": []})))
    assert task.status is TaskStatus.completed, task.error_message
    (call,) = fake_codex.calls()
    assert call["argv"] == [
        "app-server",
        "-c", 'model_provider="standin"',
        "-c", 'model_providers.standin.base_url="http://127.0.0.1:9/v1"',
        "-c", 'model_providers.standin.wire_api="responses"',
        "-c", "request_max_retries=0",
        "-c", 'sandbox_permissions=["disk-full-read-access"]',
        "-c", "tools={web_search = false}",
        "--enable", "unified_exec",
    ]
    # Codex read each value as the TOML it was meant to be.
    assert call["config"] == {"model_provider": "standin", "model_providers.standin.base_url": "http://127.0.0.1:9/v1",
                              "model_providers.standin.wire_api": "responses", "request_max_retries": 0,
                              "sandbox_permissions": ["disk-full-read-access"], "tools": {"web_search": False}}
    assert received(fake_codex, "thread/start")[0]["params"]["model"] == "gpt-5.4"
    assert task.agent_model == "gpt-5.4"


def test_isolated_home_lives_outside_the_worktree(agent_factory, fake_codex):
    agent = agent_factory(config=fake_codex.config(section={"isolated_home": True}), dispatch=True)
    task_id = submit_task(agent, fake_task("Isolated", {"steps": [{"write": "a.txt", "text": "a\n"}]}))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    (call,) = fake_codex.calls()
    home = Path(call["env"]["CODEX_HOME"])
    assert home == agent.settings.project_dir / "logs" / f"{task_id}.runtime" / "codex-home"
    assert agent.settings.project_dir / "worktrees" not in home.parents
    # Gone with the landed task (a failed one keeps it, so a rerun can resume the thread).
    wait_for(lambda: not home.exists(), what="the task's codex home to be removed")
    assert git(origin_of(agent.settings.project_dir), "show", "--stat", "--format=", "main").count("|") == 1  # a.txt only


# ----- approvals ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["command", "file_change"])
def test_an_approval_the_policy_does_not_allow_fails_the_task(agent_factory, fake_codex, kind):
    agent = agent_factory(config=fake_codex.config(), dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Needs approval", {"approval": kind})))
    assert task.status is TaskStatus.failed and task.error_reason == "approval_required"
    assert f"codex.approve: [{kind}]" in task.error_message
    (answer,) = [e["received"] for e in fake_codex.entries()
                 if "received" in e and "result" in e["received"] and "decision" in e["received"]["result"]]
    assert answer["result"]["decision"] == "decline"


def test_an_allowed_approval_is_accepted_and_the_work_lands(agent_factory, fake_codex):
    agent = agent_factory(config=fake_codex.config(section={"approve": ["file_change"]}), dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Approved", {"approval": "file_change"})))
    assert task.status is TaskStatus.completed, task.error_message
    assert git(origin_of(agent.settings.project_dir), "show", "main:approved.txt") == "approved file_change\n"


def test_a_request_for_user_input_fails_the_task_at_once(agent_factory, fake_codex):
    agent = agent_factory(config=fake_codex.config(section={"approve": ["command", "file_change"]}), dispatch=True)
    task = wait_task_done(agent, submit_task(agent, fake_task("Asks a question", {
        "request": "item/tool/requestUserInput", "hang_until_interrupt": True})))
    assert task.status is TaskStatus.failed and task.error_reason == "approval_required"
    assert "item/tool/requestUserInput" in task.error_message
    (answered,) = [e["answered"] for e in fake_codex.entries() if "answered" in e]
    assert answered["error"]["code"] == -32601


# ----- cancel ---------------------------------------------------------------------------------


def test_cancel_interrupts_the_turn_first_then_stops_everything(agent_factory, fake_codex):
    agent = agent_factory(config=fake_codex.config(), dispatch=True)
    task_id = submit_task(agent, fake_task("Hangs", {"steps": [{"write": "partial.txt", "text": "started\n"}],
                                                "hang_until_interrupt": True}))
    wait_for(lambda: any(e["kind"] == "assistant_text" for e in task_events(agent, task_id)), timeout=30,
             what="the turn to be under way")
    (call,) = fake_codex.calls()
    resp = agent.client.post(f"/agent/tasks/{task_id}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"  # the API waits at most 5 s
    (interrupt,) = received(fake_codex, "turn/interrupt")
    assert interrupt["params"]["threadId"] == call["thread"]
    assert not pid_alive(call["pid"])
    project = agent.settings.project_dir
    assert git(project, "show", f"task/{task_id}:partial.txt") == "started\n"
    # Codex ended the turn itself when asked.
    results = [e for e in task_events(agent, task_id) if e["kind"] == "result"]
    assert [r["subtype"] for r in results] == ["interrupted"]


# ----- continuing the thread ------------------------------------------------------------------


def test_failing_tests_get_a_feedback_turn_on_the_same_thread(agent_factory, fake_codex, repo):
    agent = agent_factory(config=fake_codex.config(test_command=add_status_check(repo)), project=repo, dispatch=True)
    task_id = submit_task(agent, fake_task("Break then fix", BREAK_THEN_FIX))
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    first, second = fake_codex.calls()
    (resume,) = received(fake_codex, "thread/resume")
    assert resume["params"]["threadId"] == first["thread"] == second["resume"] == task.session_id
    assert "status is 'broken'" in second["prompt"]
    assert git(origin_of(repo), "show", "main:status.txt") == "fixed\n"
    # Both turns counted, each only once: 3 requests, then 3 more on the resumed thread.
    assert (task.input_tokens, task.output_tokens) == (6000, 300)


def _stopped_mid_task(agent, fake_codex, tmp_path, on_resume: list[dict]) -> tuple[str, dict]:
    marker = tmp_path / "blocked"
    task_id = submit_task(agent, fake_task("Interrupted", {
        "steps": [{"write": "first.txt", "text": "1\n"}, {"commit": "first part"},
                  {"block_once": str(marker), "seconds": 120}, {"write": "second.txt", "text": "2\n"}],
        "on_resume": on_resume}))
    wait_for(marker.exists, timeout=30, what="the agent to start")
    status = agent.client.post("/agent/dispatcher/stop", params={"force": "true"}).json()
    assert status["state"] == "stopped"
    task = agent.store.get(task_id)
    assert task.status is TaskStatus.pending
    (first,) = fake_codex.calls()
    assert task.session_id == first["thread"]
    return task_id, first


def test_a_restarted_task_resumes_its_thread(agent_factory, fake_codex, tmp_path):
    agent = agent_factory(config=fake_codex.config(), dispatch=True)
    task_id, first = _stopped_mid_task(agent, fake_codex, tmp_path,
                                       on_resume=[{"steps": [{"write": "second.txt", "text": "resumed\n"}]}])
    agent.client.post("/agent/dispatcher/start")
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    _, second = fake_codex.calls()
    assert second["resume"] == first["thread"] == task.session_id
    assert git(origin_of(agent.settings.project_dir), "show", "main:second.txt") == "resumed\n"


def test_a_restarted_task_whose_thread_is_gone_starts_a_new_one_with_the_prompt(agent_factory, fake_codex, tmp_path):
    agent = agent_factory(config=fake_codex.config(), dispatch=True)
    task_id, first = _stopped_mid_task(agent, fake_codex, tmp_path, on_resume=[])
    (fake_codex.state / f"{first['thread']}.json").unlink()  # Codex no longer knows the thread
    agent.client.post("/agent/dispatcher/start")
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    _, second = fake_codex.calls()
    assert [r["params"]["threadId"] for r in received(fake_codex, "thread/resume")] == [first["thread"]]
    assert second["resume"] is None and second["thread"] != first["thread"]
    assert "FAKE:" in second["prompt"] and "earlier attempt" in second["prompt"]
    assert task.session_id == second["thread"]
    said = [e.get("text") or "" for e in task_events(agent, task_id) if e["kind"] == "system"]
    assert any(first["thread"] in text and "new thread" in text for text in said)
    origin = origin_of(agent.settings.project_dir)
    assert git(origin, "show", "main:first.txt") == "1\n" and git(origin, "show", "main:second.txt") == "2\n"
