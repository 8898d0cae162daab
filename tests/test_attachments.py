"""Attachments on a task through the real agent API (uvicorn on a free port): limits (size, count,
type, names and traversal), unknown and archived tasks, bytes stored intact, listed in the task,
downloads that are never rendered in place."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from backend import attachments as files
from backend.archive import archive_finished
from backend.models import Owner, TaskStatus, utcnow
from support import git

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(200))
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg bytes"
GIF = b"GIF89a" + b"gif bytes"
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"webp bytes"
PDF = b"%PDF-1.7\n" + b"pdf bytes"


def new_task(agent, title: str = "with files") -> str:
    resp = agent.client.post("/agent/tasks", json={"title": title})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def upload(agent, task_id: str, *items: tuple[str, bytes], field: str = "files") -> httpx.Response:
    return agent.client.post(f"/agent/tasks/{task_id}/attachments",
                             files=[(field, (name, data)) for name, data in items])


def raw_upload(agent, task_id: str, filename: str, data: bytes) -> httpx.Response:
    """A multipart body written by hand: the file name's bytes reach the server as they are
    (httpx would percent-encode control characters itself)."""
    body = (b"--b0undary\r\nContent-Disposition: form-data; name=\"files\"; filename=\"" + filename.encode()
            + b"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--b0undary--\r\n")
    return agent.client.post(f"/agent/tasks/{task_id}/attachments", content=body,
                             headers={"Content-Type": "multipart/form-data; boundary=b0undary"})


def error_of(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["error"]["code"]


def stored(agent, task_id: str) -> Path:
    return agent.settings.project_dir / "data" / "attachments" / task_id


def leftovers(agent) -> list[Path]:
    incoming = agent.settings.project_dir / "data" / "attachments" / ".incoming"
    return list(incoming.iterdir()) if incoming.exists() else []


def test_files_are_stored_intact_and_listed_in_the_task(agent):
    task_id = new_task(agent)
    notes = "# Notes\n\nUnicode is fine: é, 日本\n".encode()
    resp = upload(agent, task_id, ("screen.png", PNG), ("notes.md", notes), ("spec.pdf", PDF))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["replaced"] == []
    by_name = {a["name"]: a for a in body["attachments"]}
    assert set(by_name) == {"screen.png", "notes.md", "spec.pdf"}
    assert by_name["screen.png"] | {"at": None} == {"name": "screen.png", "size": len(PNG), "content_type": "image/png",
                                                    "image": True, "sha256": hashlib.sha256(PNG).hexdigest(), "at": None}
    assert (by_name["notes.md"]["content_type"], by_name["notes.md"]["image"]) == ("text/markdown", False)
    assert by_name["spec.pdf"]["content_type"] == "application/pdf"
    # The bytes on disk, under data/attachments/<id>/, and in the task record (the board reads that).
    assert (stored(agent, task_id) / "screen.png").read_bytes() == PNG
    assert (stored(agent, task_id) / "notes.md").read_bytes() == notes
    task = agent.store.get(task_id)
    assert [a.name for a in task.attachments] == ["screen.png", "notes.md", "spec.pdf"]
    listed = agent.client.get(f"/agent/tasks/{task_id}/attachments").json()["attachments"]
    assert [a["name"] for a in listed] == ["screen.png", "notes.md", "spec.pdf"]
    detail = agent.client.get(f"/agent/tasks/pending/{task_id}.md").json()
    assert [a["name"] for a in detail["attachments"]] == ["screen.png", "notes.md", "spec.pdf"]
    assert leftovers(agent) == []
    # Runtime state: git never sees it.
    assert git(agent.settings.project_dir, "status", "--porcelain", "--untracked-files=all").strip() == ""


def test_downloads_are_attachments_never_rendered_in_place(agent):
    task_id = new_task(agent)
    page = b"<html><script>alert(1)</script></html>"
    assert upload(agent, task_id, ("shot.png", PNG), ("page.html", page), ("doc.pdf", PDF),
                  ("r\u00e9sum\u00e9 \"1\".txt", b"text")).status_code == 201
    image = agent.client.get(f"/agent/tasks/{task_id}/attachments/shot.png")
    assert image.status_code == 200 and image.content == PNG
    assert image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("attachment;")
    assert image.headers["x-content-type-options"] == "nosniff"
    html = agent.client.get(f"/agent/tasks/{task_id}/attachments/page.html")
    assert html.content == page and html.headers["content-type"].startswith("text/plain")
    pdf = agent.client.get(f"/agent/tasks/{task_id}/attachments/doc.pdf")
    assert pdf.content == PDF and pdf.headers["content-type"] == "application/octet-stream"
    odd = agent.client.get(f"/agent/tasks/{task_id}/attachments/r\u00e9sum\u00e9 _1_.txt")
    assert odd.status_code == 200 and odd.content == b"text"
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20_1_.txt" in odd.headers["content-disposition"]
    missing = agent.client.get(f"/agent/tasks/{task_id}/attachments/nothere.txt")
    assert error_of(missing) == (404, "not_found")


def test_same_name_again_replaces_the_file_and_says_so(agent):
    task_id = new_task(agent)
    assert upload(agent, task_id, ("log.txt", b"first\n"), ("keep.txt", b"kept\n")).status_code == 201
    resp = upload(agent, task_id, ("log.txt", b"second\n"))
    assert resp.status_code == 201 and resp.json()["replaced"] == ["log.txt"]
    task = agent.store.get(task_id)
    assert sorted(a.name for a in task.attachments) == ["keep.txt", "log.txt"]
    assert (stored(agent, task_id) / "log.txt").read_bytes() == b"second\n"
    assert next(a for a in task.attachments if a.name == "log.txt").sha256 == hashlib.sha256(b"second\n").hexdigest()


@pytest.mark.parametrize(("sent", "kept"), [
    ("../../etc/passwd.txt", "passwd.txt"),
    ("..\\..\\windows\\win.ini", "win.ini"),
    (".hidden.md", "hidden.md"),
    ("a..b.txt", "a.b.txt"),
    ("tab\there\u202e.txt", "tabhere.txt"),
    ("e\u0301t\u00e9.md", "\u00e9t\u00e9.md"),  # NFC
    ("e\u200d\u0301t\u00e9.md", "\u00e9t\u00e9.md"),  # NFC once the joiner between them is gone
    ("<\u200b\u0338 ok.txt", "\u226e ok.txt"),
    ("x" * 300 + ".log", "x" * 96 + ".log"),  # 100 characters, the extension kept
])
def test_names_are_sanitised_and_cannot_leave_the_folder(agent, sent, kept):
    task_id = new_task(agent)
    resp = raw_upload(agent, task_id, sent, b"content\n")
    assert resp.status_code == 201, resp.text
    assert [a["name"] for a in resp.json()["attachments"]] == [kept]
    assert (stored(agent, task_id) / kept).read_bytes() == b"content\n"
    assert sorted(p.name for p in stored(agent, task_id).iterdir()) == [kept]


@pytest.mark.parametrize("sent", ["..", "...", "/", "\u202e", "  .  "])
def test_a_name_with_nothing_left_is_refused(agent, sent):
    task_id = new_task(agent)
    assert error_of(raw_upload(agent, task_id, sent, b"x")) == (422, "invalid_name")
    assert agent.store.get(task_id).attachments == [] and leftovers(agent) == []


def test_traversal_in_the_download_path_finds_nothing(agent):
    task_id = new_task(agent)
    assert upload(agent, task_id, ("a.txt", b"a")).status_code == 201
    (agent.settings.project_dir / "secret.txt").write_text("secret")
    for name in ("..%2F..%2F..%2Fsecret.txt", "%2E%2E", ".incoming"):
        resp = agent.client.get(f"/agent/tasks/{task_id}/attachments/{name}")
        assert resp.status_code == 404, (name, resp.text)


@pytest.mark.parametrize(("name", "data"), [
    ("tool.exe", b"MZ"), ("archive.zip", b"PK\x03\x04"), ("noext", b"x"),
    ("fake.png", b"not a png"), ("fake.jpg", PNG), ("fake.gif", b"GIF88a"), ("fake.webp", b"RIFF\x00\x00\x00\x00WAVE"),
    ("fake.pdf", b"<html>"), ("binary.txt", b"\xff\xfe\x00bad"), ("cut.md", "é".encode()[:1]),
])
def test_types_are_checked_by_extension_and_content(agent, name, data):
    task_id = new_task(agent)
    assert error_of(upload(agent, task_id, (name, data))) == (415, "unsupported_type")
    assert agent.store.get(task_id).attachments == [] and leftovers(agent) == []


def test_every_allowed_kind_is_accepted(agent):
    task_id = new_task(agent)
    items = [("a.png", PNG), ("b.jpeg", JPEG), ("c.gif", GIF), ("d.webp", WEBP), ("e.pdf", PDF),
             ("f.py", b"print('hi')\n"), ("g.json", b"{}"), ("h.yaml", b"a: 1\n"), ("i.diff", b"--- a\n+++ b\n"),
             ("Makefile", b"all:\n"), ("empty.txt", b"")]
    resp = upload(agent, task_id, *items)
    assert resp.status_code == 201, resp.text
    images = {a["name"] for a in resp.json()["attachments"] if a["image"]}
    assert images == {"a.png", "b.jpeg", "c.gif", "d.webp"}


def test_a_file_over_10_mib_is_refused_and_nothing_is_kept(agent):
    task_id = new_task(agent)
    big = b"a" * (files.MAX_FILE_BYTES + 1)
    assert error_of(upload(agent, task_id, ("big.txt", big))) == (413, "too_large")
    assert agent.store.get(task_id).attachments == [] and leftovers(agent) == []
    exact = b"a" * files.MAX_FILE_BYTES
    assert upload(agent, task_id, ("exact.txt", exact)).status_code == 201
    assert (stored(agent, task_id) / "exact.txt").stat().st_size == files.MAX_FILE_BYTES


def test_more_than_50_mib_per_task_is_refused(agent):
    task_id = new_task(agent)
    chunk = b"b" * (files.MAX_FILE_BYTES - 1)
    for first in range(0, 5, 2):  # 5 files of ~10 MiB: just under 50 MiB
        names = [(f"part{i}.txt", chunk) for i in range(first, min(first + 2, 5))]
        assert upload(agent, task_id, *names).status_code == 201
    assert error_of(upload(agent, task_id, ("one-more.txt", b"c" * 100))) == (413, "too_large")
    # Replacing a file by a smaller one keeps the task under the limit: allowed.
    assert upload(agent, task_id, ("part0.txt", b"small")).status_code == 201
    assert leftovers(agent) == []


def test_at_most_20_files_per_task(agent):
    task_id = new_task(agent)
    assert upload(agent, task_id, *[(f"f{i}.txt", b"x") for i in range(19)]).status_code == 201
    assert error_of(upload(agent, task_id, ("a.txt", b"x"), ("b.txt", b"x"))) == (409, "too_many_attachments")
    assert upload(agent, task_id, ("f0.txt", b"replaced")).status_code == 201  # a replacement adds none
    assert upload(agent, task_id, ("last.txt", b"x")).status_code == 201
    assert len(agent.store.get(task_id).attachments) == 20
    assert error_of(upload(agent, task_id, ("over.txt", b"x"))) == (409, "too_many_attachments")
    other = new_task(agent, "another")
    assert error_of(upload(agent, other, *[(f"g{i}.txt", b"x") for i in range(21)])) == (409, "too_many_attachments")
    assert leftovers(agent) == []


def test_racing_uploads_cannot_pass_the_count_limit(agent):
    task_id = new_task(agent)
    assert upload(agent, task_id, *[(f"f{i}.txt", b"x") for i in range(15)]).status_code == 201
    answers: list[int] = []

    def one(i: int) -> None:
        with httpx.Client(base_url=agent.url, timeout=30) as client:
            answers.append(client.post(f"/agent/tasks/{task_id}/attachments",
                                       files=[("files", (f"race{i}-{j}.txt", b"y")) for j in range(2)]).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [201, 201, 409, 409, 409, 409]
    task = agent.store.get(task_id)
    assert len(task.attachments) == 19
    assert sorted(p.name for p in stored(agent, task_id).iterdir()) == sorted(a.name for a in task.attachments)


def test_unknown_invalid_and_archived_tasks(agent):
    assert error_of(upload(agent, "nosuchtask", ("a.txt", b"x"))) == (404, "not_found")
    assert error_of(upload(agent, "BAD", ("a.txt", b"x"))) == (400, "invalid_id")
    assert agent.client.get("/agent/tasks/nosuchtask/attachments").status_code == 404
    task_id = new_task(agent)
    agent.store.cancel(task_id)
    agent.store.update(task_id, finished_at=utcnow() - timedelta(days=30))
    assert [t.id for t in archive_finished(agent.store, 7)] == [task_id]
    assert error_of(upload(agent, task_id, ("a.txt", b"x"))) == (409, "invalid_transition")
    assert agent.client.get(f"/agent/tasks/{task_id}/attachments").json() == {"attachments": []}
    assert leftovers(agent) == []


def test_a_running_task_takes_files_too(agent):
    task_id = new_task(agent)
    agent.store.claim(Owner(pid=1, host="h", instance="i"), 60, task_id)
    assert upload(agent, task_id, ("late.txt", b"for the next turn")).status_code == 201
    assert agent.store.get(task_id).status is TaskStatus.in_progress


def test_malformed_bodies_are_refused_cleanly(agent):
    task_id = new_task(agent)
    url = f"/agent/tasks/{task_id}/attachments"
    assert error_of(agent.client.post(url, json={"files": []})) == (415, "unsupported_media_type")
    assert error_of(upload(agent, task_id, ("a.txt", b"x"), field="other")) == (422, "validation_error")
    no_file = agent.client.post(url, data={"files": "just text"}, files=[("x", ("", b""))])
    assert no_file.status_code == 422
    cut = agent.client.post(url, content=b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.txt\"\r\n\r\nab",
                            headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert error_of(cut) == (400, "malformed_multipart")
    empty = agent.client.post(url, content=b"--b--\r\n", headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert error_of(empty) == (422, "validation_error")
    assert agent.store.get(task_id).attachments == [] and leftovers(agent) == []


def test_a_hand_written_store_cannot_name_a_path_outside(agent):
    """The name rules hold on read too: a store edited to name `../x` is refused, not served."""
    from backend.models import Attachment
    with pytest.raises(ValueError):
        Attachment(name="../secret", size=1, content_type="text/plain", sha256="0" * 64, at=utcnow())
    with pytest.raises(ValueError):
        Attachment(name=".git", size=1, content_type="text/plain", sha256="0" * 64, at=utcnow())


def test_clean_name_is_public_and_small():
    assert files.clean_name("dir/sub/Report 2026.PDF") == "Report 2026.PDF"
    assert files.kind_for("Report 2026.PDF").content_type == "application/pdf"
    assert files.check_bytes("x.png", PNG).image is True
    with pytest.raises(files.AttachmentError) as refused:
        files.check_bytes("x.png", b"GIF89a")
    assert (refused.value.status, refused.value.code) == (415, "unsupported_type")


# ----- through the dashboard: relayed to the agent (http) or done on the store (local) ---------

@pytest.fixture(params=["http", "local"])
def board(request, agent_factory, dashboard_factory, tmp_path):
    """(dashboard client, project id, the store the files land in, the project folder)."""
    if request.param == "http":
        agent = agent_factory()
        client = dashboard_factory([{"id": "p", "agent_url": agent.url, "agent_project_id": agent.settings.project_id}],
                                   timeout=5.0)
        return client, agent.store, agent.settings.project_dir
    from backend.mirrors import MirrorWriter
    from backend.store import TaskStore
    from support import make_repo
    project = make_repo(tmp_path, "local")
    store = TaskStore(project / "data" / "dev-tasks.json", mirrors=MirrorWriter(project / "tasks"))
    store.initialize()
    return dashboard_factory([{"id": "p", "path": str(project)}], timeout=5.0), store, project


def test_the_dashboard_relays_uploads_lists_and_downloads(board):
    client, store, project = board
    task_id = client.post("/api/projects/p/tasks", json={"title": "from the board"}).json()["id"]
    url = f"/api/projects/p/tasks/{task_id}/attachments"
    resp = client.post(url, files=[("files", ("shot.png", PNG)), ("files", ("notes.md", b"# hi\n"))])
    assert resp.status_code == 201, resp.text
    assert [a["name"] for a in resp.json()["attachments"]] == ["shot.png", "notes.md"]
    assert [a.name for a in store.get(task_id).attachments] == ["shot.png", "notes.md"]
    assert (project / "data" / "attachments" / task_id / "shot.png").read_bytes() == PNG
    assert [a["name"] for a in client.get(url).json()["attachments"]] == ["shot.png", "notes.md"]
    image = client.get(f"{url}/shot.png")
    assert image.status_code == 200 and image.content == PNG and image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("attachment;")
    text = client.get(f"{url}/notes.md")
    assert text.content == b"# hi\n" and text.headers["content-type"].startswith("text/plain")
    # The task as the drawer reads it carries them too.
    assert [a["name"] for a in client.get(f"/api/projects/p/tasks/pending/{task_id}.md").json()["attachments"]] == [
        "shot.png", "notes.md"]
    # Refusals come through with the agent's code.
    assert error_of(client.get(f"{url}/none.txt")) == (404, "not_found")
    assert error_of(client.post(url, files=[("files", ("x.exe", b"MZ"))])) == (415, "unsupported_type")
    assert error_of(client.post("/api/projects/p/tasks/nosuchtask/attachments",
                                files=[("files", ("a.txt", b"x"))])) == (404, "not_found")


def test_the_dashboard_passes_a_10_mib_file_and_the_agent_refuses_a_bigger_one(board):
    client, store, project = board
    task_id = client.post("/api/projects/p/tasks", json={"title": "big"}).json()["id"]
    url = f"/api/projects/p/tasks/{task_id}/attachments"
    exact = b"z" * files.MAX_FILE_BYTES
    assert client.post(url, files=[("files", ("exact.log", exact))]).status_code == 201
    assert client.get(f"{url}/exact.log").content == exact
    over = client.post(url, files=[("files", ("over.log", exact + b"z"))])
    assert error_of(over) == (413, "too_large")
    assert [a.name for a in store.get(task_id).attachments] == ["exact.log"]


@pytest.mark.parametrize("name", ["%2E%2E", "%2E", ".incoming", "..%2Fsecret.txt"])
def test_the_dashboard_never_relays_a_name_that_is_not_one(board, name):
    """`..` reached the agent as a dot segment, which httpx removes: `…/attachments/..` fetched the
    task itself. A name that cannot be an attachment's is refused before anything is relayed."""
    client, store, project = board
    task_id = client.post("/api/projects/p/tasks", json={"title": "dots"}).json()["id"]
    url = f"/api/projects/p/tasks/{task_id}/attachments"
    assert client.post(url, files=[("files", ("a.txt", b"a"))]).status_code == 201
    resp = client.get(f"{url}/{name}")
    assert error_of(resp) == (404, "not_found"), resp.text


