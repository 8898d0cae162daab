"""End to end with the real Codex CLI (`@openai/codex`, pinned, from npm) driven through
`codex app-server`, talking to a local stand-in of the OpenAI Responses API: Codex runs its own
exec_command tool to write a file; Baton commits and lands it on origin main."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from backend.config import AgentConfig
from backend.runtimes.codex import CodexConfig
from fakes.openai_standin import StandInResponsesAPI
from realcli import files_containing, npm_cli, recording_wrapper, run_task, wait_for_cleanup
from support import git, origin_of, task_events

CODEX_VERSION = "0.169.0"
MODEL = "gpt-5.5"  # a model Codex knows: it gets classic function tools (see PROTOCOLS.md)
# Distinct numbers, so a token count can only come from adding up this stand-in's reports.
USAGE = {"input": 1234, "cached": 200, "output": 56, "reasoning": 7}


@pytest.fixture(scope="module")
def codex_binary() -> Path:
    return npm_cli("@openai/codex", CODEX_VERSION, "codex")


@pytest.fixture
def codex_env(tmp_path, monkeypatch) -> str:
    """A fresh HOME, and the provider key in Baton's environment under another name (the
    codex section's `env` maps it to the name Codex reads). Returns the key."""
    key = f"sk-standin-{secrets.token_hex(12)}"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("BATON_TEST_STANDIN_SECRET", key)
    for name in ("CODEX_HOME", "OPENAI_API_KEY", "OPENAI_BASE_URL", "STANDIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    return key


def codex_config(command: Path, api: StandInResponsesAPI, **overrides) -> AgentConfig:
    section = CodexConfig(
        command=str(command), model=MODEL, isolated_home=True, timeout=180, stall_timeout=120,
        config={
            "model_provider": "standin",
            "model_providers.standin.name": "standin",
            "model_providers.standin.base_url": api.url + "/v1",
            "model_providers.standin.wire_api": "responses",
            "model_providers.standin.env_key": "STANDIN_KEY",
            # A failing stand-in fails the turn at once instead of being retried for minutes.
            "model_providers.standin.request_max_retries": 0,
            "model_providers.standin.stream_max_retries": 0,
        },
        env={"STANDIN_KEY": "$BATON_TEST_STANDIN_SECRET"},
    )
    base = {"test_command": "", "poll_interval_seconds": 0.5, **overrides}
    return AgentConfig(runtime="codex", codex=section, **base)


def assert_key_kept_out(agent, task_id: str, key: str, argv_log: Path, api) -> None:
    """The key reached Codex (the stand-in saw it) but no command line, log or task file."""
    sent = {v for r in api.model_requests() for k, v in r["headers"].items() if k.lower() == "authorization"}
    assert sent == {f"Bearer {key}"}
    argv = argv_log.read_bytes()
    assert argv and key.encode() not in argv
    assert b"model_provider=" in argv  # the codex.config overrides did go on the command line
    logs, data = agent.settings.logs_dir, agent.settings.data_dir
    wait_for_cleanup(agent, task_id)
    assert logs.is_dir() and data.is_dir()
    assert files_containing(key, logs, data) == []
    assert key not in git(origin_of(agent.settings.project_dir), "log", "-p", "--all")


def test_real_codex_writes_a_file_and_baton_lands_it(agent_factory, codex_binary, codex_env, tmp_path):
    key = codex_env
    command, argv_log = recording_wrapper(codex_binary, tmp_path / "bin")
    with StandInResponsesAPI("exec_command", {"cmd": "printf 'hello from codex\\n' > hello.txt"},
                             usage=USAGE) as api:
        agent = agent_factory(config=codex_config(command, api), dispatch=True)
        task = run_task(agent, {"title": "Say hello from codex", "content": "Create hello.txt.",
                                "task_type": "docs"})

        origin = origin_of(agent.settings.project_dir)
        assert git(origin, "show", "main:hello.txt") == "hello from codex\n"
        assert git(origin, "log", "-1", "--format=%s", "main").strip() == f"docs({task.id}): Say hello from codex"
        assert task.commit_sha == git(origin, "rev-parse", "main").strip()

        # The thread Codex started, and this turn's own tokens: one report per model request.
        requests = api.model_requests()
        assert len(requests) >= 2  # the tool call, then the final text after its result
        events = task_events(agent, task.id)
        started = [e for e in events if e["kind"] == "session_started"]
        assert task.agent_runtime == "codex" and task.session_id and started[0]["session_id"] == task.session_id
        assert task.input_tokens == USAGE["input"] * len(requests)  # Codex's input counts cached ones too
        assert task.output_tokens == USAGE["output"] * len(requests)
        assert task.cache_read_tokens == USAGE["cached"] * len(requests)
        assert task.cost_usd is not None and task.cost_usd > 0 and task.cost_estimated is True

        uses = [e for e in events if e["kind"] == "tool_use" and "hello.txt" in (e.get("tool_input") or "")]
        assert uses, events
        assert any(e["kind"] == "tool_result" and e.get("tool_use_id") == uses[0]["tool_use_id"] and e["ok"]
                   for e in events)
        result = [e for e in events if e["kind"] == "result"]
        assert result and result[-1]["ok"] and result[-1]["cost_estimated"] is True

        first_input = json.dumps(requests[0]["body"]["input"])
        assert "Say hello from codex" in first_input and "Create hello.txt." in first_input
        # Nothing Baton generated for Codex (its CODEX_HOME) was committed.
        assert git(origin, "diff", "--name-only", "main~1", "main").split() == ["hello.txt"]
        assert_key_kept_out(agent, task.id, key, argv_log, api)


def test_real_codex_feedback_turn_continues_the_thread(agent_factory, codex_binary, codex_env, tmp_path):
    """Tests that fail after the first turn bring a feedback turn on the same Codex thread,
    and the task's tokens are the two turns' own, not the thread's running total twice."""
    command, _ = recording_wrapper(codex_binary, tmp_path / "bin")
    # The same tool call both turns: the first writes hello.txt, the second (hello.txt is there)
    # also writes fixed.txt, which the tests want once hello.txt exists. They pass on main.
    script = "if [ -f hello.txt ]; then echo fixed > fixed.txt; fi; printf 'hello from codex\\n' > hello.txt"
    with StandInResponsesAPI("exec_command", {"cmd": script}, usage=USAGE) as api:
        config = codex_config(command, api, test_command="sh -c 'test ! -f hello.txt || test -f fixed.txt'")
        agent = agent_factory(config=config, dispatch=True)
        task = run_task(agent, {"title": "Hello, then fix the tests", "content": "Create hello.txt.",
                                "task_type": "feature"})

        origin = origin_of(agent.settings.project_dir)
        assert git(origin, "show", "main:fixed.txt") == "fixed\n"
        events = task_events(agent, task.id)
        threads = [e["session_id"] for e in events if e["kind"] == "session_started"]
        assert len(threads) == 2 and threads[0] == threads[1] == task.session_id
        assert not [e for e in events if e.get("subtype") == "resume_failed"]
        assert any(e["kind"] == "baton" and "feedback turn 1" in (e.get("text") or "") for e in events)

        requests = api.model_requests()
        # The feedback turn's requests carry the first turn (its prompt, tool call and result)
        # ahead of the feedback prompt: the thread was continued, not started afresh.
        def continued(request: dict) -> bool:
            text = json.dumps(request["body"]["input"])
            feedback = text.find("Landing your work failed")
            return 0 <= text.find("Hello, then fix the tests") < text.find("function_call_output") < feedback
        assert any(continued(r) for r in requests), "the feedback turn did not continue the thread"
        # Per turn, added up: the thread's running total would count the first turn twice.
        assert task.input_tokens == USAGE["input"] * len(requests)
        assert task.output_tokens == USAGE["output"] * len(requests)
        assert task.num_turns == 2
