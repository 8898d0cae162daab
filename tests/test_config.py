"""agent.yaml loading: documented defaults, and one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import AgentConfig, ConfigError, load_agent_config, resolve_secret

ROOT = Path(__file__).parent.parent


def load(tmp_path: Path, text: str) -> AgentConfig:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return load_agent_config(path)


def test_missing_file_means_defaults(tmp_path):
    config = load_agent_config(tmp_path / "agent.yaml")
    assert config.max_parallel_workers == 5
    assert config.poll_interval_seconds == 10
    cc = config.claude_code
    assert (cc.skip_permissions, cc.output_format, cc.verbose, cc.timeout) == (True, "stream-json", True, 600)
    assert (config.port_range_start, config.port_range_end) == (9200, 9299)
    assert config.test_command == "pytest"
    assert config.push_to_remote is True
    assert config.symlink_files == ["data/dev-tasks.json"]
    assert config.copy_files == ["CLAUDE.md", "PROGRESS.md"]
    assert config.max_merge_retries == 3
    assert (config.base_branch, config.remote) == (None, "origin")  # None: detected at start


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file_means_defaults(tmp_path, text):
    assert load(tmp_path, text) == AgentConfig()


def test_values_are_read(tmp_path):
    config = load(tmp_path, "max_parallel_workers: 2\npoll_interval_seconds: 0.5\nclaude_code:\n  timeout: 30\n")
    assert (config.max_parallel_workers, config.poll_interval_seconds, config.claude_code.timeout) == (2, 0.5, 30)


def test_repository_agent_yaml_is_valid():
    load_agent_config(ROOT / "agent.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_parallel_workers: 0\n", "max_parallel_workers: Input should be greater than 0"),
        ("claude_code:\n  timeout: -1\n", "claude_code.timeout: Input should be greater than 0"),
        ("port_range_start: 9300\nport_range_end: 9200\n", "port_range_start: port_range_start (9300) is above port_range_end (9200)"),
        ("workers: 3\n", "workers: unknown key"),
        ("claude_code:\n  skip_permission: true\n", "claude_code.skip_permission: unknown key"),
        ("max_parallel_workers: '5'\n", "max_parallel_workers: Input should be a valid integer (got str '5')"),
        ("push_to_remote: 'yes please'\n", "push_to_remote: Input should be a valid boolean"),
        ("claude_code: 7\n", "claude_code: Input should be a valid dictionary"),
        ("claude_code:\n  output_format: json\n", "claude_code.output_format: must be 'stream-json'"),
        ("copy_files: ['../secrets']\n", "copy_files: '../secrets' must be a relative path inside the project"),
        ("base_branch: '-x'\n", "base_branch: '-x' is not a valid git name"),
        ("claude_code:\n  command: bin/claude\n", "claude_code.command: 'bin/claude' must be a command name"),
        ("symlink_files: [data]\n", "symlink_files: 'data' would link Baton's own data/ folder"),
        ("symlink_files: ['data/']\n", "symlink_files: 'data/' would link Baton's own data/ folder"),
        ("symlink_files: ['data/dev-tasks.json.lock']\n", "symlink_files: 'data/dev-tasks.json.lock' would link"),
        ("symlink_files: ['.']\n", "symlink_files: '.' must be a relative path inside the project"),
        ("test_command: 'pytest \"unclosed'\n", "test_command: cannot be split into arguments"),
        ("port_range_end: 70000\n", "port_range_end: Input should be less than or equal to 65535"),
        ("- just\n- a list\n", "(top level): must be a mapping"),
        ("max_parallel_workers: [\n", "invalid YAML"),
    ],
)
def test_problems_name_file_key_and_problem(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'agent.yaml'}: ")
    assert expected in message


def test_every_problem_is_reported(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "max_parallel_workers: 0\nmax_merge_retries: -1\n")
    assert len(str(info.value).splitlines()) == 2


def test_resolve_secret(monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "abc")
    assert resolve_secret("$MY_TOKEN") == "abc"
    assert resolve_secret("$NOT_SET_ANYWHERE") is None
    assert resolve_secret("literal") == "literal"
    assert resolve_secret(None) is None


def test_a_token_value_is_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "token: 982734987234\n")
    assert "token: Input should be a valid string" in str(info.value)
    assert "982734987234" not in str(info.value)
