"""Where conversations live and what may be attached: one JSONL file per conversation, kept
across a restart of a real baton-dashboard process (whose logs never hold the key); a damaged
file is refused and left as it is; a crash's torn last line is ignored; attachments keep to
their limits, have safe names and reach the model as image or text blocks."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backend.chat import files as chat_files
from chat_support import KEY, KEY_ENV, ChatWorld, chat_config
from fakes.messages_standin import MessagesStandIn, text
from support import ROOT, free_port, make_repo, wait_for_http
from test_api import assert_error

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 20


@pytest.fixture
def world(dashboard_factory, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    repo = make_repo(tmp_path, "localproject")
    with MessagesStandIn() as api:
        client = dashboard_factory([{"id": "alpha", "path": str(repo)}], timeout=5.0,
                                   chat=chat_config(api.url, tmp_path / "chats"))
        yield ChatWorld(client=client, api=api, agent=None, chats_dir=tmp_path / "chats")


def _upload(world: ChatWorld, chat_id: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    return world.client.post(world.url(chat_id, "attachments"),
                             files=[("files", (name, data, "application/octet-stream")) for name, data in files])


# ----- the conversation file ------------------------------------------------------------------

def test_a_damaged_conversation_is_refused_and_left_as_it_is(world):
    world.api.script(text(["Hi."]))
    chat_id = world.new_chat()
    world.send(chat_id, "Hello")
    path = world.chats_dir / "alpha" / f"{chat_id}.jsonl"
    with open(path, "ab") as handle:
        handle.write(b'{"type": "message", "message": {"role": "nobody"}}\n')
    before = path.read_bytes()
    error = assert_error(world.client.get(world.url(chat_id)), 409, "chat_corrupt")
    assert "line 5" in error["message"]
    assert_error(world.client.post(world.url(chat_id, "messages"), json={"text": "still there?"}), 409, "chat_corrupt")
    [listed] = world.client.get(world.url()).json()["chats"]
    assert listed["id"] == chat_id and "line 5" in listed["problem"]
    assert path.read_bytes() == before  # never repaired, never rewritten
    assert len(world.api.requests) == 1


def test_a_torn_last_line_is_ignored_and_cut_before_the_next_record(world):
    world.api.script(text(["One."]), text(["Two."]))
    chat_id = world.new_chat()
    world.send(chat_id, "First")
    path = world.chats_dir / "alpha" / f"{chat_id}.jsonl"
    with open(path, "ab") as handle:
        handle.write(b'{"type":"message","message":{"id":"x","ro')  # a crash in the middle of an append
    assert [m["text"] for m in world.chat(chat_id)["messages"]] == ["First", "One."]
    world.send(chat_id, "Second")
    assert [m["text"] for m in world.chat(chat_id)["messages"]] == ["First", "One.", "Second", "Two."]
    assert b'"ro\n' not in path.read_bytes() and path.read_bytes().endswith(b"\n")


def test_conversations_survive_a_restart_and_no_log_holds_the_key(tmp_path):
    repo = make_repo(tmp_path, "localproject")
    config = tmp_path / "site" / "config" / "projects.yaml"
    config.parent.mkdir(parents=True)
    with MessagesStandIn() as api:
        config.write_text(f"projects:\n  - id: alpha\n    path: {repo}\n"
                          f"chat:\n  base_url: {api.url}\n  api_key_env: {KEY_ENV}\n  max_retries: 0\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT), KEY_ENV: KEY}
        logs = tmp_path / "logs"
        logs.mkdir()

        def start(n: int) -> tuple[subprocess.Popen, httpx.Client]:
            port = free_port()
            with open(logs / f"out{n}", "w") as out, open(logs / f"err{n}", "w") as err:
                proc = subprocess.Popen([sys.executable, "-m", "backend.dashboard.cli", "--config", str(config),
                                         "--port", str(port), "--log-level", "debug"], cwd=tmp_path, env=env,
                                        stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            wait_for_http(f"http://127.0.0.1:{port}/api/health", proc)
            return proc, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

        proc, client = start(1)
        try:
            world = ChatWorld(client=client, api=api, agent=None, chats_dir=tmp_path / "site" / "data" / "chats")
            api.script(text(["Before the restart."]))
            chat_id = world.new_chat()
            world.send(chat_id, "Remember this.")
        finally:
            client.close()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        # The default folder: data/chats beside the config file's folder.
        assert (tmp_path / "site" / "data" / "chats" / "alpha" / f"{chat_id}.jsonl").is_file()

        proc, client = start(2)
        try:
            world.client = client
            [listed] = client.get(world.url()).json()["chats"]
            assert listed["id"] == chat_id and listed["messages"] == 2
            api.script(text(["After it."]))
            world.send(chat_id, "Still there?")
            assert [m["content"][0]["text"] for m in api.requests[-1]["body"]["messages"]] == [
                "Remember this.", "Before the restart.", "Still there?"]
        finally:
            client.close()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and ".git" not in p.parts)
    assert KEY.encode() not in written  # not in the logs (debug level), the chats or anything else
    assert b"Sending HTTP Request" in (logs / "err1").read_bytes()  # the SDK's debug log was on


# ----- attachments ----------------------------------------------------------------------------

def test_attachments_reach_the_model_as_images_and_text(world):
    chat_id = world.new_chat()
    resp = _upload(world, chat_id, [("shot.png", PNG), ("../../etc/notes.md", b"# Notes\nuse sqlite\n")])
    assert resp.status_code == 201, resp.text
    shot, notes = resp.json()["attachments"]
    assert (shot["name"], shot["image"], shot["content_type"], shot["size"]) == ("shot.png", True, "image/png", len(PNG))
    assert (notes["name"], notes["image"]) == ("notes.md", False)  # no path parts survive
    assert set(shot) == {"id", "name", "size", "content_type", "image", "sha256", "at"}
    world.api.script(text(["I see a picture and notes."]))
    events = world.send(chat_id, "Look at these", attachments=[shot["id"], notes["id"]])
    assert [a["name"] for a in events[0][1]["attachments"]] == ["shot.png", "notes.md"]
    content = world.api.requests[-1]["body"]["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "Look at these"}
    assert content[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                      "data": base64.b64encode(PNG).decode()}}
    assert content[2]["type"] == "text" and "use sqlite" in content[2]["text"] and "notes.md" in content[2]["text"]
    assert world.client.get(world.url(chat_id, "attachments", shot["id"])).content == PNG
    assert [a["id"] for a in world.chat(chat_id)["messages"][0]["attachments"]] == [shot["id"], notes["id"]]
    # A message naming a file this chat does not have is refused (before anything is stored).
    assert_error(world.client.post(world.url(chat_id, "messages"), json={"text": "x", "attachments": ["zzzzzzzzzz"]}),
                 422, "unknown_attachment")
    assert len(world.chat(chat_id)["messages"]) == 2


@pytest.mark.parametrize("files, status, code, words", [
    ([("fake.png", b"just text, not a png")], 415, "unsupported_type", "not image/png"),
    ([("data.txt", b"\xff\xfe\x00\x01")], 415, "unsupported_type", "not UTF-8"),
    ([("tool.exe", b"MZ\x90\x00")], 415, "unsupported_type", "not accepted"),
    ([("big.log", b"x" * (chat_files.FILE_MAX_BYTES + 1))], 413, "too_large", "larger than 10 MiB"),
    ([(f"f{i}.txt", b"x") for i in range(chat_files.FILES_PER_MESSAGE + 1)], 409, "too_many_attachments", "at most 10"),
    ([("good.txt", b"fine"), ("bad.exe", b"MZ")], 415, "unsupported_type", "bad.exe"),
    ([("..", b"x")], 422, "invalid_name", "no usable file name"),
])
def test_attachment_limits(world, files, status, code, words):
    chat_id = world.new_chat()
    error = assert_error(_upload(world, chat_id, files), status, code)
    assert words in error["message"]
    # All or nothing: a refused upload stores no file at all.
    folder = world.chats_dir / "alpha" / f"{chat_id}.files"
    assert not folder.exists() or [p for p in folder.rglob("*") if p.is_file()] == []
    assert b"attachment" not in (world.chats_dir / "alpha" / f"{chat_id}.jsonl").read_bytes()


@pytest.mark.parametrize("raw, safe", [
    ("../../etc/passwd.txt", "passwd.txt"), ("..\\..\\boot.ini.txt", "boot.ini.txt"), (".hidden.md", "hidden.md"),
    ("what?.md", "what_.md"),
])
def test_names_are_cleaned(world, raw, safe):
    chat_id = world.new_chat()
    resp = _upload(world, chat_id, [(raw, b"text")])
    assert resp.status_code == 201, resp.text
    assert [a["name"] for a in resp.json()["attachments"]] == [safe]


def test_a_pdf_reaches_the_model_as_a_document(world):
    chat_id = world.new_chat()
    pdf = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n"
    [doc] = _upload(world, chat_id, [("spec.pdf", pdf)]).json()["attachments"]
    world.api.script(text(["Read it."]))
    world.send(chat_id, "", attachments=[doc["id"]])
    content = world.api.requests[-1]["body"]["messages"][0]["content"]
    assert content == [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                       "data": base64.b64encode(pdf).decode()}}]


def test_the_chat_files_stay_in_the_chat_folder(world):
    chat_id = world.new_chat()
    [saved] = _upload(world, chat_id, [("../../../escape.txt", b"inside")]).json()["attachments"]
    stored = list((world.chats_dir / "alpha").rglob("*"))
    assert (world.chats_dir / "alpha" / f"{chat_id}.files" / saved["id"]).read_bytes() == b"inside"
    assert all(Path(p).resolve().is_relative_to(world.chats_dir.resolve()) for p in stored)
    assert list(world.chats_dir.parent.rglob("escape.txt")) == []  # the name is metadata, never a path
