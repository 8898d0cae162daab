"""Chat with a project: a real dashboard (uvicorn) over a real agent, the stand-in Messages API
(tests/fakes/messages_standin.py) as the model. Answers stream in order and are stored, the
model sees the project's context, stop (and a page that leaves) keeps the partial answer,
tokens and cost come from the API's usage, API errors are told and stored, and without a key
the chat says how to enable it while the rest of the dashboard works."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from backend.chat.service import Answer
from backend.chat.store import ChatStore
from backend.models import TaskStatus
from chat_support import KEY, KEY_ENV, ChatWorld, EventReader, chat_config
from fakes.messages_standin import MessagesStandIn, dropped, http_error, stream_error, text
from support import GIT_ENV, commit_and_push, free_port, make_repo, wait_for
from test_api import assert_error
from test_dashboard_supervisor import agent_repo, dashboards  # noqa: F401 - a fixture, used by name

README = "# Widgets\n\nThe widget service: an HTTP API over a SQLite store.\n"
CLAUDE_MD = "# Rules\n\nRun `make test` before committing. Never touch vendor/.\n"


@pytest.fixture
def api():
    with MessagesStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def world(agent_factory, dashboard_factory, api, tmp_path, monkeypatch) -> ChatWorld:
    monkeypatch.setenv(KEY_ENV, KEY)
    agent = agent_factory()
    repo = agent.settings.project_dir
    (repo / "src").mkdir()
    commit_and_push(repo, {"README.md": README, "CLAUDE.md": CLAUDE_MD, "src/store.py": "STORE = 1\n"},
                    "Add the store module")
    first = agent.client.post("/agent/tasks", json={"title": "Add a /health route"}).json()["id"]
    agent.client.post("/agent/tasks", json={"title": "Document /health", "depends_on": [first]}).raise_for_status()
    project_id = agent.client.get("/agent/health").json()["project_id"]
    client = dashboard_factory([{"id": "alpha", "name": "Widgets", "agent_url": agent.url,
                                 "agent_project_id": project_id}],
                               timeout=10.0, chat=chat_config(api.url, tmp_path / "chats"))
    return ChatWorld(client=client, api=api, agent=agent, chats_dir=tmp_path / "chats")


def _kinds(events):
    return [name for name, _ in events]


def test_an_answer_streams_in_order_is_stored_and_listed(world):
    world.api.script(text(["The ", "plan ", "is ", "ready."], usage=(1200, 30)),
                     text(["Second answer."], usage=(1500, 10)))
    listed = world.client.get(world.url()).json()
    assert (listed["enabled"], listed["model"], listed["hint"], listed["chats"]) == (True, "claude-sonnet-5-5", None, [])
    chat_id = world.new_chat()

    events = world.send(chat_id, "How should we add a health route?\nIt must be cheap.")
    assert _kinds(events) == ["user", "delta", "delta", "delta", "delta", "done"]
    user = events[0][1]
    assert (user["role"], user["text"]) == ("user", "How should we add a health route?\nIt must be cheap.")
    assert "".join(data["text"] for name, data in events if name == "delta") == "The plan is ready."
    done = events[-1][1]["message"]
    assert (done["role"], done["text"], done["stopped"], done["error"]) == ("assistant", "The plan is ready.", False, None)
    # Tokens from the API's usage; cost from the price table (claude-sonnet-5-5: $2 / $10 per million).
    assert (done["input_tokens"], done["output_tokens"]) == (1200, 30)
    assert done["cost_usd"] == pytest.approx((1200 * 2 + 30 * 10) / 1e6)
    assert events[-1][1]["totals"] == {"input_tokens": 1200, "output_tokens": 30, "cost_usd": done["cost_usd"],
                                       "usage_partial": False}
    assert done["usage_partial"] is False  # the API's final count came

    events = world.send(chat_id, "And the tests?")
    assert _kinds(events)[-1] == "done"
    # The second question carries the conversation so far.
    sent = world.api.requests[-1]["body"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "The plan is ready."}]
    assert sent["model"] == "claude-sonnet-5-5" and sent["stream"] is True

    chat = world.chat(chat_id)
    assert [(m["role"], m["text"]) for m in chat["messages"]] == [
        ("user", "How should we add a health route?\nIt must be cheap."), ("assistant", "The plan is ready."),
        ("user", "And the tests?"), ("assistant", "Second answer.")]
    assert chat["totals"]["input_tokens"] == 2700 and chat["totals"]["output_tokens"] == 40
    assert chat["totals"]["cost_usd"] == pytest.approx((2700 * 2 + 40 * 10) / 1e6)
    assert chat["plan_ids"] == []
    [summary] = world.client.get(world.url()).json()["chats"]
    assert summary["id"] == chat_id and summary["messages"] == 4
    assert summary["title"] == "How should we add a health route?"  # the first line of the first message
    assert summary["cost_usd"] == chat["totals"]["cost_usd"]
    # One JSONL file per conversation, under <dir>/<project>/.
    assert (world.chats_dir / "alpha" / f"{chat_id}.jsonl").is_file()


def test_the_model_sees_the_project(world):
    world.api.script(text(["ok"]))
    world.send(world.new_chat(), "What is there to do?")
    system = world.api.requests[-1]["body"]["system"]
    assert "'Widgets'" in system  # the project's name
    assert "The widget service: an HTTP API over a SQLite store." in system  # README
    assert "Never touch vendor/." in system  # CLAUDE.md
    assert "src/store.py" in system  # the file tree
    assert "Add the store module" in system  # recent commits
    assert "[pending] Add a /health route" in system  # open tasks, with their dependencies
    assert "[pending] Document /health (after " in system


def test_stop_keeps_the_partial_answer(world):
    world.api.script(text(["Partial ", "answer ", "never said"], usage=(900, 40), hold_after=2))
    chat_id = world.new_chat()
    with world.client.stream("POST", world.url(chat_id, "messages"), json={"text": "Go"}) as resp:
        reader = EventReader(resp)
        reader.until("delta")
        reader.until("delta")  # both said (a delta is relayed once kept); the third waits in the stand-in
        stopped = world.client.post(world.url(chat_id, "stop"))
        assert stopped.status_code == 200 and stopped.json() == {"stopped": True}
        rest = reader.rest()
    assert _kinds(rest)[-1] == "done"
    message = rest[-1][1]["message"]
    assert (message["text"], message["stopped"], message["error"]) == ("Partial answer ", True, None)
    assert message["input_tokens"] == 900  # what the API reported before the stop
    # The output tokens came only so far (the final count never did): a lower bound, said so.
    assert message["usage_partial"] is True and rest[-1][1]["totals"]["usage_partial"] is True
    assert world.chat(chat_id)["messages"][-1]["stopped"] is True
    wait_for(lambda: world.api.disconnects == 1, what="the upstream answer to be closed")
    # Nothing is under way any more: stop says so, and the chat takes the next message.
    assert world.client.post(world.url(chat_id, "stop")).json() == {"stopped": False}
    world.api.script(text(["Again."]))
    assert _kinds(world.send(chat_id, "Again?"))[-1] == "done"


def test_a_page_that_leaves_stops_the_answer(world):
    world.api.script(text(["Half ", "of it", " and more"], usage=(300, 20), hold_after=2))
    chat_id = world.new_chat()
    with world.client.stream("POST", world.url(chat_id, "messages"), json={"text": "Go"}) as resp:
        reader = EventReader(resp)
        reader.until("delta")
        reader.until("delta")
    # The connection is closed: the answer is stopped and what was said is kept.
    last = wait_for(lambda: (m := world.chat(chat_id)["messages"])[-1]["role"] == "assistant" and m[-1],
                    what="the stopped answer to be stored")
    assert (last["text"], last["stopped"]) == ("Half of it", True)
    wait_for(lambda: world.api.disconnects == 1, what="the upstream answer to be closed")


def test_one_answer_at_a_time(world):
    world.api.script(text(["a", "b"], hold_after=1))
    chat_id = world.new_chat()
    with world.client.stream("POST", world.url(chat_id, "messages"), json={"text": "Go"}) as resp:
        reader = EventReader(resp)
        reader.until("delta")
        assert_error(world.client.post(world.url(chat_id, "messages"), json={"text": "and?"}), 409, "chat_busy")
        world.api.release.set()
        assert _kinds(reader.rest())[-1] == "done"
    assert [m["text"] for m in world.chat(chat_id)["messages"]] == ["Go", "ab"]


@pytest.mark.parametrize("reply, words", [
    (http_error(429), "rate limit"),
    (http_error(529), "overloaded"),
    (http_error(401, message="invalid x-api-key"), KEY_ENV),
    (stream_error("overloaded_error", "Overloaded", chunks=["Half an "]), "overloaded"),
])
def test_api_errors_are_told_and_stored(world, reply, words):
    world.api.script(reply)
    chat_id = world.new_chat()
    events = world.send(chat_id, "Hello?")
    assert _kinds(events)[0] == "user" and _kinds(events)[-1] == "error"
    error = events[-1][1]
    assert words in error["message"] and KEY not in error["message"]
    stored = world.chat(chat_id)["messages"][-1]
    assert stored["role"] == "assistant" and stored["error"] == error["message"]
    assert stored["text"] == ("Half an " if reply.kind == "stream_error" else "")
    # The person's message stands; a failed answer without text is not sent back to the model.
    world.api.script(text(["Better now."]))
    assert _kinds(world.send(chat_id, "Retry"))[-1] == "done"
    assert [m["role"] for m in world.api.requests[-1]["body"]["messages"]] == (
        ["user", "assistant", "user"] if reply.kind == "stream_error" else ["user"])


def test_an_unreachable_api_is_told(agent_factory, dashboard_factory, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    agent = agent_factory()
    client = dashboard_factory([{"id": "alpha", "agent_url": agent.url,
                                 "agent_project_id": agent.client.get("/agent/health").json()["project_id"]}],
                               timeout=10.0, chat=chat_config(f"http://127.0.0.1:{free_port()}", tmp_path / "c"))
    world = ChatWorld(client=client, api=None, agent=agent, chats_dir=tmp_path / "c")
    events = world.send(world.new_chat(), "Anyone?")
    assert _kinds(events)[-1] == "error" and "cannot reach" in events[-1][1]["message"]


def test_without_a_key_the_chat_says_how_and_the_rest_works(world, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    listed = world.client.get(world.url()).json()
    assert listed["enabled"] is False and KEY_ENV in listed["hint"]
    chat_id = world.new_chat("Ideas")  # conversations can still be made and read
    for path in ("messages", "plan"):
        error = assert_error(world.client.post(world.url(chat_id, path), json={"text": "hi"}), 409, "chat_disabled")
        assert error["message"] == listed["hint"]
    assert world.chat(chat_id)["messages"] == []
    assert world.api.requests == []
    projects = world.client.get("/api/projects").json()["projects"]
    assert projects[0]["healthy"] is True
    assert world.client.get("/api/board").status_code == 200
    # Set while the dashboard runs: read at the next request.
    monkeypatch.setenv(KEY_ENV, KEY)
    assert world.client.get(world.url()).json()["enabled"] is True


def test_the_key_goes_only_to_the_api(world):
    world.api.script(text(["Fine."]))
    chat_id = world.new_chat()
    world.send(chat_id, "Hi")
    request = world.api.requests[-1]
    assert KEY in (request["headers"].get("x-api-key", "") + request["headers"].get("authorization", ""))
    for path in world.chats_dir.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    for answer in (world.client.get(world.url()), world.client.get(world.url(chat_id)), world.client.get("/api/board")):
        assert KEY not in answer.text


def test_a_down_agent_leaves_the_chat_working_with_a_note(dashboard_factory, api, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    client = dashboard_factory([{"id": "alpha", "name": "Gone", "agent_url": f"http://127.0.0.1:{free_port()}"}],
                               timeout=2.0, chat=chat_config(api.url, tmp_path / "chats"))
    world = ChatWorld(client=client, api=api, agent=None, chats_dir=tmp_path / "chats")
    api.script(text(["I cannot see the project, but…"]))
    events = world.send(world.new_chat(), "What now?")
    assert _kinds(events)[-1] == "done"
    system = api.requests[-1]["body"]["system"]
    assert "could not be read" in system and "cannot reach" in system


def test_a_project_without_an_agent_gives_its_context_from_its_folder(dashboard_factory, api, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    repo = make_repo(tmp_path, "localproject")
    commit_and_push(repo, {"CLAUDE.md": CLAUDE_MD, "app.py": "print('hi')\n"}, "Add the app")
    from backend.models import NewTask
    from backend.store import TaskStore
    store = TaskStore(repo / "data" / "dev-tasks.json")
    store.initialize()
    store.create(NewTask(title="Local work"))
    client = dashboard_factory([{"id": "alpha", "path": str(repo)}], timeout=5.0,
                               chat=chat_config(api.url, tmp_path / "chats"))
    world = ChatWorld(client=client, api=api, agent=None, chats_dir=tmp_path / "chats")
    api.script(text(["ok"]))
    world.send(world.new_chat(), "Hello")
    system = api.requests[-1]["body"]["system"]
    assert "# demo" in system and "Never touch vendor/." in system and "app.py" in system
    assert "Add the app" in system and "[pending] Local work" in system
    assert store.get(store.list_tasks()[0].id).status is TaskStatus.pending  # read, never changed


def test_the_agents_context_is_bounded(agent):
    repo = agent.settings.project_dir
    files = {f"f{i:03}.txt": "x\n" for i in range(405)}
    commit_and_push(repo, {**files, "README.md": "r" * (20 * 1024)}, "Many files")
    for i in range(25):
        commit_and_push(repo, {"counter.txt": f"{i}\n"}, f"Commit {i}")
    context = agent.client.get("/agent/context").json()
    assert len(context["tree"]) == 400 and context["tree_truncated"] is True
    assert context["readme"].startswith("r" * 100) and len(context["readme"].encode()) < 16 * 1024 + 100
    assert "cut here" in context["readme"] and context["claude_md"] is None
    assert len(context["commits"]) == 20 and context["commits"][0]["subject"] == "Commit 24"
    assert set(context["commits"][0]) == {"sha", "subject", "author", "date"}
    assert context["project_id"] == agent.client.get("/agent/health").json()["project_id"]
    assert context["open_tasks"] == [] and context["open_tasks_total"] == 0


def test_unknown_chats_and_projects(world):
    assert_error(world.client.get(world.url("zzzzzzzzzz")), 404, "not_found")
    assert_error(world.client.post(world.url("zzzzzzzzzz", "messages"), json={"text": "x"}), 404, "not_found")
    assert_error(world.client.get("/api/projects/nope/chats"), 404, "not_found")
    assert_error(world.client.post(world.url(world.new_chat(), "messages"), json={"text": "  "}), 422,
                 "validation_error")


def test_without_base_url_the_sdk_default_honours_anthropic_base_url(dashboard_factory, api, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)  # what the SDK reads when base_url is not given
    config = {k: v for k, v in chat_config(api.url, tmp_path / "chats").items() if k != "base_url"}
    client = dashboard_factory([{"id": "alpha", "agent_url": f"http://127.0.0.1:{free_port()}"}], chat=config)
    world = ChatWorld(client=client, api=api, agent=None, chats_dir=tmp_path / "chats")
    api.script(text(["Reached."]))
    assert _kinds(world.send(world.new_chat(), "Hello"))[-1] == "done"
    assert len(api.requests) == 1


@pytest.mark.parametrize("chunked", [True, False])
def test_a_connection_dropped_mid_answer_is_told_and_the_text_kept(world, chunked):
    # chunked: the read fails (httpx2.RemoteProtocolError, which the SDK does not wrap);
    # not chunked: the body just ends, without the API's message_stop.
    world.api.script(dropped(["Half ", "an answer"], chunked=chunked, usage=(400, 9)))
    chat_id = world.new_chat()
    events = world.send(chat_id, "Tell me everything")
    assert _kinds(events) == ["user", "delta", "delta", "error"]
    error = events[-1][1]
    assert "dropped mid-answer" in error["message"] and "internal error" not in error["message"]
    stored = world.chat(chat_id)["messages"][-1]
    assert (stored["text"], stored["error"], stored["stopped"]) == ("Half an answer", error["message"], False)
    assert stored["input_tokens"] == 400 and stored["usage_partial"] is True
    world.api.script(text(["Back."]))  # the chat is free again
    assert _kinds(world.send(chat_id, "Again"))[-1] == "done"


def test_a_read_timeout_mid_answer_is_told(dashboard_factory, api, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    repo = make_repo(tmp_path, "localproject")
    # The stand-in says a word, then nothing (until released): the SDK's read timeout ends it.
    client = dashboard_factory([{"id": "alpha", "path": str(repo)}], timeout=5.0,
                               chat=chat_config(api.url, tmp_path / "chats", timeout_seconds=2))
    world = ChatWorld(client=client, api=api, agent=None, chats_dir=tmp_path / "chats")
    api.script(text(["Thinking ", "never said"], hold_after=1))
    chat_id = world.new_chat()
    events = world.send(chat_id, "Slowly")
    assert _kinds(events)[-1] == "error"
    assert events[-1][1]["message"] == "no answer from the Anthropic API within 2s"
    stored = world.chat(chat_id)["messages"][-1]
    assert stored["error"] == events[-1][1]["message"] and stored["text"] in ("", "Thinking ")


def test_a_stop_while_the_answer_is_being_stored_waits_for_it(world, monkeypatch):
    """A stop in the last moment (the answer has ended and is being written) does not cancel the
    write: the stop waits for it, the page gets `done`, the chat is free only once it is written."""
    writing, go_on, stop_called = threading.Event(), threading.Event(), threading.Event()
    add_message, answer_stop = ChatStore.add_message, Answer.stop

    def slow_add_message(store, project_id, chat_id, message):
        if message.role == "assistant":
            writing.set()
            assert go_on.wait(30)
        add_message(store, project_id, chat_id, message)

    def noted_stop(answer):
        stop_called.set()
        answer_stop(answer)

    monkeypatch.setattr(ChatStore, "add_message", slow_add_message)
    monkeypatch.setattr(Answer, "stop", noted_stop)
    world.api.script(text(["All ", "said."], usage=(50, 5)))
    chat_id = world.new_chat()
    with world.client.stream("POST", world.url(chat_id, "messages"), json={"text": "Go"}) as resp, \
            ThreadPoolExecutor(1) as pool:
        reader = EventReader(resp)
        reader.until("delta")
        assert writing.wait(30), "the answer was never stored"
        stopping = pool.submit(world.client.post, world.url(chat_id, "stop"))
        assert stop_called.wait(30)
        # Still being written: the chat is taken.
        assert_error(world.client.post(world.url(chat_id, "messages"), json={"text": "and?"}), 409, "chat_busy")
        go_on.set()
        stopped = stopping.result(timeout=30)
        assert stopped.status_code == 200 and stopped.json() == {"stopped": True}
        rest = reader.rest()
    assert _kinds(rest)[-1] == "done"
    message = rest[-1][1]["message"]
    assert (message["text"], message["stopped"], message["usage_partial"]) == ("All said.", False, False)
    assert [m["text"] for m in world.chat(chat_id)["messages"]] == ["Go", "All said."]
    world.api.script(text(["Next."]))
    assert _kinds(world.send(chat_id, "Next?"))[-1] == "done"


LATIN1_NAME = b"caf\xe9.txt"
LATIN1_SUBJECT = "Menu du caf\xe9".encode("latin-1")


def _commit_latin1(repo) -> None:
    """A file whose name is not UTF-8 and a commit message in Latin-1 without an encoding header
    (written as a raw object: `git commit` would convert the message to UTF-8)."""
    (repo / os.fsdecode(LATIN1_NAME)).write_bytes(b"menu\n")
    env = {**os.environ, **GIT_ENV}

    def git(*args, data: bytes | None = None) -> bytes:
        return subprocess.run(["git", *args], cwd=repo, env=env, input=data, check=True,
                              capture_output=True).stdout.strip()

    git("add", "--", os.fsdecode(LATIN1_NAME))
    tree, parent = git("write-tree"), git("rev-parse", "HEAD")
    who = b"Baton Test <test@baton.invalid> 1700000000 +0000"
    raw = b"tree %s\nparent %s\nauthor %s\ncommitter %s\n\n%s\n" % (tree, parent, who, who, LATIN1_SUBJECT)
    sha = git("hash-object", "-t", "commit", "-w", "--stdin", data=raw).decode()
    git("update-ref", "refs/heads/main", sha)
    git("push", "-q", "origin", "main")


def test_names_and_messages_that_are_not_utf8_do_not_break_the_context(agent, dashboard_factory, api, tmp_path,
                                                                       monkeypatch):
    _commit_latin1(agent.settings.project_dir)
    context = agent.client.get("/agent/context")
    assert context.status_code == 200, context.text
    assert "caf\ufffd.txt" in context.json()["tree"]
    assert context.json()["commits"][0]["subject"] == "Menu du caf\ufffd"
    # A project without an agent: the dashboard reads the same from the folder, and answers.
    monkeypatch.setenv(KEY_ENV, KEY)
    repo = make_repo(tmp_path, "localproject")
    _commit_latin1(repo)
    client = dashboard_factory([{"id": "alpha", "path": str(repo)}], timeout=5.0,
                               chat=chat_config(api.url, tmp_path / "chats"))
    world = ChatWorld(client=client, api=api, agent=None, chats_dir=tmp_path / "chats")
    api.script(text(["Bon."]))
    assert _kinds(world.send(world.new_chat(), "Le menu?"))[-1] == "done"
    system = api.requests[-1]["body"]["system"]
    assert "caf\ufffd.txt" in system and "Menu du caf\ufffd" in system


def _started_agents_environ(tmp_path, dashboards, key_env: str):
    """A dashboard whose chat reads `key_env` starts project p's agent: (the dashboard, the
    environment that agent process was started with, from /proc)."""
    repo = agent_repo(tmp_path, "p")
    port = free_port()
    dash = dashboards(tmp_path, f"projects:\n  - id: p\n    path: {repo}\n    agent_url: http://127.0.0.1:{port}\n"
                                f"    start: true\nchat:\n  api_key_env: {key_env}\n")
    started = dash.wait_agent("p", "running", lambda a: a["state"] == "running")
    environ = dict(entry.split(b"=", 1) for entry in
                   open(f"/proc/{started['pid']}/environ", "rb").read().split(b"\0") if b"=" in entry)
    return dash, environ


def test_the_chat_key_does_not_reach_the_agents_the_dashboard_starts(tmp_path, dashboards, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("BATON_TEST_OTHER_VARIABLE", "kept")
    dash, environ = _started_agents_environ(tmp_path, dashboards, KEY_ENV)
    assert environ.get(b"BATON_TEST_OTHER_VARIABLE") == b"kept"  # the agent's environment, as read
    assert KEY_ENV.encode() not in environ and KEY.encode() not in b"".join(environ.values())
    assert dash.stop(signal.SIGTERM) == 0


def test_the_shared_anthropic_key_still_reaches_the_agents_the_dashboard_starts(tmp_path, dashboards, monkeypatch):
    # ANTHROPIC_API_KEY is the key Claude Code reads too: a chat using it takes nothing from the agents.
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    dash, environ = _started_agents_environ(tmp_path, dashboards, "ANTHROPIC_API_KEY")
    assert environ.get(b"ANTHROPIC_API_KEY") == KEY.encode()
    assert dash.stop(signal.SIGTERM) == 0
