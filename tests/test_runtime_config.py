"""agent.yaml's `runtime:` and runtime sections (`claude_code:`, `codex:`, `opencode:`), read from
real files: every problem names the file, the key path and what is allowed, and the runtimes a
task may choose are the default plus each runtime whose section is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import ConfigError, load_agent_config


def load(tmp_path: Path, text: str):
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return load_agent_config(path)


def problem(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'agent.yaml'}: "), message
    return message


def test_an_unknown_runtime_names_the_key_and_the_allowed_values(tmp_path):
    message = problem(tmp_path, "runtime: foo\n")
    assert message.startswith(f"{tmp_path / 'agent.yaml'}: runtime: ")
    for allowed in ("'claude_code'", "'codex'", "'opencode'"):
        assert allowed in message, message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("codex:\n  bogus_key: 1\n", "codex.bogus_key: unknown key"),
        ("opencode:\n  bogus_key: 1\n", "opencode.bogus_key: unknown key"),
        ("codex:\n  approve: [bogus]\n", "codex.approve.0: Input should be 'command' or 'file_change'"),
        ("codex:\n  config:\n    'model provider': x\n",
         "codex.config: 'model provider' is not a dotted config.toml key"),
        ("codex:\n  config:\n    'a..b': x\n", "codex.config: 'a..b' is not a dotted config.toml key"),
        ("opencode:\n  config: [provider]\n", "opencode.config: Input should be a valid dictionary (got list"),
        ("codex:\n  env:\n    1BAD: x\n", "codex.env: '1BAD' is not an environment variable name"),
        ("opencode:\n  env:\n    'A-B': x\n", "opencode.env: 'A-B' is not an environment variable name"),
        ("claude_code:\n  command: relative/claude\n",
         "claude_code.command: 'relative/claude' must be a command name found on PATH or an absolute path"),
        ("codex:\n  command: bin/codex\n",
         "codex.command: 'bin/codex' must be a command name found on PATH or an absolute path"),
        ("opencode:\n  command: ./opencode\n",
         "opencode.command: './opencode' must be a command name found on PATH or an absolute path"),
    ],
)
def test_runtime_section_problems_name_their_path(tmp_path, text, expected):
    message = problem(tmp_path, text)
    assert f"{tmp_path / 'agent.yaml'}: {expected}" in message, message


def test_valid_sections_are_read(tmp_path):
    config = load(tmp_path, "runtime: codex\n"
                            "codex:\n  command: /opt/codex\n  model: gpt-5.5\n  approve: [command]\n"
                            "  config:\n    model_providers.local.base_url: http://127.0.0.1:1/v1\n"
                            "  env:\n    LOCAL_KEY: $MY_KEY\n"
                            "opencode:\n  config:\n    provider: {local: {npm: '@ai-sdk/openai-compatible'}}\n")
    assert (config.runtime, config.codex.command, config.codex.model) == ("codex", "/opt/codex", "gpt-5.5")
    assert config.codex.approve == ["command"]
    assert config.codex.config == {"model_providers.local.base_url": "http://127.0.0.1:1/v1"}
    assert config.codex.env == {"LOCAL_KEY": "$MY_KEY"}
    assert config.opencode.config == {"provider": {"local": {"npm": "@ai-sdk/openai-compatible"}}}


@pytest.mark.parametrize(
    ("text", "configured"),
    [
        ("", ["claude_code"]),
        ("max_parallel_workers: 2\n", ["claude_code"]),
        ("runtime: codex\n", ["codex"]),  # a default without a section: its defaults
        ("claude_code:\n  timeout: 30\n", ["claude_code"]),  # never twice
        ("opencode:\n  model: local/qwen\n", ["claude_code", "opencode"]),
        ("runtime: opencode\ncodex: {}\nclaude_code:\n  timeout: 30\n", ["opencode", "claude_code", "codex"]),
    ],
)
def test_configured_runtimes_are_the_default_then_each_written_section(tmp_path, text, configured):
    assert load(tmp_path, text).configured_runtimes == configured


def test_codex_config_refuses_credentials_on_the_command_line_and_values_toml_cannot_hold(tmp_path):
    for text, key in [
        ("codex:\n  config:\n    model_providers.x.experimental_bearer_token: sk-abc\n", "experimental_bearer_token"),
        ("codex:\n  config:\n    model_providers.x: {name: x, api_key: sk-abc}\n", "model_providers.x"),
        ("codex:\n  config:\n    release: 2026-01-01\n", "release"),
    ]:
        path = tmp_path / "agent.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as exc:
            load_agent_config(path)
        assert f"{path}: codex.config:" in str(exc.value) and key in str(exc.value)
        assert "sk-abc" not in str(exc.value)
    path = tmp_path / "agent.yaml"
    path.write_text("codex:\n  config:\n    model_providers.x.env_key: X_KEY\n"
                    "    model_providers.x.env_http_headers: {X-Org: X_ORG}\n")
    assert load_agent_config(path).codex.config["model_providers.x.env_key"] == "X_KEY"
