"""The board with its chat, for the browser tests of the chat panel and of chat → plan → tasks:
a board_world.Board whose dashboard talks to the stand-in Messages API (tests/fakes/
messages_standin.py, a thread of the test process) with a key in its environment, or without one."""

from __future__ import annotations

from pathlib import Path

from board_world import Board
from chat_support import KEY, KEY_ENV
from fakes.messages_standin import MessagesStandIn


def chat_board(root: Path, api: MessagesStandIn, *, agent: bool, key: bool = True, **more) -> Board:
    """`key=False`: the variable the chat reads its key from is not set (the chat says how to enable it)."""
    chat = (f"chat:\n  base_url: {api.url}\n  api_key_env: {KEY_ENV}\n  dir: {root / 'chats'}\n"
            "  max_retries: 0\n  timeout_seconds: 30\n")
    # The variable is taken out of the dashboard's environment when the test runs in one that has it.
    env = {KEY_ENV: KEY if key else ""}
    return Board(root, agent=agent, dashboard_yaml=chat, dashboard_env=env, **more)


def open_chat(page, url: str, chat: str | None = None) -> None:
    """The board with the chat panel of project p open (on conversation `chat`), as a link opens it."""
    from board_world import wait_ready

    page.goto(f"{url}/?chat=p{f'/{chat}' if chat else ''}")
    wait_ready(page)
    page.wait_for_selector("#workspace[data-view='chat'] .chat")