@pytest.mark.parametrize("name", ["..", ".", "../tasks"])
def test_the_http_connector_itself_refuses_a_dot_name(agent, name):
    """Checked again where the URL is built (q() leaves dots as they are)."""
    import asyncio

    from backend.dashboard.config import ProjectConfig
    from backend.dashboard.connectors.base import AgentError
    from backend.dashboard.connectors.http import HTTPConnector
    task_id = new_task(agent)
    assert upload(agent, task_id, ("a.txt", b"a")).status_code == 201

    async def fetch() -> bytes:
        async with httpx.AsyncClient() as client:
            connector = HTTPConnector(ProjectConfig(id="p", agent_url=agent.url), client, 5)
            return await connector.attachment_file(task_id, name)
    with pytest.raises(AgentError) as refused:
        asyncio.run(fetch())
    assert refused.value.status == 404 and refused.value.body["error"]["code"] == "not_found"


# ----- retention: files stay with their task; half-received uploads do not stay ----------------

def test_an_archived_tasks_files_stay_for_its_rerun(agent):
    task_id = new_task(agent)
    assert upload(agent, task_id, ("spec.md", b"# spec\n")).status_code == 201
    agent.store.cancel(task_id)
    agent.store.update(task_id, finished_at=utcnow() - timedelta(days=30))
    from backend.archive import Archiver
    assert Archiver(agent.store, 7).run_if_due() == 1 and agent.store.archive.get(task_id) is not None
    assert (stored(agent, task_id) / "spec.md").read_bytes() == b"# spec\n"
    assert agent.client.post(f"/agent/tasks/{task_id}/rerun").status_code == 200
    assert agent.client.get(f"/agent/tasks/{task_id}/attachments/spec.md").content == b"# spec\n"


