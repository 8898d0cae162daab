"""End to end with the real OpenCode CLI (`opencode-ai`, pinned, from npm) driven through
`opencode run --format json`, talking to a local stand-in of the OpenAI Chat Completions API:
OpenCode runs its own bash tool to write a file; Baton commits and lands it on origin main."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from backend.config import AgentConfig
from backend.runtimes.opencode import OpenCodeConfig
from fakes.openai_standin import StandInChatCompletionsAPI
from realcli import files_containing, npm_cli, recording_wrapper, run_task, wait_for_cleanup
from support import git, origin_of, task_events

OPENCODE_VERSION = "1.18.33"
MODEL = "gpt-5.5"
USAGE = {"input": 1234, "cached": 200, "output": 56, "reasoning": 7}
# Quotes, a backtick, a dollar and a line of its own: what a shell or an argument would mangle.
DISTINCTIVE = 'Mind the "double quotes", the `backticks` and $HOME: keep them as they are.'


@pytest.fixture(scope="module")
def opencode_binary() -> Path:
    return npm_cli("opencode-ai", OPENCODE_VERSION, "opencode")


def user_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def header(request: dict, name: str) -> str | None:
    return next((v for k, v in request["headers"].items() if k.lower() == name), None)


@pytest.fixture
def opencode_env(tmp_path, monkeypatch) -> str:
    """A fresh HOME, no inherited OpenCode or XDG settings, and the provider key in Baton's
    environment under another name (the opencode section's `env` maps it). Returns the key."""
    key = f"sk-standin-{secrets.token_hex(12)}"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("BATON_TEST_STANDIN_SECRET", key)
    for name in [n for n in os.environ if n.startswith(("OPENCODE", "XDG_"))] + ["STANDIN_KEY"]:
        monkeypatch.delenv(name, raising=False)
    return key


def opencode_config(command: Path, api: StandInChatCompletionsAPI, **overrides) -> AgentConfig:
    section = OpenCodeConfig(
        command=str(command), model=f"standin/{MODEL}", isolated_state=True, timeout=180, stall_timeout=120,
        config={
            "provider": {"standin": {
                "npm": "@ai-sdk/openai-compatible", "name": "standin",
                "options": {"baseURL": api.url + "/v1", "apiKey": "{env:STANDIN_KEY}"},
                "models": {MODEL: {"tool_call": True, "cost": {"input": 3, "output": 15},
                                   "limit": {"context": 200000, "output": 8192}}},
            }},
            "small_model": f"standin/{MODEL}",
        },
        env={"STANDIN_KEY": "$BATON_TEST_STANDIN_SECRET"},
    )
    base = {"test_command": "", "poll_interval_seconds": 0.5, **overrides}
    return AgentConfig(runtime="opencode", opencode=section, **base)


def step_requests(api: StandInChatCompletionsAPI) -> list[dict]:
    """One request per agent step (the title request has no tools, and no step reports it)."""
    return [r for r in api.model_requests() if r["body"].get("tools")]


def test_real_opencode_writes_a_file_and_baton_lands_it(agent_factory, opencode_binary, opencode_env, tmp_path):
    key = opencode_env
    command, argv_log = recording_wrapper(opencode_binary, tmp_path / "bin")
    with StandInChatCompletionsAPI("bash", {"command": "printf 'hello from opencode\\n' > hello.txt",
                                            "description": "write hello.txt"}, usage=USAGE) as api:
        agent = agent_factory(config=opencode_config(command, api), dispatch=True)
        task = run_task(agent, {"title": "Say hello from opencode", "content": f"Create hello.txt.\n\n{DISTINCTIVE}\n",
                                "task_type": "docs"})
        task_id, logs = task.id, agent.settings.logs_dir

        origin = origin_of(agent.settings.project_dir)
        assert git(origin, "show", "main:hello.txt") == "hello from opencode\n"
        assert git(origin, "log", "-1", "--format=%s", "main").strip() == f"docs({task_id}): Say hello from opencode"
        assert task.commit_sha == git(origin, "rev-parse", "main").strip()
        # Nothing Baton generated for OpenCode (opencode.json, its state) was committed.
        assert git(origin, "diff", "--name-only", "main~1", "main").split() == ["hello.txt"]

        steps = step_requests(api)
        assert len(steps) >= 2  # the bash call, then the final text after its result
        events = task_events(agent, task_id)
        started = [e for e in events if e["kind"] == "session_started"]
        assert task.agent_runtime == "opencode" and task.session_id and started[0]["session_id"] == task.session_id
        assert {header(r, "x-session-id") for r in steps} == {task.session_id}
        # OpenCode's step tokens: input without the cached ones; reasoning is billed as output.
        assert task.input_tokens == (USAGE["input"] - USAGE["cached"]) * len(steps)
        assert task.output_tokens == USAGE["output"] * len(steps)
        assert task.cache_read_tokens == USAGE["cached"] * len(steps)
        assert task.cost_usd is not None and task.cost_usd > 0 and task.cost_estimated is False

        uses = [e for e in events if e["kind"] == "tool_use" and e["tool_name"] == "bash"]
        assert uses and "hello.txt" in uses[0]["tool_input"]
        assert any(e["kind"] == "tool_result" and e.get("tool_use_id") == uses[0]["tool_use_id"] and e["ok"]
                   for e in events)
        result = [e for e in events if e["kind"] == "result"]
        assert result and result[-1]["ok"] and result[-1]["cost_estimated"] is False

        # The prompt reached the model whole and as written (stdin, not a quoted argument).
        prompt = [user_text(m) for m in steps[0]["body"]["messages"] if m.get("role") == "user"]
        assert len(prompt) == 1, prompt
        assert prompt[0].startswith(f"# Task {task_id}: Say hello from opencode\n")
        assert f"\n{DISTINCTIVE}\n" in prompt[0]
        assert prompt[0].rstrip().endswith("Baton rebases, tests and lands your commits.")

        # The key reached OpenCode (the stand-in saw it) but no command line, log or task file.
        assert {header(r, "authorization") for r in api.model_requests()} == {f"Bearer {key}"}
        argv = argv_log.read_bytes()
        assert argv and key.encode() not in argv and b"--format" in argv
        wait_for_cleanup(agent, task_id)
        assert files_containing(key, logs, agent.settings.data_dir) == []
        assert key not in git(origin, "log", "-p", "--all")


def test_real_opencode_feedback_turn_continues_the_session(agent_factory, opencode_binary, opencode_env, tmp_path):
    """Tests that fail after the first turn bring a feedback turn in the same OpenCode session
    (`run -s`), and the task's tokens and cost add up both turns' steps."""
    command, _ = recording_wrapper(opencode_binary, tmp_path / "bin")
    # The same bash call both turns: the first writes hello.txt, the second (hello.txt is there)
    # also writes fixed.txt, which the tests want once hello.txt exists. They pass on main.
    script = "if [ -f hello.txt ]; then echo fixed > fixed.txt; fi; printf 'hello from opencode\\n' > hello.txt"
    with StandInChatCompletionsAPI("bash", {"command": script, "description": "write files"}, usage=USAGE) as api:
        config = opencode_config(command, api, test_command="sh -c 'test ! -f hello.txt || test -f fixed.txt'")
        agent = agent_factory(config=config, dispatch=True)
        task = run_task(agent, {"title": "Hello, then fix the tests", "content": "Create hello.txt.",
                                "task_type": "feature"})

        origin = origin_of(agent.settings.project_dir)
        assert git(origin, "show", "main:fixed.txt") == "fixed\n"
        events = task_events(agent, task.id)
        sessions = [e["session_id"] for e in events if e["kind"] == "session_started"]
        assert len(sessions) == 2 and sessions[0] == sessions[1] == task.session_id
        assert any(e["kind"] == "baton" and "feedback turn 1" in (e.get("text") or "") for e in events)

        steps = step_requests(api)
        # The feedback turn's requests carry the first turn (its prompt and the tool's result)
        # ahead of the feedback prompt: the session was continued, not started afresh.
        def continued(request: dict) -> bool:
            messages = [(m.get("role"), user_text(m)) for m in request["body"]["messages"]]

            def where(role: str, text: str = "") -> int:
                return next((n for n, (r, t) in enumerate(messages) if r == role and text in t), -1)
            return 0 <= where("user", "Hello, then fix the tests") < where("tool") < where("user", "Landing your work")
        assert any(continued(r) for r in steps), "the feedback turn did not continue the session"
        # Both turns' steps, each counted once.
        assert task.input_tokens == (USAGE["input"] - USAGE["cached"]) * len(steps)
        assert task.output_tokens == USAGE["output"] * len(steps)
        results = [e for e in events if e["kind"] == "result"]
        assert task.cost_usd == pytest.approx(sum(e["cost_usd"] for e in results)) and task.cost_usd > 0
