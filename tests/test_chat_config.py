"""projects.yaml `chat:`: defaults, where conversations go, prices, and problems reported with
the file and the key like every other key."""

from __future__ import annotations

import pytest

from backend.chat.config import DEFAULT_MODEL, ChatConfig
from backend.config import ConfigError
from backend.dashboard import demo
from backend.dashboard.config import load_dashboard_config


def _write(tmp_path, text: str):
    path = tmp_path / "config" / "projects.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_and_the_default_folder(tmp_path):
    chat = load_dashboard_config(_write(tmp_path, "projects: []\n")).chat
    assert (chat.model, chat.api_key_env, chat.base_url, chat.max_tokens) == (DEFAULT_MODEL, "ANTHROPIC_API_KEY", None, 4096)
    assert chat.dir == str(tmp_path / "data" / "chats")  # config/projects.yaml -> data/chats
    missing = load_dashboard_config(tmp_path / "elsewhere" / "projects.yaml").chat
    assert missing.dir == str(tmp_path / "data" / "chats")


def test_a_relative_folder_is_the_config_files(tmp_path):
    chat = load_dashboard_config(_write(tmp_path, "chat:\n  dir: convos\n")).chat
    assert chat.dir == str(tmp_path / "config" / "convos")
    chat = load_dashboard_config(_write(tmp_path, f"chat:\n  dir: {tmp_path / 'abs'}\n")).chat
    assert chat.dir == str(tmp_path / "abs")


@pytest.mark.parametrize("text, problem", [
    ("chat:\n  max_tokens: lots\n", "chat.max_tokens: Input should be a valid integer"),
    ("chat:\n  api_key_env: sk-ant-123\n", "chat.api_key_env: must be the name of an environment variable"),
    ("chat:\n  base_url: ftp://x\n", "chat.base_url: must be an http(s) URL"),
    ("chat:\n  colour: red\n", "chat.colour: unknown key"),
    ("chat:\n  prices:\n    claude-x: {input: 1}\n", "chat.prices.claude-x.output: Field required"),
])
def test_problems_name_the_file_and_the_key(tmp_path, text, problem):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_dashboard_config(path)
    assert f"{path}: {problem}" in str(caught.value)


def test_prices():
    chat = ChatConfig.model_validate({"prices": {"my-model": {"input": 1, "output": 2}, "claude-opus-4-8": {
        "input": 6, "output": 30}}})
    assert chat.cost("claude-sonnet-5-5", 1_000_000, 100_000) == pytest.approx(2 + 1)
    assert chat.cost("claude-haiku-4-5-20251001", 1_000_000, 0) == pytest.approx(1)  # dated id: its name's price
    assert chat.cost("claude-opus-4-8", 1_000_000, 0) == pytest.approx(6)  # configured over the default
    assert chat.cost("my-model", 0, 1_000_000) == pytest.approx(2)
    assert chat.cost("claude-opus-4-9", 10, 10) is None  # unknown: no cost rather than a guess


def test_the_demo_keeps_its_chats_in_its_folder(tmp_path):
    prepared = demo.prepare(tmp_path / "demo")
    assert load_dashboard_config(prepared.projects_file).chat.dir == str(tmp_path / "demo" / "chats")


def test_the_key_is_read_when_asked(monkeypatch):
    chat = ChatConfig(api_key_env="BATON_TEST_SOME_KEY")
    monkeypatch.delenv("BATON_TEST_SOME_KEY", raising=False)
    assert chat.api_key() is None and "BATON_TEST_SOME_KEY" in chat.hint()
    monkeypatch.setenv("BATON_TEST_SOME_KEY", "k")
    assert chat.api_key() == "k"
