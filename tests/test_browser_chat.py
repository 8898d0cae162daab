"""The board's chat panel (issue #12) in Chromium: a real dashboard whose chat talks to the
stand-in Messages API. An answer streams into the page as it is written (plain text, line
breaks kept, markup shown as text), with tokens and cost; Stop mid-answer keeps the partial text;
files go with a message; the open conversation is in the URL and comes back on reload; an API
error is told once, on the answer, with Retry; without a key the panel says how to enable the chat
(in its main area) and the board still works; it fits a phone, where the list follows a streaming
answer and Send and Stop share a row; axe finds nothing serious."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from board_world import AXE, open_page, wait_ready
from browsing import playwright_or_skip
from chat_board import chat_board, open_chat
from chat_support import KEY_ENV
from fakes.messages_standin import MessagesStandIn, http_error, text
from support import wait_for

playwright_api = playwright_or_skip()
expect = playwright_api.expect


@pytest.fixture(scope="module")
def api():
    with MessagesStandIn() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def world(tmp_path_factory, api):
    board = chat_board(tmp_path_factory.mktemp("chat"), api, agent=False)
    yield board
    board.close()


@pytest.fixture(autouse=True)
def fresh_script(api):
    """Each test scripts its own replies; a hold from an earlier test does not carry over."""
    api.replies.clear()
    api.release.clear()
    api.holding.clear()
    yield
    api.release.set()  # nothing stays held when a test ends early


def new_chat(page) -> str:
    """Starts a conversation in the open panel; its id, once it is the one shown (and in the URL)."""
    button = page.locator("[data-role='new-chat']")
    expect(button).to_be_enabled()
    before = set(page.locator(".chat-item").evaluate_all("nodes => nodes.map((n) => n.dataset.chat)"))
    button.click()

    def shown():
        chat = page.locator(".chat-view").get_attribute("data-chat")
        return chat if chat and chat not in before else None

    chat_id = wait_for(shown, timeout=10, what="the new conversation to be shown")
    expect(page.locator(".chat-view [data-role='chat-input'], .chat-view [data-role='chat-disabled']")).to_be_visible()
    expect(page).to_have_url(re.compile(f"chat=p%2F{chat_id}"))
    return chat_id


def chat_of(world, chat_id: str) -> dict:
    response = httpx.get(f"{world.url}/api/projects/p/chats/{chat_id}", timeout=30)
    response.raise_for_status()
    return response.json()


def test_an_answer_streams_in_as_text_and_the_conversation_comes_back_on_reload(page, world, api):
    answer = ["First line\n", "second line ", "<img src=x onerror=alert(1)> **not bold**"]
    api.script(text(answer, usage=(1200, 30), hold_after=2))
    page.locator(".project[data-project='p'] [data-role='open-chat']").click()
    expect(page.locator("#workspace-title")).to_have_text("Chat · Pea")
    chat_id = new_chat(page)
    # Nothing to make a plan of yet: the button says why it is off; nothing is spent yet either.
    make_plan = page.locator("[data-role='make-plan']")
    expect(make_plan).to_be_disabled()
    assert "ask something first" in make_plan.get_attribute("title")
    expect(page.locator("[data-role='chat-totals']")).to_have_text("")
    box = page.locator("[data-role='chat-input']")
    assert "Ctrl+Enter" in box.get_attribute("placeholder")  # a keyboard: the shortcut is said
    box.fill("How do we add a health route?\nCheaply.")
    box.press("Control+Enter")
    messages = page.locator("[data-role='messages'] > li")
    # The stored question, then the answer as far as the model got: on the page before it ends.
    expect(messages.nth(0)).to_have_attribute("data-role", "user")
    expect(messages.nth(0).locator("[data-role='text']")).to_have_text("How do we add a health route?\nCheaply.")
    streaming = page.locator("[data-role='messages'] > li[data-streaming='1']")
    expect(streaming.locator("[data-role='text']")).to_have_text("First line\nsecond line ")
    expect(page.locator("[data-role='stop']")).to_be_visible()
    expect(page.locator("[data-role='send']")).to_be_disabled()
    expect(box).to_have_value("")
    api.release.set()
    reply = messages.nth(1)
    expect(reply).not_to_have_attribute("data-streaming", "1")
    expect(reply.locator("[data-role='text']")).to_have_text("".join(answer))
    # Plain text: the markup is characters, the line break is kept.
    assert reply.locator("img").count() == 0 and reply.locator("strong").count() == 0
    assert reply.locator("[data-role='text']").evaluate("n => getComputedStyle(n).whiteSpace") == "pre-wrap"
    assert reply.locator("[data-role='text']").evaluate("n => n.offsetHeight > 1.5 * parseFloat(getComputedStyle(n).lineHeight)")
    # Tokens and cost of the answer (from the price table: what the dashboard stored), and of the conversation.
    cost = chat_of(world, chat_id)["messages"][1]["cost_usd"]
    assert cost > 0
    expect(reply.locator("[data-role='meta']")).to_contain_text(f"1.2k in · 30 out · ${cost:.4f}")
    expect(page.locator("[data-role='chat-totals']")).to_have_text(f"1.2k in · 30 out · ${cost:.4f}")
    expect(page.locator("[data-role='stop']")).to_be_hidden()
    expect(make_plan).to_be_enabled()
    # Listed with its title (the first line), and in the URL: a reload resumes it.
    expect(page.locator(f".chat-item[data-chat='{chat_id}']")).to_contain_text("How do we add a health route?")
    page.reload()
    wait_ready(page)
    expect(page.locator("[data-role='messages'] > li")).to_have_count(2)
    expect(page.locator("[data-role='messages'] > li").nth(1).locator("[data-role='text']")).to_have_text("".join(answer))
    assert [m["role"] for m in chat_of(world, chat_id)["messages"]] == ["user", "assistant"]


def test_stop_mid_answer_keeps_the_partial_text(page, world, api):
    api.script(text(["Half ", "an answer", " never sent"], usage=(500, 9), hold_after=2))
    dropped = api.disconnects
    open_chat(page, world.url)
    chat_id = new_chat(page)
    page.locator("[data-role='chat-input']").fill("Tell me everything")
    page.locator("[data-role='send']").click()
    streaming = page.locator("[data-role='messages'] > li[data-streaming='1']")
    expect(streaming.locator("[data-role='text']")).to_have_text("Half an answer")
    page.locator("[data-role='stop']").click()
    reply = page.locator("[data-role='messages'] > li").nth(1)
    expect(reply).to_have_attribute("data-stopped", "1")
    expect(reply.locator("[data-role='text']")).to_have_text("Half an answer")
    expect(reply.locator("[data-role='meta']")).to_contain_text("stopped")
    expect(page.locator("[data-role='stop']")).to_be_hidden()
    expect(page.locator("[data-role='send']")).to_be_enabled()
    stored = chat_of(world, chat_id)["messages"][1]
    assert (stored["text"], stored["stopped"]) == ("Half an answer", True)
    wait_for(lambda: api.disconnects > dropped, timeout=10, what="the model's stream to be dropped")


def test_files_go_with_a_message(page, world, api, tmp_path):
    api.script(text(["Read it."]))
    open_chat(page, world.url)
    new_chat(page)
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nThe health route must not touch the database.\n")
    page.locator("[data-role='chat-files']").set_input_files(str(notes))
    chip = page.locator("[data-role='chat-attachments'] li[data-name='notes.md']")
    expect(chip).to_be_visible()
    page.locator("[data-role='chat-input']").fill("See the notes")
    page.locator("[data-role='send']").click()
    user = page.locator("[data-role='messages'] > li").nth(0)
    expect(user.locator(".chip")).to_have_text("notes.md")
    expect(page.locator("[data-role='messages'] > li").nth(1).locator("[data-role='text']")).to_have_text("Read it.")
    expect(chip).to_have_count(0)
    sent = json.dumps(api.requests[-1]["body"]["messages"][-1])
    assert "must not touch the database" in sent


def test_an_api_error_is_told_once_on_the_answer_and_retry_asks_again(page, world, api):
    api.script(http_error(529), text(["Back again."], usage=(300, 4)))
    open_chat(page, world.url)
    chat_id = new_chat(page)
    page.locator("[data-role='chat-input']").fill("Anyone there?")
    page.locator("[data-role='send']").click()
    messages = page.locator("[data-role='messages'] > li")
    reply = messages.nth(1)
    expect(reply.locator("[data-role='message-error']")).to_contain_text("overloaded")
    expect(page.locator("[data-role='send']")).to_be_enabled()
    # Said once, on the answer; an answer that used nothing shows no "0 in · 0 out · $0.0000".
    expect(page.locator("[data-role='chat-error']")).to_be_hidden()
    expect(page.get_by_text("overloaded")).to_have_count(1)
    expect(reply.locator("[data-role='meta']")).not_to_contain_text(" in")
    expect(reply.locator("[data-role='meta']")).not_to_contain_text("$")
    expect(page.locator("[data-role='chat-totals']")).to_have_text("")
    # Retry sends the same question again, as a new message (its title says so).
    retry = reply.locator("[data-role='retry']")
    assert "new message" in retry.get_attribute("title")
    page.locator("[data-role='chat-input']").fill("a draft of the next question")
    retry.click()
    expect(messages).to_have_count(4)
    expect(messages.nth(2).locator("[data-role='text']")).to_have_text("Anyone there?")
    expect(messages.nth(3).locator("[data-role='text']")).to_have_text("Back again.")
    expect(messages.nth(3).locator("[data-role='meta']")).to_contain_text("300 in · 4 out")
    expect(page.locator("[data-role='retry']")).to_have_count(0)
    expect(page.locator("[data-role='chat-input']")).to_have_value("a draft of the next question")  # left as it was
    stored = chat_of(world, chat_id)["messages"]
    assert [(m["role"], m["text"]) for m in stored] == [
        ("user", "Anyone there?"), ("assistant", ""), ("user", "Anyone there?"), ("assistant", "Back again.")]
    assert "Anyone there?" in json.dumps(api.requests[-1]["body"]["messages"][-1])


def test_without_a_key_the_panel_says_how_to_enable_the_chat_and_the_board_works(browser, tmp_path, api):
    board = chat_board(tmp_path, api, agent=False, key=False)
    asked = len(api.requests)
    try:
        context, page = open_page(browser, board.url)
        page.goto(board.url)
        wait_ready(page)
        page.locator(".project[data-project='p'] [data-role='open-chat']").click()
        hint = page.locator("[data-role='chat-hint']")
        expect(hint).to_be_visible()
        expect(hint).to_contain_text(KEY_ENV)
        # Plain text with its code in <code> (no literal backticks), in the main area, not the list's column.
        expect(hint.locator("code")).to_have_text("chat.api_key_env")
        assert "`" not in hint.inner_text()
        expect(page.locator(".chat-view [data-role='chat-hint']")).to_be_visible()
        assert hint.bounding_box()["width"] > page.locator(".chat-side").bounding_box()["width"]
        expect(page.locator("[data-role='new-chat']")).to_be_disabled()
        expect(page.locator("[data-role='chat-input']")).to_have_count(0)
        # A conversation made elsewhere opens without an input either; the hint stands in for it.
        chat_id = httpx.post(f"{board.url}/api/projects/p/chats", json={}, timeout=30).json()["id"]
        open_chat(page, board.url, chat_id)
        expect(page.locator("[data-role='chat-disabled']")).to_contain_text(KEY_ENV)
        assert "`" not in page.locator("[data-role='chat-disabled']").inner_text()
        expect(page.locator("[data-role='chat-input']")).to_have_count(0)
        expect(page.locator("[data-role='make-plan']")).to_be_hidden()
        # Everything else works: the panel closes, a task is created and shows on the board.
        page.keyboard.press("Escape")
        expect(page.locator("#workspace")).to_be_hidden()
        task_id = board.create("Still works")
        expect(page.locator(f".card[data-id='{task_id}']")).to_be_visible()
        assert page.errors == [], page.errors
        assert len(api.requests) == asked  # the model was never asked
        context.close()
    finally:
        board.close()


def test_the_chat_fits_a_phone_one_pane_at_a_time(browser, world, api):
    api.script(text(["A short answer."]))
    context, page = open_page(browser, world.url, width=390, height=844, is_mobile=True, has_touch=True)
    try:
        open_chat(page, world.url)
        box = page.locator("#workspace").bounding_box()
        assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, 390, 844)
        expect(page.locator(".chat-side")).to_be_visible()
        chat_id = new_chat(page)
        expect(page.locator(".chat-side")).to_be_hidden()  # the conversation has the screen
        # A touch screen has no Ctrl key: the hint does not offer it.
        assert "Ctrl" not in page.locator("[data-role='chat-input']").get_attribute("placeholder")
        page.locator("[data-role='chat-input']").fill("Hello " + "x" * 200)
        page.locator("[data-role='send']").tap()
        expect(page.locator("[data-role='messages'] > li").nth(1).locator("[data-role='text']")).to_have_text("A short answer.")
        assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
        assert page.locator("#workspace-body").evaluate("node => node.scrollWidth <= node.clientWidth")
        # Send is whole on the screen. (The answer's end draws the conversation again from what was
        # stored, so the button is asked for until that drawing is there, not measured once.)
        expect(page.locator("[data-role='send']")).to_be_in_viewport(ratio=1)
        page.locator(".chat-back").tap()
        expect(page.locator(f".chat-item[data-chat='{chat_id}']")).to_be_visible()
        page.locator("#workspace-close").tap()
        expect(page.locator("#workspace")).to_be_hidden()
        assert page.errors == [], page.errors
    finally:
        context.close()


def test_on_a_phone_the_list_follows_a_streaming_answer_with_send_and_stop_on_one_row(browser, world, api):
    answer = ["".join(f"answer line {i}\n" for i in range(25)), "".join(f"more line {i}\n" for i in range(25)), "the end"]
    api.script(text(answer, hold_after=1), text(answer, hold_after=1))
    context, page = open_page(browser, world.url, width=390, height=844, is_mobile=True, has_touch=True)
    messages = page.locator("[data-role='messages']")
    at_end = "n => n.scrollHeight - n.scrollTop - n.clientHeight < 2"
    try:
        open_chat(page, world.url)
        new_chat(page)
        page.locator("[data-role='chat-input']").fill("".join(f"question line {i}\n" for i in range(30)))
        page.locator("[data-role='send']").tap()
        streaming = page.locator("[data-role='messages'] > li[data-streaming='1']")
        expect(streaming.locator("[data-role='text']")).to_have_text(answer[0])
        # Stop came: on the same row as Send, both on the screen.
        stop, send = page.locator("[data-role='stop']"), page.locator("[data-role='send']")
        expect(stop).to_be_visible()
        stop_box, send_box = stop.bounding_box(), send.bounding_box()
        assert abs(stop_box["y"] - send_box["y"]) < 2, (stop_box, send_box)
        assert send_box["x"] + send_box["width"] <= 390 and stop_box["x"] >= 0
        # The list followed the answer: its end (the text so far) is what shows.
        page.wait_for_function(f"() => ({at_end})(document.querySelector(\"[data-role='messages']\"))", timeout=10_000)
        list_box, live_box = messages.bounding_box(), streaming.bounding_box()
        assert live_box["y"] + live_box["height"] <= list_box["y"] + list_box["height"] + 2, (live_box, list_box)
        api.release.set()
        expect(page.locator("[data-role='messages'] > li[data-streaming='1']")).to_have_count(0)
        expect(page.locator("[data-role='messages'] > li").nth(1).locator("[data-role='text']")).to_have_text(
            "".join(answer))
        assert messages.evaluate(at_end)

        # Scrolled up to read, the next answer does not pull the list away from there.
        api.release.clear()
        page.locator("[data-role='chat-input']").fill("Again")
        page.locator("[data-role='send']").tap()
        expect(streaming).to_have_count(1)
        messages.evaluate("n => { n.scrollTop = 0; n.dispatchEvent(new Event('scroll')); }")
        api.release.set()
        expect(page.locator("[data-role='messages'] > li")).to_have_count(4)
        expect(page.locator("[data-role='send']")).to_be_enabled()
        assert messages.evaluate("n => n.scrollTop") == 0
        assert page.errors == [], page.errors
    finally:
        context.close()


def test_the_chat_panel_has_no_serious_accessibility_violations(browser, world, api):
    api.script(text(["An answer\nover two lines."]))
    context, page = open_page(browser, world.url, bypass_csp=True)
    try:
        open_chat(page, world.url)
        new_chat(page)
        page.locator("[data-role='chat-input']").fill("A question")
        page.locator("[data-role='send']").click()
        expect(page.locator("[data-role='messages'] > li")).to_have_count(2)
        expect(page.locator("[data-role='send']")).to_be_enabled()
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
        serious = [{"id": v["id"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
                   for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert serious == [], json.dumps(serious, indent=1)
        assert page.errors == [], page.errors
    finally:
        context.close()
