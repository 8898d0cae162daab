"""CodexRuntime and its turn, line by line: what it sends `codex app-server`, what each line it
reads becomes (events, answers, a failure), and the cost it estimates."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from backend.runtimes.base import EventKind, TurnRequest
from backend.runtimes.codex import CodexConfig, CodexRuntime
from backend.runtimes.codex.config import Price
from backend.runtimes.codex.prices import DEFAULT_PRICES, Usage, cost_usd, price_for

PRICE = {"input": 2.0, "cached_input": 0.5, "output": 10.0}


def runtime(**section) -> CodexRuntime:
    return CodexRuntime(CodexConfig.model_validate({"command": "codex", **section}))


def request(tmp_path: Path, **fields) -> TurnRequest:
    values = {"prompt": "Fix it", "cwd": tmp_path, "env": {"PATH": "/usr/bin", "TASK_ID": "t1"},
              "scratch": tmp_path / "scratch", **fields}
    return TurnRequest(**values)


def sent(reply) -> list[dict]:
    return [json.loads(line) for line in reply.send]


def line(obj: dict) -> str:
    return json.dumps(obj) + "\n"


def answer_to(message: dict, result: dict | None = None, error: dict | None = None) -> str:
    body = {"error": error} if error is not None else {"result": result if result is not None else {}}
    return line({"id": message["id"], **body})


def thread_result(thread_id: str = "th-1", model: str = "gpt-5.5") -> dict:
    return {"thread": {"id": thread_id, "model": model, "turns": []}, "model": model, "modelProvider": "openai",
            "cwd": "/w", "approvalPolicy": "never", "sandbox": {"type": "dangerFullAccess"}}


def started_turn(tmp_path, rt=None, **fields):
    """A turn through initialize, thread/start and turn/start: (turn, its turn/start message)."""
    rt = rt or runtime(prices={"gpt-5.5": PRICE})
    turn = rt.turn(request(tmp_path, **fields))
    (init,) = sent(turn.opening())
    _, thread_start = sent(turn.on_line(answer_to(init, {"userAgent": "x"})))
    reply = turn.on_line(answer_to(thread_start, thread_result()))
    (turn_start,) = sent(reply)
    turn.on_line(answer_to(turn_start, {"turn": {"id": "tu-1", "items": [], "status": "inProgress"}}))
    return turn, turn_start


def notification(method: str, **params) -> str:
    return line({"method": method, "params": params})


def usage(total: tuple[int, int, int], last: tuple[int, int, int], turn_id: str = "tu-1") -> str:
    def breakdown(v):
        return {"inputTokens": v[0], "cachedInputTokens": v[1], "outputTokens": v[2], "reasoningOutputTokens": 0,
                "totalTokens": v[0] + v[2]}
    return notification("thread/tokenUsage/updated", threadId="th-1", turnId=turn_id,
                        tokenUsage={"total": breakdown(total), "last": breakdown(last)})


def completed(status: str = "completed", error: str | None = None, duration: int | None = 1234) -> str:
    return notification("turn/completed", threadId="th-1", turn={
        "id": "tu-1", "items": [], "status": status, "durationMs": duration,
        "error": {"message": error} if error else None})


# ----- the command line ------------------------------------------------------------------------


def test_invocation_talks_over_stdin_with_config_overrides_as_toml(tmp_path):
    rt = runtime(config={"model_provider": "local", "model_providers.local.base_url": "http://127.0.0.1:1/v1",
                         "request_max_retries": 0, "temperature": 0.5, "hide": True,
                         "sandbox_permissions": ["disk-full-read-access", "ü"],
                         "shell_environment_policy": {"inherit": "all", "set key": "x\"y"}},
                 extra_args=["--enable", "feature_x"], env={"ADDED": "1", "FROM_ENV": "$TASK_ID"})
    inv = rt.turn(request(tmp_path)).invocation
    assert inv.stdin is None and inv.cwd == tmp_path
    assert inv.argv == [
        "codex", "app-server",
        "-c", 'model_provider="local"',
        "-c", 'model_providers.local.base_url="http://127.0.0.1:1/v1"',
        "-c", "request_max_retries=0",
        "-c", "temperature=0.5",
        "-c", "hide=true",
        "-c", 'sandbox_permissions=["disk-full-read-access", "ü"]',
        "-c", 'shell_environment_policy={inherit = "all", "set key" = "x\\"y"}',
        "--enable", "feature_x",
    ]
    assert inv.env["ADDED"] == "1" and inv.env["FROM_ENV"] == "t1" and inv.env["PATH"] == "/usr/bin"
    assert "CODEX_HOME" not in inv.env


def test_isolated_home_is_created_in_the_scratch_folder(tmp_path):
    inv = runtime(isolated_home=True).turn(request(tmp_path)).invocation
    home = tmp_path / "scratch" / "codex-home"
    assert inv.env["CODEX_HOME"] == str(home) and home.is_dir()


def test_check_names_the_key_and_the_install_hint(tmp_path):
    problem = runtime(command=str(tmp_path / "nowhere" / "codex")).check()
    assert problem["code"] == "runtime_unavailable"
    assert "codex.command" in problem["message"] and "npm install -g @openai/codex" in problem["message"]
    exe = tmp_path / "codex"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    assert runtime(command=str(exe)).check() is None


def test_runtime_resumes_after_restart_and_explains_stalls():
    rt = runtime()
    assert rt.resume_after_restart is True and "stream_idle_timeout_ms" in rt.stall_hint


# ----- the opening handshake -------------------------------------------------------------------


def test_opening_initializes_then_starts_a_thread_then_the_turn(tmp_path):
    turn = runtime(model="gpt-5.4", approval_policy="on-request", sandbox="workspace-write").turn(
        request(tmp_path, prompt="Do the thing"))
    (init,) = sent(turn.opening())
    assert init["method"] == "initialize" and "jsonrpc" not in init
    assert init["params"] == {"clientInfo": {"name": "baton", "version": init["params"]["clientInfo"]["version"]},
                              "capabilities": {"experimentalApi": True}}
    initialized, thread_start = sent(turn.on_line(answer_to(init, {"userAgent": "codex"})))
    assert initialized == {"method": "initialized"}
    assert thread_start["method"] == "thread/start"
    assert thread_start["params"] == {"cwd": str(tmp_path), "approvalPolicy": "on-request",
                                      "sandbox": "workspace-write", "model": "gpt-5.4"}
    reply = turn.on_line(answer_to(thread_start, thread_result("th-9", "gpt-5.4")))
    (ev,) = reply.events
    assert ev.kind is EventKind.session_started and ev.session_id == "th-9" and ev.model == "gpt-5.4"
    (turn_start,) = sent(reply)
    assert turn_start["method"] == "turn/start"
    assert turn_start["params"] == {"threadId": "th-9", "input": [{"type": "text", "text": "Do the thing"}]}
    assert len({init["id"], thread_start["id"], turn_start["id"]}) == 3


def test_the_tasks_model_wins_and_no_model_is_sent_when_none_is_set(tmp_path):
    for section, model, expected in (({"model": "gpt-5.4"}, "gpt-5.5", "gpt-5.5"), ({}, None, None)):
        turn = runtime(**section).turn(request(tmp_path, model=model))
        (init,) = sent(turn.opening())
        _, thread_start = sent(turn.on_line(answer_to(init, {})))
        assert thread_start["params"].get("model") == expected
        assert ("model" in thread_start["params"]) is (expected is not None)


def test_resume_continues_the_thread(tmp_path):
    turn = runtime().turn(request(tmp_path, resume="th-old"))
    (init,) = sent(turn.opening())
    _, resume = sent(turn.on_line(answer_to(init, {})))
    assert resume["method"] == "thread/resume"
    assert resume["params"]["threadId"] == "th-old" and resume["params"]["cwd"] == str(tmp_path)
    assert resume["params"]["approvalPolicy"] == "never" and resume["params"]["sandbox"] == "danger-full-access"
    reply = turn.on_line(answer_to(resume, thread_result("th-old")))
    assert reply.events[0].session_id == "th-old"
    assert sent(reply)[0]["params"]["threadId"] == "th-old"


def test_a_thread_codex_cannot_resume_falls_back_to_a_new_one(tmp_path):
    turn = runtime().turn(request(tmp_path, resume="th-gone"))
    (init,) = sent(turn.opening())
    _, resume = sent(turn.on_line(answer_to(init, {})))
    reply = turn.on_line(answer_to(resume, error={"code": -32600, "message": "no rollout found for thread id th-gone"}))
    (note,) = reply.events
    assert note.kind is EventKind.system and "th-gone" in note.text and "no rollout found" in note.text
    (thread_start,) = sent(reply)
    assert thread_start["method"] == "thread/start" and reply.fail is None
    reply = turn.on_line(answer_to(thread_start, thread_result("th-new")))
    assert reply.events[0].session_id == "th-new"
    assert sent(reply)[0]["params"]["input"][0]["text"] == "Fix it"


@pytest.mark.parametrize("which", ["initialize", "thread/start", "turn/start"])
def test_an_error_answer_to_the_handshake_is_a_failed_result(tmp_path, which):
    turn = runtime().turn(request(tmp_path))
    (init,) = sent(turn.opening())
    target = init
    if which != "initialize":
        _, target = sent(turn.on_line(answer_to(init, {})))
    if which == "turn/start":
        thread_start = target
        (target,) = sent(turn.on_line(answer_to(thread_start, thread_result())))
    reply = turn.on_line(answer_to(target, error={"code": -32600, "message": "model is not supported"}))
    (result,) = reply.events
    assert result.kind is EventKind.result and result.ok is False
    assert result.errors == [f"{which} failed: model is not supported"]
    assert reply.close_stdin


def test_an_answer_of_an_unknown_shape_ends_the_turn_at_once(tmp_path):
    turn = runtime().turn(request(tmp_path))
    (init,) = sent(turn.opening())
    _, thread_start = sent(turn.on_line(answer_to(init, {})))
    reply = turn.on_line(answer_to(thread_start, {"no_thread": True}))
    assert [e.kind for e in reply.events] == [EventKind.unparsed, EventKind.result]
    assert reply.events[1].ok is False and "thread/start" in reply.events[1].errors[0] and reply.close_stdin


# ----- notifications ---------------------------------------------------------------------------


def test_items_become_tool_and_text_events(tmp_path):
    turn, _ = started_turn(tmp_path)
    command = {"type": "commandExecution", "id": "c1", "command": "/bin/bash -lc 'pytest -q'", "cwd": "/w",
               "status": "inProgress", "commandActions": []}
    (use,) = turn.on_line(notification("item/started", item=command, threadId="th-1", turnId="tu-1")).events
    assert (use.kind, use.tool_name, use.tool_use_id, use.tool_input) == (
        EventKind.tool_use, "command", "c1", "/bin/bash -lc 'pytest -q'")
    done = {**command, "status": "completed", "exitCode": 0, "aggregatedOutput": "3 passed\n"}
    (res,) = turn.on_line(notification("item/completed", item=done, threadId="th-1", turnId="tu-1")).events
    assert (res.kind, res.tool_use_id, res.ok, res.text) == (EventKind.tool_result, "c1", True, "3 passed\n")
    failed = {**command, "id": "c2", "status": "completed", "exitCode": 1, "aggregatedOutput": "1 failed"}
    events = turn.on_line(notification("item/completed", item=failed, threadId="th-1", turnId="tu-1")).events
    assert [e.kind for e in events] == [EventKind.tool_use, EventKind.tool_result] and events[1].ok is False

    change = {"type": "fileChange", "id": "f1", "status": "completed",
              "changes": [{"path": "a.py", "kind": {"type": "add"}, "diff": "+x"},
                          {"path": "b.py", "kind": {"type": "update"}, "diff": "-y"}]}
    use, res = turn.on_line(notification("item/completed", item=change, threadId="th-1", turnId="tu-1")).events
    assert (use.tool_name, use.tool_input, res.ok) == ("edit", "a.py, b.py", True) and "a.py" in res.text

    mcp = {"type": "mcpToolCall", "id": "m1", "server": "docs", "tool": "search", "arguments": {"q": "x"},
           "status": "inProgress"}
    (use,) = turn.on_line(notification("item/started", item=mcp, threadId="th-1", turnId="tu-1")).events
    assert use.tool_name == "docs.search" and '"q"' in use.tool_input
    mcp_done = {**mcp, "status": "failed", "error": {"message": "server gone"}}
    (res,) = turn.on_line(notification("item/completed", item=mcp_done, threadId="th-1", turnId="tu-1")).events
    assert res.ok is False and res.text == "server gone"

    message = {"type": "agentMessage", "id": "a1", "text": "All done."}
    assert turn.on_line(notification("item/agentMessage/delta", itemId="a1", delta="All", threadId="th-1",
                                     turnId="tu-1")).events == []
    (text,) = turn.on_line(notification("item/completed", item=message, threadId="th-1", turnId="tu-1")).events
    assert text.kind is EventKind.assistant_text and text.text == "All done." and text.session_id == "th-1"


def test_a_command_is_shown_as_the_agent_wrote_it_not_codexs_shell_wrapper(tmp_path):
    turn, _ = started_turn(tmp_path)
    item = {"type": "commandExecution", "id": "c1", "command": "/bin/bash -lc \"printf 'hi\\n' > a.txt\"",
            "status": "inProgress", "commandActions": [{"type": "unknown", "command": "printf 'hi\\n' > a.txt"}]}
    (use,) = turn.on_line(notification("item/started", item=item, threadId="th-1", turnId="tu-1")).events
    assert use.tool_input == "printf 'hi\\n' > a.txt"


def test_large_command_output_is_clipped(tmp_path):
    turn, _ = started_turn(tmp_path)
    item = {"type": "commandExecution", "id": "c1", "command": "yes", "status": "completed", "exitCode": 0,
            "aggregatedOutput": "x" * 1_000_000}
    events = turn.on_line(notification("item/completed", item=item, threadId="th-1", turnId="tu-1")).events
    assert events[-1].kind is EventKind.tool_result and len(events[-1].text) <= 500


def test_an_error_notification_is_shown_but_is_not_the_end(tmp_path):
    turn, _ = started_turn(tmp_path)
    reply = turn.on_line(notification("error", threadId="th-1", turnId="tu-1", willRetry=True,
                                      error={"message": "Reconnecting... 1/5"}))
    (ev,) = reply.events
    assert ev.kind is EventKind.system and ev.subtype == "error" and "Reconnecting... 1/5" in ev.text
    assert "retries" in ev.text and not reply.close_stdin and reply.fail is None


def test_unknown_notifications_are_ignored_and_bad_lines_are_unparsed(tmp_path):
    turn, _ = started_turn(tmp_path)
    assert turn.on_line(notification("turn/diff/updated", diff="...")).events == []
    assert turn.on_line(notification("some/new/thing", x=1)).events == []
    for bad in ("not json at all\n", "[1, 2]\n", line({"method": "item/completed", "params": {"item": "oops"}}),
                line({"what": "ever"}), '{"method": 5}\n'):
        reply = turn.on_line(bad)
        assert [e.kind for e in reply.events] == [EventKind.unparsed], bad
        assert reply.send == [] and reply.fail is None
    assert turn.on_line("\n").events == []


# ----- the result: tokens and cost -------------------------------------------------------------


def test_turn_completed_is_the_result_with_this_turns_tokens_and_estimated_cost(tmp_path):
    turn, _ = started_turn(tmp_path)
    turn.on_line(usage(total=(1000, 200, 50), last=(1000, 200, 50)))
    turn.on_line(usage(total=(3000, 1200, 80), last=(2000, 1000, 30)))  # absolute: never added up
    turn.on_line(notification("item/completed", item={"type": "agentMessage", "id": "a", "text": "Done."},
                              threadId="th-1", turnId="tu-1"))
    reply = turn.on_line(completed())
    (result,) = reply.events
    assert result.kind is EventKind.result and result.ok is True and result.subtype == "completed"
    assert (result.input_tokens, result.cache_read_tokens, result.output_tokens) == (3000, 1200, 80)
    assert result.num_turns == 1 and result.duration_ms == 1234 and result.text == "Done."
    # (3000 - 1200) fresh at 2.0 + 1200 cached at 0.5 + 80 out at 10.0, per million
    assert result.cost_usd == pytest.approx((1800 * 2.0 + 1200 * 0.5 + 80 * 10.0) / 1e6)
    assert result.cost_estimated is True
    assert reply.close_stdin


def test_a_resumed_threads_earlier_tokens_are_not_counted_again(tmp_path):
    # As Codex 0.169 does: right after answering thread/resume it repeats the thread's total
    # so far (5000/1000/100, with the earlier turn's id), before it answers turn/start.
    rt = runtime(prices={"gpt-5.5": PRICE})
    turn = rt.turn(request(tmp_path, resume="th-1"))
    (init,) = sent(turn.opening())
    _, resume = sent(turn.on_line(answer_to(init, {})))
    (turn_start,) = sent(turn.on_line(answer_to(resume, thread_result())))
    turn.on_line(usage(total=(5000, 1000, 100), last=(2000, 0, 40), turn_id="tu-0"))
    turn.on_line(answer_to(turn_start, {"turn": {"id": "tu-1", "items": [], "status": "inProgress"}}))
    turn.on_line(usage(total=(6000, 1500, 130), last=(1000, 500, 30)))
    (result,) = turn.on_line(completed()).events
    assert (result.input_tokens, result.cache_read_tokens, result.output_tokens) == (1000, 500, 30)


def test_earlier_turns_in_the_total_are_found_from_the_first_update(tmp_path):
    # No update before the turn: the first one's total minus its last is what came before.
    turn, _ = started_turn(tmp_path, resume=None)
    turn.on_line(usage(total=(7000, 2000, 200), last=(1000, 0, 20)))
    turn.on_line(usage(total=(8500, 2500, 260), last=(1500, 500, 60)))
    (result,) = turn.on_line(completed()).events
    assert (result.input_tokens, result.cache_read_tokens, result.output_tokens) == (2500, 500, 80)


def test_a_failed_or_interrupted_turn_is_a_failed_result(tmp_path):
    turn, _ = started_turn(tmp_path)
    (result,) = turn.on_line(completed("failed", error="stream disconnected")).events
    assert result.ok is False and result.subtype == "failed" and result.errors == ["stream disconnected"]
    assert result.text is None and result.input_tokens is None and result.cost_usd is None
    turn, _ = started_turn(tmp_path)
    (result,) = turn.on_line(completed("interrupted")).events
    assert result.ok is False and result.subtype == "interrupted"


def test_a_model_without_a_price_gives_no_cost_and_says_so(tmp_path):
    rt = runtime()
    turn = rt.turn(request(tmp_path))
    (init,) = sent(turn.opening())
    _, thread_start = sent(turn.on_line(answer_to(init, {})))
    (turn_start,) = sent(turn.on_line(answer_to(thread_start, thread_result(model="my-local-model"))))
    turn.on_line(answer_to(turn_start, {"turn": {"id": "tu-1", "items": [], "status": "inProgress"}}))
    turn.on_line(usage(total=(100, 0, 10), last=(100, 0, 10)))
    note, result = turn.on_line(completed()).events
    assert note.kind is EventKind.system and "my-local-model" in note.text and "codex.prices" in note.text
    assert result.cost_usd is None and result.cost_estimated is None and result.input_tokens == 100


def test_prices_charge_cached_input_apart_and_config_prices_win():
    price = Price(input=1.0, cached_input=0.1, output=4.0)
    assert cost_usd(Usage(input=1_000_000, cached=400_000, output=500_000), price) == pytest.approx(
        0.6 + 0.04 + 2.0)
    assert price_for("gpt-5.5", {}) == DEFAULT_PRICES["gpt-5.5"]
    assert price_for("gpt-5.5", {"gpt-5.5": price}) == price
    assert price_for("other", {"other": price}) == price and price_for("other", {}) is None
    for model in ("gpt-5.5", "gpt-5.4", "gpt-5.4-mini", "gpt-5.3-codex", "gpt-5.2-codex", "gpt-5.1-codex-mini"):
        assert model in DEFAULT_PRICES


# ----- requests from the server ----------------------------------------------------------------


@pytest.mark.parametrize("method,params,kind,words", [
    ("item/commandExecution/requestApproval", {"itemId": "c1", "command": "rm -rf build", "threadId": "th-1",
                                               "turnId": "tu-1", "startedAtMs": 1}, "command", "rm -rf build"),
    ("execCommandApproval", {"callId": "c1", "command": ["git", "push"], "conversationId": "th-1", "cwd": "/w",
                             "parsedCmd": []}, "command", "git push"),
    ("item/fileChange/requestApproval", {"itemId": "f1", "reason": "write /etc/x", "threadId": "th-1",
                                         "turnId": "tu-1", "startedAtMs": 1}, "file_change", "write /etc/x"),
    ("applyPatchApproval", {"callId": "f1", "conversationId": "th-1", "fileChanges": {"/w/a.py": {"type": "add"}}},
     "file_change", "/w/a.py"),
])
def test_approvals_follow_the_policy(tmp_path, method, params, kind, words):
    legacy = "/" not in method
    message = line({"id": 0, "method": method, "params": params})  # Codex numbers its requests from 0

    turn, _ = started_turn(tmp_path)  # approve: [] (the default)
    reply = turn.on_line(message)
    assert sent(reply) == [{"id": 0, "result": {"decision": "denied" if legacy else "decline"}}]
    reason, text = reply.fail
    assert reason == "approval_required" and words in text
    assert f"codex.approve: [{kind}]" in text and "approval_policy" in text

    turn, _ = started_turn(tmp_path, rt=runtime(approve=[kind]))
    reply = turn.on_line(message)
    assert sent(reply) == [{"id": 0, "result": {"decision": "approved" if legacy else "accept"}}]
    assert reply.fail is None


@pytest.mark.parametrize("method", ["item/tool/requestUserInput", "item/permissions/requestApproval",
                                    "mcpServer/elicitation/request"])
def test_requests_for_a_person_are_refused_and_fail_the_task(tmp_path, method):
    turn, _ = started_turn(tmp_path, rt=runtime(approve=["command", "file_change"]))
    reply = turn.on_line(line({"id": "r-1", "method": method, "params": {"threadId": "th-1"}}))
    (answer,) = sent(reply)
    assert answer["id"] == "r-1" and answer["error"]["code"] == -32601 and "result" not in answer
    assert reply.fail[0] == "approval_required" and method in reply.fail[1]


def test_other_requests_get_an_error_answer_and_the_turn_goes_on(tmp_path):
    turn, _ = started_turn(tmp_path)
    reply = turn.on_line(line({"id": 3, "method": "item/tool/call", "params": {"tool": "x"}}))
    (answer,) = sent(reply)
    assert answer["id"] == 3 and answer["error"]["code"] == -32601
    assert reply.fail is None


# ----- interrupt -------------------------------------------------------------------------------


def test_interrupt_asks_codex_to_end_the_running_turn_only(tmp_path):
    turn = runtime().turn(request(tmp_path))
    turn.opening()
    assert turn.interrupt().send == []  # no turn yet: nothing to interrupt
    turn, _ = started_turn(tmp_path)
    (ask,) = sent(turn.interrupt())
    assert ask["method"] == "turn/interrupt" and ask["params"] == {"threadId": "th-1", "turnId": "tu-1"}
    assert turn.on_line(answer_to(ask, {})).events == []
    turn.on_line(completed("interrupted"))
    assert turn.interrupt().send == []  # already over


def test_the_turn_id_comes_from_turn_started_too(tmp_path):
    turn = runtime().turn(request(tmp_path))
    (init,) = sent(turn.opening())
    _, thread_start = sent(turn.on_line(answer_to(init, {})))
    turn.on_line(answer_to(thread_start, thread_result()))
    turn.on_line(notification("turn/started", threadId="th-1", turn={"id": "tu-7", "items": [],
                                                                     "status": "inProgress"}))
    (ask,) = sent(turn.interrupt())
    assert ask["params"]["turnId"] == "tu-7"



def test_a_stop_before_the_turn_started_closes_stdin_and_starts_nothing_more(tmp_path):
    # No turn id yet (still in the handshake): Codex cannot be asked to interrupt, but closing
    # its stdin ends it at once; a late answer must not start the thread's turn after all.
    turn = runtime().turn(request(tmp_path))
    (init,) = sent(turn.opening())
    _, thread_start = sent(turn.on_line(answer_to(init, {"userAgent": "x"})))
    stop = turn.interrupt()
    assert stop.send == [] and stop.close_stdin is True
    assert turn.on_line(answer_to(thread_start, thread_result())).send == []
    assert turn.interrupt().close_stdin is False  # asked once is enough
