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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from backend.chat import files as chat_files
from backend.chat.convo import api_messages
from backend.chat.store import Attachment, ChatStore, Conversation, Message
from backend.models import utcnow
from chat_support import KEY, KEY_ENV, ChatWorld, chat_config
from fakes.messages_standin import MessagesStandIn, text
from support import ROOT, free_port, make_repo, wait_for, wait_for_http
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
    # Over the API's limit per image (5 MB of base64), though under the limit per file.
    ([("big.png", PNG + b"\0" * (chat_files.IMAGE_MAX_BYTES - len(PNG) + 1))], 413, "too_large",
     "big.png: an image in a chat may be at most 3.75 MiB"),
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


def test_an_image_at_the_limit_is_taken(world):
    chat_id = world.new_chat()
    image = PNG + b"\0" * (chat_files.IMAGE_MAX_BYTES - len(PNG))
    [saved] = _upload(world, chat_id, [("exact.png", image)]).json()["attachments"]
    assert saved["size"] == chat_files.IMAGE_MAX_BYTES
    assert len(base64.b64encode(image)) == 5 * 1024 * 1024  # what the API takes per image


def test_a_chat_holds_at_most_20_mib_of_files(world):
    chat_id = world.new_chat()
    half = b"x" * (chat_files.CHAT_MAX_BYTES // 2)
    assert _upload(world, chat_id, [("a.txt", half), ("b.txt", half)]).status_code == 201
    error = assert_error(_upload(world, chat_id, [("c.txt", b"one byte more")]), 413, "too_large")
    assert "larger than 20 MiB together" in error["message"] and "new chat" in error["message"]
    assert [a["name"] for a in _attachments(world, chat_id)] == ["a.txt", "b.txt"]
    assert sorted(p.name for p in (world.chats_dir / "alpha" / f"{chat_id}.files").iterdir()
                  if p.is_file()) == sorted(a["id"] for a in _attachments(world, chat_id))


def _attachments(world: ChatWorld, chat_id: str) -> list[dict]:
    """The chat's files as its file lists them."""
    return [a.model_dump(mode="json") for a in ChatStore(world.chats_dir).load("alpha", chat_id).attachments.values()]


def test_each_question_sends_the_newest_files_within_the_apis_limits(world):
    chat_id = world.new_chat()
    sent = []
    for count in (10, 10, 2):  # 22 images in three messages: the API takes 20 at most
        uploaded = _upload(world, chat_id, [(f"shot{len(sent) + i}.png", PNG + bytes([i])) for i in range(count)])
        ids = [a["id"] for a in uploaded.json()["attachments"]]
        sent.append(ids)
        world.api.script(text(["Seen."]))
        world.send(chat_id, f"{count} more", attachments=ids)
    blocks = [b for m in world.api.requests[-1]["body"]["messages"] if m["role"] == "user" for b in m["content"]]
    assert sum(b["type"] == "image" for b in blocks) == 20
    left_out = [b["text"] for b in blocks if b["type"] == "text" and "left out" in b["text"]]
    assert left_out == ["(The attached file 'shot0.png' was left out: too much for one request.)",
                        "(The attached file 'shot1.png' was left out: too much for one request.)"]
    first = world.api.requests[-1]["body"]["messages"][0]["content"]
    assert first[0]["text"] == "10 more" and first[1]["text"] == left_out[0] and first[3]["type"] == "image"


def test_the_request_budget_is_checked_before_files_are_read(tmp_path):
    """Bytes: the newest first up to 16 MiB; an image stored before the 3.75 MiB limit is left
    out; a file left out is never read."""
    now = utcnow()
    conversation = Conversation("aaaaaaaaaa", "t", now)
    sizes = {"old0000000": 9 * 1024 * 1024, "new0000000": 9 * 1024 * 1024, "small00000": 1000}
    for attachment_id, size in sizes.items():
        conversation.attachments[attachment_id] = Attachment(id=attachment_id, name=f"{attachment_id}.txt", size=size,
                                                             content_type="text/plain", image=False, sha256="",
                                                             at=now)
    conversation.attachments["bigimage00"] = Attachment(id="bigimage00", name="huge.png", image=True, sha256="",
                                                        size=chat_files.IMAGE_MAX_BYTES + 1,
                                                        content_type="image/png", at=now)
    for n, ids in enumerate((["old0000000", "small00000"], ["bigimage00"], ["new0000000"])):
        conversation.messages.append(Message(id=f"m{n}", role="user", text=f"message {n}", at=now, attachments=ids))
    read = []
    turns = api_messages(conversation, lambda attachment_id: read.append(attachment_id) or b"x")
    assert read == ["small00000", "new0000000"]  # in the conversation's order; the rest never read
    [turn] = turns
    texts = [b["text"] for b in turn["content"]]
    assert "(The attached file 'old0000000.txt' was left out: too much for one request.)" in texts
    assert "(The attached file 'huge.png' was left out: the image is larger than the API takes.)" in texts


def _held_upload(world: ChatWorld, chat_id: str, name: str, data: bytes, go_on: threading.Event):
    """An upload whose body stops after the file's first bytes until `go_on` is set."""
    boundary = "heldboundary0123"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: text/plain\r\n\r\n").encode() + data[:4]

    def body():
        yield head
        assert go_on.wait(30)
        yield data[4:] + f"\r\n--{boundary}--\r\n".encode()

    return world.client.post(world.url(chat_id, "attachments"), content=body(),
                             headers={"content-type": f"multipart/form-data; boundary={boundary}"})


@pytest.mark.parametrize("limit", ["files", "bytes"])
def test_uploads_at_once_cannot_pass_the_chats_limits_together(world, monkeypatch, limit):
    if limit == "files":
        monkeypatch.setattr(chat_files, "FILES_PER_CHAT", 1)
    else:
        monkeypatch.setattr(chat_files, "CHAT_MAX_BYTES", 30)
    chat_id = world.new_chat()
    incoming = world.chats_dir / "alpha" / f"{chat_id}.files" / ".incoming"
    go_on = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_held_upload, world, chat_id, "first.txt", b"first file, 20 bytes", go_on)
        # The first upload is being received (the chat was read before its body): the second one
        # comes and goes meanwhile.
        wait_for(lambda: incoming.is_dir() and any(incoming.iterdir()), timeout=30, what="the first upload to start")
        assert _upload(world, chat_id, [("second.txt", b"second file, 20 b")]).status_code == 201
        go_on.set()
        refused = first.result(timeout=30)
    assert refused.status_code == (409 if limit == "files" else 413), refused.text
    assert [a["name"] for a in _attachments(world, chat_id)] == ["second.txt"]
    assert [p for p in incoming.iterdir()] == []  # the refused file is gone