def test_a_killed_uploads_leftover_is_swept_hourly_even_with_no_more_uploads(agent):
    import os
    from backend.archive import Archiver
    incoming = agent.settings.project_dir / "data" / "attachments" / ".incoming"
    incoming.mkdir(parents=True)
    stale, young = incoming / "upload-stale", incoming / "upload-young"
    stale.write_bytes(b"half a file")
    young.write_bytes(b"an upload under way")
    old = utcnow().timestamp() - files.STALE_UPLOAD_SECONDS - 60
    os.utime(stale, (old, old))
    clock = [0.0]
    archiver = Archiver(agent.store, 0, clock=lambda: clock[0])  # archiving off: the sweep still runs
    archiver.run_if_due()
    assert sorted(p.name for p in incoming.iterdir()) == ["upload-young"]
    # And before an upload, as before.
    stale.write_bytes(b"half a file")
    os.utime(stale, (old, old))
    task_id = new_task(agent)
    assert upload(agent, task_id, ("a.txt", b"a")).status_code == 201
    assert sorted(p.name for p in incoming.iterdir()) == ["upload-young"]


def test_the_sweep_creates_nothing(tmp_path):
    assert files.AttachmentStore(tmp_path / "data").sweep_incoming() == 0
    assert not (tmp_path / "data").exists()
