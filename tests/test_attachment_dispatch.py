"""Attachments reach the coding agent: a real agent (uvicorn, dispatcher, real git with an origin)
and the fake CLIs. The files are in the worktree at .baton/attachments/ during the turn, named in
the prompt, never in the landed commit (even when the agent `git add -f`s them); an upload while
the task runs reaches its next turn; images go to Codex (`localImage`) and OpenCode (`--file`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.models import TaskStatus
from conftest import fake_task
from runtimes.runtime_fakes import RuntimeFake, make_fake
from support import git, origin_of, submit_task, wait_for, wait_task_done

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
NOTES = "Use the blue button.\n"


def attach(agent, task_id: str, *items: tuple[str, bytes]) -> None:
    resp = agent.client.post(f"/agent/tasks/{task_id}/attachments", files=[("files", item) for item in items])
    assert resp.status_code == 201, resp.text


def start_dispatcher(agent) -> None:
    assert agent.client.post("/agent/dispatcher/start").status_code == 200


def landed_files(agent) -> list[str]:
    return git(origin_of(agent.settings.project_dir), "ls-tree", "-r", "--name-only", "main").split("\n")


def test_files_are_in_the_worktree_named_in_the_prompt_and_never_landed(agent_factory, fake_cli):
    agent = agent_factory(config=fake_cli.config())
    task_id = submit_task(agent, fake_task("Use the attachments", {"steps": [
        {"read": ".baton/attachments/notes.txt", "into": "seen-notes.txt"},
        {"read": ".baton/attachments/r\u00e9sum\u00e9.md", "into": "seen-resume.txt"},
        # The agent tries hard to commit Baton's copies: forced past the exclude, in its own commit.
        {"git": ["add", "-f", ".baton/attachments"]},
        {"commit": "feature: use the notes"}]}))
    attach(agent, task_id, ("notes.txt", NOTES.encode()), ("shot.png", PNG), ("r\u00e9sum\u00e9.md", b"CV\n"))
    start_dispatcher(agent)
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    origin = origin_of(agent.settings.project_dir)
    # What the agent read during its turn is what was attached ...
    assert git(origin, "show", "main:seen-notes.txt") == NOTES
    assert git(origin, "show", "main:seen-resume.txt") == "CV\n"
    # ... and not one of Baton's copies reached main, though the agent committed them.
    files = landed_files(agent)
    assert "seen-notes.txt" in files and not any(f.startswith(".baton") for f in files), files
    (call,) = fake_cli.calls()
    prompt = call["prompt"]
    assert "## Attached files" in prompt
    assert f"`.baton/attachments/notes.txt` (text, {len(NOTES)} bytes)" in prompt
    assert f"`.baton/attachments/shot.png` (image, {len(PNG)} bytes)" in prompt
    assert "`.baton/attachments/r\u00e9sum\u00e9.md` (text, 3 bytes)" in prompt
    assert "--image" not in call["argv"]  # Claude Code reads images itself: the prompt names them



def test_a_non_ascii_name_the_agent_commits_is_kept_out_too(agent_factory, fake_cli):
    """git quotes such names in its listings unless told not to: the check must still see them."""
    agent = agent_factory(config=fake_cli.config())
    task_id = submit_task(agent, fake_task("Only the CV", {"steps": [
        {"write": "done.txt", "text": "done\n"},
        {"git": ["add", "-f", ".baton/attachments/r\u00e9sum\u00e9 \u65e5\u672c.md"]},
        {"commit": "feature: done"}]}))
    attach(agent, task_id, ("r\u00e9sum\u00e9 \u65e5\u672c.md", b"CV\n"))
    start_dispatcher(agent)
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    files = landed_files(agent)
    assert "done.txt" in files and not any(".baton" in f for f in files), files

def test_an_upload_while_running_reaches_the_next_turn_and_no_link_is_followed(agent_factory, fake_cli, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    started, go = tmp_path / "started", tmp_path / "go"
    agent = agent_factory(config=fake_cli.config())
    task_id = submit_task(agent, fake_task("Late file", {
        "steps": [
            # The untrusted agent swaps Baton's folder for a link to somewhere else.
            {"run": ["rm", "-rf", ".baton/attachments"]},
            {"run": ["ln", "-s", str(outside), ".baton/attachments"]},
            {"marker": str(started)}, {"wait_for": str(go), "seconds": 30},
            {"write": "first.txt", "text": "first turn\n"}],
        "on_resume": [{"steps": [{"read": ".baton/attachments/late.txt", "into": "late-seen.txt"},
                                 {"commit": "feature: first and late"}]}]}))
    attach(agent, task_id, ("early.txt", b"early\n"))
    start_dispatcher(agent)
    wait_for(started.exists, timeout=30, what="the first turn to start")
    attach(agent, task_id, ("late.txt", b"arrived while the agent worked\n"))
    answer = agent.client.post(f"/agent/tasks/{task_id}/messages", json={"text": "I attached late.txt; use it."})
    assert answer.status_code == 202 and answer.json()["delivery"] == "queued"
    go.touch()
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    origin = origin_of(agent.settings.project_dir)
    assert git(origin, "show", "main:late-seen.txt") == "arrived while the agent worked\n"
    assert not any(f.startswith(".baton") for f in landed_files(agent))
    assert list(outside.iterdir()) == []  # Baton wrote nothing through the agent's link
    first, second = fake_cli.calls()
    assert "`.baton/attachments/early.txt`" in first["prompt"] and "`.baton/attachments/late.txt`" not in first["prompt"]
    assert "`.baton/attachments/late.txt`" in second["prompt"] and "--resume" in second["argv"]


def test_an_unchanged_set_is_not_announced_again_in_the_same_session(agent_factory, fake_cli, tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"
    agent = agent_factory(config=fake_cli.config())
    task_id = submit_task(agent, fake_task("Follow-up", {
        "steps": [{"marker": str(started)}, {"wait_for": str(go), "seconds": 30}, {"write": "a.txt", "text": "a\n"}],
        "on_resume": [{"steps": [{"commit": "feature: a"}]}]}))
    attach(agent, task_id, ("spec.md", b"# spec\n"))
    start_dispatcher(agent)
    wait_for(started.exists, timeout=30, what="the first turn to start")
    assert agent.client.post(f"/agent/tasks/{task_id}/messages", json={"text": "go on"}).status_code == 202
    go.touch()
    assert wait_task_done(agent, task_id).status is TaskStatus.completed
    first, second = fake_cli.calls()
    assert "`.baton/attachments/spec.md`" in first["prompt"]
    assert "Attached files" not in second["prompt"]  # the session already has them


@pytest.fixture
def runtime(request, tmp_path: Path, monkeypatch) -> RuntimeFake:
    if request.param == "opencode":
        monkeypatch.setenv("PWD", str(tmp_path))  # Baton's own $PWD: never the worktree
    return make_fake(request.param, tmp_path, monkeypatch)


OPENCODE_PROVIDER = {"fake": {"npm": "@ai-sdk/openai-compatible", "name": "Fake",
                              "options": {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "{env:PROVIDER_KEY}"},
                              "models": {"m1": {"tool_call": True}}}}


@pytest.mark.parametrize("runtime", ["codex", "opencode"], indirect=True)
def test_images_go_to_the_runtimes_that_take_them(agent_factory, runtime):
    section = {"config": {"provider": OPENCODE_PROVIDER}} if runtime.runtime == "opencode" else None
    agent = agent_factory(config=runtime.config(section=section))
    task_id = submit_task(agent, fake_task("Look at the screenshot", {"steps": [
        {"read": ".baton/attachments/shot.png", "into": "seen.txt"}, {"write": "done.txt", "text": "done\n"},
        {"commit": "feature: done"}]}))
    attach(agent, task_id, ("shot.png", PNG), ("notes.txt", b"not an image\n"))
    start_dispatcher(agent)
    task = wait_task_done(agent, task_id)
    assert task.status is TaskStatus.completed, task.error_message
    assert not any(f.startswith(".baton") for f in landed_files(agent))
    (call,) = runtime.calls()
    image = str(agent.settings.project_dir / "worktrees" / task_id / ".baton" / "attachments" / "shot.png")
    if runtime.runtime == "codex":
        assert call["images"] == [{"path": image, "exists": True}]  # a localImage input beside the text
    else:
        assert call["files"] == [image]
        at = call["argv"].index("-f")
        assert call["argv"][at:at + 2] == ["-f", image]
    assert "`.baton/attachments/notes.txt` (text, 13 bytes)" in call["prompt"]


def test_codex_refuses_an_input_item_it_does_not_know(tmp_path, monkeypatch):
    """The fake is as strict as Codex 0.169 about turn/start input (so Baton's localImage is the real shape)."""
    import json
    import subprocess
    fake = make_fake("codex", tmp_path, monkeypatch)
    lines = [{"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "t", "version": "1"}}},
             {"method": "initialized"}, {"id": 2, "method": "thread/start", "params": {"cwd": str(tmp_path)}}]
    proc = subprocess.Popen([fake.command, "app-server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    for line in lines:
        proc.stdin.write(json.dumps(line) + "\n")
    proc.stdin.flush()
    thread = None
    while thread is None:
        message = json.loads(proc.stdout.readline())
        if message.get("id") == 2:
            thread = message["result"]["thread"]["id"]
    proc.stdin.write(json.dumps({"id": 3, "method": "turn/start", "params": {
        "threadId": thread, "input": [{"type": "text", "text": "hi"}, {"type": "picture", "path": "x.png"}]}}) + "\n")
    proc.stdin.flush()
    while True:
        message = json.loads(proc.stdout.readline())
        if message.get("id") == 3:
            break
    proc.stdin.close()
    proc.wait(timeout=10)
    assert message["error"]["message"] == "Invalid request: unknown variant `picture`"


def test_opencode_refuses_a_missing_file_like_the_real_cli(tmp_path, monkeypatch):
    import subprocess
    fake = make_fake("opencode", tmp_path, monkeypatch)
    config = tmp_path / "cfg" / "opencode.json"
    config.parent.mkdir()
    config.write_text("{}")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([fake.command, "run", "--format", "json", "--dir", str(work), "-f", "missing.png"],
                          input="hello", capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "PWD": str(work), "OPENCODE_CONFIG": str(config)})
    assert proc.returncode == 1 and "File not found: missing.png" in proc.stderr



# ----- the worktree's copies, at the git level (a real repository, no agent) --------------------

def workspace_with(tmp_path: Path, attached: dict[str, bytes], tracked: dict[str, str] | None = None):
    """A task worktree whose attached files Baton placed; `tracked`: files the base commits first."""
    from backend.config import AgentConfig
    from backend.dispatcher.workspace import ProjectGit, Workspace
    from support import make_local_repo
    project = make_local_repo(tmp_path, "project")
    for rel, text in (tracked or {}).items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
        git(project, "add", "-f", rel)
    if tracked:
        git(project, "commit", "-q", "-m", "track some files")
    folder = project / "data" / "attachments" / "t1"
    folder.mkdir(parents=True)
    for name, data in attached.items():
        (folder / name).write_bytes(data)
    ws = Workspace(ProjectGit(project, AgentConfig(base_branch="main", symlink_files=[], copy_files=[])), "t1")
    ws.create(earlier_branch=False)
    ws.place_files()
    return ws


def test_unplacing_never_follows_a_folder_swapped_for_a_link_meanwhile(tmp_path, monkeypatch):
    """The agent swaps .baton/attachments for a link to a folder holding a file of the same name
    right after Baton looked at the folder: Baton must not remove the file out there."""
    import os
    ws = workspace_with(tmp_path, {"x.txt": b"attached\n"})
    folder = ws.path / ".baton" / "attachments"
    assert (folder / "x.txt").read_bytes() == b"attached\n"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_text("not Baton's\n")
    swapped = []

    def swap() -> None:
        if not swapped:
            swapped.append(True)
            folder.rename(folder.parent / "moved")
            folder.symlink_to(outside)

    real_open, real_resolve = os.open, Path.resolve

    def open_then_swap(path, *args, **kw):
        fd = real_open(path, *args, **kw)
        if path == "attachments":
            swap()
        return fd

    def resolve_then_swap(self, *args, **kw):
        answer = real_resolve(self, *args, **kw)
        if self == folder:
            swap()
        return answer

    monkeypatch.setattr(os, "open", open_then_swap)
    monkeypatch.setattr(Path, "resolve", resolve_then_swap)
    ws._unplace()
    monkeypatch.undo()
    assert swapped  # the race happened
    assert (outside / "x.txt").read_text() == "not Baton's\n"


def test_unplacing_removes_the_copies_and_nothing_else(tmp_path):
    ws = workspace_with(tmp_path, {"x.txt": b"attached\n", "r\u00e9sum\u00e9.md": b"cv\n"})
    folder = ws.path / ".baton" / "attachments"
    (folder / "mine.txt").write_text("the agent's\n")
    ws._unplace()
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt"]


def test_a_tracked_non_ascii_placed_file_keeps_its_committed_version(tmp_path):
    """The base tracks a file at a placed path (résumé.md): the task's commit of Baton's copy is
    undone to the base's version, not deleted (git quoted the name in a plain ls-tree)."""
    rel = ".baton/attachments/r\u00e9sum\u00e9.md"
    ws = workspace_with(tmp_path, {"r\u00e9sum\u00e9.md": b"attached version\n"}, {rel: "committed version\n"})
    assert (ws.path / rel).read_text() == "attached version\n"
    (ws.path / "done.txt").write_text("done\n")
    git(ws.path, "add", "-A")
    git(ws.path, "commit", "-q", "-m", "feature: done, and Baton's copy by mistake")
    committed, stripped, has_commits = ws.save_work("leftovers")
    assert (committed, stripped, has_commits) == (False, True, True)
    assert git(ws.path, "show", f"{ws.branch}:{rel}") == "committed version\n"
    assert git(ws.path, "show", f"{ws.branch}:done.txt") == "done\n"


def test_a_name_a_placed_name_matches_as_a_glob_is_not_placed(tmp_path):
    """`a[1].txt` is a literal name: the agent's own a1.txt in that folder is not Baton's."""
    ws = workspace_with(tmp_path, {"a[1].txt": b"attached\n"})
    (ws.path / ".baton" / "attachments" / "a1.txt").write_text("the agent's own\n")
    git(ws.path, "add", "-f", ".baton/attachments/a1.txt")
    git(ws.path, "commit", "-q", "-m", "feature: a file of its own")
    sha = git(ws.path, "rev-parse", "HEAD").strip()
    assert ws.strip_placed(ws.fork_point(), ws.placed) is False
    assert git(ws.path, "rev-parse", "HEAD").strip() == sha