def test_appends_from_threads_at_once_never_lose_a_record(tmp_path):
    """A torn tail is cut under the conversation's lock: a thread that saw it cannot cut a record
    another thread has just written."""
    store = ChatStore(tmp_path)
    chat_id = store.create("alpha", "t").id
    path = store.path("alpha", chat_id)
    threads, rounds = 8, 60
    for round_ in range(rounds):
        with open(path, "ab") as handle:
            handle.write(b"{")  # a crash's torn tail, shorter than any record
        barrier = threading.Barrier(threads)

        def append(n: int) -> None:
            barrier.wait()
            store.append("alpha", chat_id, {"type": "title", "title": f"{round_}-{n}", "at": utcnow().isoformat()})

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(append, range(threads)))
        titles = [line for line in path.read_bytes().split(b"\n") if line.startswith(b'{"type":"title"')]
        assert len(titles) == threads * (round_ + 1), f"round {round_}: records were lost"


def test_an_upload_removes_what_uploads_that_never_ended_left(world):
    chat_id = world.new_chat()
    incoming = world.chats_dir / "alpha" / f"{chat_id}.files" / ".incoming"
    incoming.mkdir(parents=True)
    old, fresh = incoming / "upload-old", incoming / "upload-fresh"
    old.write_bytes(b"left by a killed dashboard")
    fresh.write_bytes(b"an upload under way")
    an_hour_ago = time.time() - 3601
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert _upload(world, chat_id, [("notes.txt", b"new")]).status_code == 201
    assert not old.exists() and fresh.exists()
