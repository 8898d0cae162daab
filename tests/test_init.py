"""`baton-init`: adopting a path or cloning a URL, what it writes (agent.yaml with only what
differs, an entry appended to projects.yaml), detection, idempotence, refusals, the guardrails
acknowledgement, and the interactive questions driven through a real terminal (a pty)."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from backend.config import load_agent_config
from backend.dashboard.config import load_dashboard_config
from backend.init.choose import next_port
from backend.init.detect import test_commands as detect_tests
from support import GIT_ENV, ROOT, git, make_repo

INIT = [sys.executable, "-m", "backend.init.cli"]
ENV = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT)}
EXAMPLE = (ROOT / "config" / "projects.example.yaml").read_text(encoding="utf-8")
ACK = "--i-understand-that-this-will-be-running-without-the-usual-guardrails"


def init(cwd: Path, *args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*INIT, *args], cwd=cwd, env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=120,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def projects_file(root: Path, text: str = EXAMPLE) -> Path:
    path = root / "config" / "projects.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def entry(config: Path, project_id: str):
    return next(p for p in load_dashboard_config(config).projects if p.id == project_id)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ----- non-interactive ----------------------------------------------------------------------

def test_adopting_a_path_writes_only_the_differing_keys_and_appends_to_projects_yaml(tmp_path):
    repo = make_repo(tmp_path, "shop")
    config = projects_file(tmp_path)
    proc = init(tmp_path, str(repo), "--yes", "--id", "webshop", "--runtime", "codex", "--no-start")
    assert proc.returncode == 0, proc.stderr

    text = (repo / "agent.yaml").read_text()
    keys = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith("#")]
    # Default test command detection finds nothing in a README-only repo: "" is written (differs
    # from the default pytest); the base branch equals the detected one, so it is left out.
    assert keys == ["project_id", "runtime", "test_command"]
    assert all("  # " in line for line in text.splitlines() if not line.startswith("#"))
    loaded = load_agent_config(repo / "agent.yaml")
    assert (loaded.project_id, loaded.runtime, loaded.test_command) == ("webshop", "codex", "")
    assert "land without tests" in text
    assert "no test command" in proc.stderr

    after = config.read_text()
    assert after.startswith(EXAMPLE)  # appended: every original line and comment kept
    assert "# token: $BATON_TOKEN" in after
    shop = entry(config, "webshop")
    assert shop.name == "shop" and Path(shop.path) == repo and shop.start is False
    assert port_of(shop.agent_url) != 9100  # the example's baton agent
    assert shop.color == "#f5a623"  # the first palette colour the example does not use
    assert "registered 'webshop'" in proc.stdout


def test_port_and_colour_skip_the_ones_registered_and_in_use(tmp_path):
    repo = make_repo(tmp_path, "shop")
    config = projects_file(tmp_path, EXAMPLE.replace("agent_url: http://127.0.0.1:9100",
                                                     "agent_url: http://127.0.0.1:9101"))
    with socket.socket() as busy:  # whatever port would come next is taken by someone else
        busy.bind(("127.0.0.1", next_port(load_dashboard_config(config))))
        busy.listen()
        held = busy.getsockname()[1]
        proc = init(tmp_path, str(repo), "--yes", "--no-start")
    assert proc.returncode == 0, proc.stderr
    port = port_of(entry(config, "shop").agent_url)
    assert port not in (9101, held) and port >= 9100
    assert entry(config, "shop").color not in ("#4f8cff", "#2bb673")


def test_cloning_a_url_adopts_the_clone_and_registers_it_to_start(tmp_path):
    make_repo(tmp_path, "svc")
    url = (tmp_path / "svc-origin.git").as_uri()
    work = tmp_path / "work"
    work.mkdir()
    proc = init(work, url, "--yes", "--test-command", "make check", "--base-branch", "main", ACK)
    assert proc.returncode == 0, proc.stderr
    clone = work / "svc-origin"
    assert git(clone, "remote", "get-url", "origin").strip() == url
    assert (clone / "README.md").read_text() == "# demo\n"
    assert "test_command: make check" in (clone / "agent.yaml").read_text()
    config = work / "config" / "projects.yaml"  # made from a short header
    assert config.read_text().startswith("# baton-dashboard's projects")
    svc = entry(config, "svc-origin")
    assert Path(svc.path) == clone and svc.start is True and port_of(svc.agent_url) >= 9100
    assert "baton-dashboard" in proc.stdout and f"cloned {url}" in proc.stdout


def test_a_bare_repository_path_is_cloned_into_dir(tmp_path):
    make_repo(tmp_path, "lib")
    proc = init(tmp_path, str(tmp_path / "lib-origin.git"), "--yes", "--dir", "checkouts/lib", "--no-start")
    assert proc.returncode == 0, proc.stderr
    assert Path(entry(tmp_path / "config" / "projects.yaml", "lib").path) == tmp_path / "checkouts" / "lib"


def test_a_second_run_with_the_same_answers_changes_nothing(tmp_path):
    make_repo(tmp_path, "svc")
    url = (tmp_path / "svc-origin.git").as_uri()
    args = (url, "--yes", "--dir", "svc-clone", "--runtime", "opencode", "--no-start")
    assert init(tmp_path, *args).returncode == 0
    files = [tmp_path / "config" / "projects.yaml", tmp_path / "svc-clone" / "agent.yaml"]
    before = [(f.read_bytes(), f.stat().st_mtime_ns) for f in files]
    again = init(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert [(f.read_bytes(), f.stat().st_mtime_ns) for f in files] == before
    assert "nothing to change: already registered as svc-clone; agent.yaml unchanged" in again.stdout
    assert "already cloned" in again.stdout


def test_an_agent_yaml_saying_something_else_is_kept_unless_forced(tmp_path):
    repo = make_repo(tmp_path, "app")
    (repo / "agent.yaml").write_text("max_parallel_workers: 2\n")
    proc = init(tmp_path, str(repo), "--yes", "--test-command", "none", "--no-start")
    assert proc.returncode == 0, proc.stderr
    assert (repo / "agent.yaml").read_text() == "max_parallel_workers: 2\n"
    assert "kept as it is" in proc.stdout
    forced = init(tmp_path, str(repo), "--yes", "--test-command", "none", "--force")
    assert forced.returncode == 0, forced.stderr
    assert 'test_command: ""' in (repo / "agent.yaml").read_text()


def test_a_broken_agent_yaml_is_reported_unless_forced(tmp_path):
    repo = make_repo(tmp_path, "app")
    (repo / "agent.yaml").write_text("max_parallel_workers: zero\n")
    _refused(init(tmp_path, str(repo), "--yes"), 2, "max_parallel_workers")
    assert "--force" in init(tmp_path, str(repo), "--yes").stderr
    assert (repo / "agent.yaml").read_text() == "max_parallel_workers: zero\n"
    assert init(tmp_path, str(repo), "--yes", "--force").returncode == 0
    load_agent_config(repo / "agent.yaml")


def test_the_runtime_cli_is_checked_and_its_install_hint_given(tmp_path):
    one, two = make_repo(tmp_path, "one"), make_repo(tmp_path, "two")
    tools = tmp_path / "bin"
    tools.mkdir()
    path = f"{tools}:{Path(shutil.which('git')).parent}"
    missing = init(tmp_path, str(one), "--yes", "--runtime", "codex", env={"PATH": path})
    assert missing.returncode == 0, missing.stderr  # a warning, not a failure
    assert "baton-init: warning: codex not found" in missing.stderr and "npm install -g @openai/codex" in missing.stderr
    (tools / "codex").write_text("#!/bin/sh\nexit 0\n")
    (tools / "codex").chmod(0o755)
    found = init(tmp_path, str(two), "--yes", "--runtime", "codex", env={"PATH": path})
    assert "codex: codex found" in found.stdout and "codex not found" not in found.stderr


# ----- guardrails ------------------------------------------------------------------------------

def test_the_flag_acknowledges_the_guardrails_and_without_it_the_dispatcher_stays_paused(tmp_path):
    one, two = make_repo(tmp_path, "one"), make_repo(tmp_path, "two")
    without = init(tmp_path, str(one), "--yes", "--no-start")
    assert without.returncode == 0, without.stderr
    assert not (one / "data" / "guardrails-acknowledged.json").exists()
    assert "baton-init: warning: claude_code runs without its permission prompts" in without.stderr
    assert "paused" in without.stderr

    acknowledged = init(tmp_path, str(two), "--yes", "--no-start", ACK)
    assert acknowledged.returncode == 0, acknowledged.stderr
    body = json.loads((two / "data" / "guardrails-acknowledged.json").read_text())
    assert body["by"] == "baton-init" and body["runtimes"] == ["claude_code"] and body["acknowledged_at"]
    assert git(two, "status", "--porcelain", "--ignored=no").split() == ["??", "agent.yaml"]


# ----- detection -------------------------------------------------------------------------------

@pytest.mark.parametrize(("files", "expected"), [
    ({"pytest.ini": "[pytest]\n"}, "pytest"),
    ({"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"}, "pytest"),
    ({"setup.cfg": "[tool:pytest]\ntestpaths = t\n"}, "pytest"),
    ({"tests/test_a.py": "def test_a(): pass\n"}, "pytest"),
    ({"package.json": json.dumps({"scripts": {"test": "jest"}})}, "npm test"),
    ({"go.mod": "module example.com/x\n"}, "go test ./..."),
    ({"Cargo.toml": "[package]\nname = 'x'\n"}, "cargo test"),
    ({"Makefile": "build:\n\tcc x.c\n\ntest: build\n\t./x --check\n"}, "make test"),
])
def test_each_kind_of_test_command_is_detected(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert detect_tests(tmp_path)[0][0] == expected


@pytest.mark.parametrize("files", [
    {},
    {"package.json": json.dumps({"scripts": {"test": 'echo "Error: no test specified" && exit 1'}})},
    {"Makefile": "TEST := 1\nall:\n\ttrue\n"},
    {"pyproject.toml": "[project]\nname = 'x'\n"},
])
def test_nothing_recognisable_means_no_test_command(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert detect_tests(tmp_path) == []


def test_the_detected_test_command_is_proposed_end_to_end(tmp_path):
    repo = make_repo(tmp_path, "gosvc")
    (repo / "go.mod").write_text("module example.com/gosvc\n")
    git(repo, "add", "go.mod")
    git(repo, "commit", "-m", "go")
    proc = init(tmp_path, str(repo), "--yes", "--no-start")
    assert proc.returncode == 0, proc.stderr
    assert load_agent_config(repo / "agent.yaml").test_command == "go test ./..."


# ----- refusals --------------------------------------------------------------------------------

def _refused(proc: subprocess.CompletedProcess, status: int, words: str) -> None:
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("baton-init: ") for line in lines), proc.stderr
    assert words in proc.stderr, proc.stderr


def test_bad_targets_are_refused_with_the_reason_and_nothing_is_written(tmp_path):
    config = projects_file(tmp_path)
    (tmp_path / "plain").mkdir()
    git(tmp_path, "init", "-q", "-b", "main", "empty")
    git(tmp_path, "init", "-q", "--bare", "empty.git")
    _refused(init(tmp_path, "missing", "--yes"), 2, "no such directory")
    _refused(init(tmp_path, "plain", "--yes"), 2, "not a git repository")
    _refused(init(tmp_path, "empty", "--yes"), 2, "no commits")
    _refused(init(tmp_path, str(tmp_path / "empty.git"), "--yes", "--dir", "fresh"), 2, "is empty")
    _refused(init(tmp_path, (tmp_path / "gone.git").as_uri(), "--yes"), 1, "cannot clone")
    make_repo(tmp_path, "real")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    _refused(init(tmp_path, (tmp_path / "real-origin.git").as_uri(), "--yes", "--dir", "taken"), 2, "not a clone of")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    assert config.read_text() == EXAMPLE
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "gone").exists()


def test_bad_flags_are_refused_with_the_reason(tmp_path):
    repo = make_repo(tmp_path, "app")
    config = projects_file(tmp_path, EXAMPLE.replace("~/src/notes", str(tmp_path / "elsewhere")))
    _refused(init(tmp_path, str(repo), "--yes", "--port", "http"), 2, "--port: 'http' is not a port number")
    _refused(init(tmp_path, str(repo), "--yes", "--port", "70000"), 2, "out of range")
    _refused(init(tmp_path, str(repo), "--yes", "--port", "9100"), 2, "project 'baton'")
    _refused(init(tmp_path, str(repo), "--yes", "--id", "Bad_Id"), 2, "--id: 'Bad_Id'")
    _refused(init(tmp_path, str(repo), "--yes", "--id", "notes"), 2, "already the id of another project")
    _refused(init(tmp_path, str(repo), "--yes", "--runtime", "cursor"), 2, "unknown runtime 'cursor'")
    _refused(init(tmp_path, str(repo), "--yes", "--runtime", "demo"), 2, "only suits baton-dashboard --demo")
    _refused(init(tmp_path, str(repo), "--yes", "--base-branch", "nope"), 2, "no branch 'nope'")
    assert config.read_text().count("- id:") == 2 and not (repo / "agent.yaml").exists()


def test_a_projects_yaml_that_does_not_read_back_is_restored(tmp_path):
    # A second `projects:` key wins when YAML is read: the appended entry would be lost.
    original = "projects:\n  - id: a\n    path: /srv/a\nprojects: []\n"
    config = projects_file(tmp_path, original)
    repo = make_repo(tmp_path, "app")
    _refused(init(tmp_path, str(repo), "--yes", "--no-start"), 2, "does not read back")
    assert config.read_text() == original and not (repo / "agent.yaml").exists()


def test_an_invalid_projects_yaml_is_reported_and_left_alone(tmp_path):
    config = projects_file(tmp_path, "projects:\n  - id: Bad Id\n    path: /x\n")
    repo = make_repo(tmp_path, "app")
    _refused(init(tmp_path, str(repo), "--yes"), 2, "projects[0]")
    assert config.read_text() == "projects:\n  - id: Bad Id\n    path: /x\n"


# ----- interactive -----------------------------------------------------------------------------

def test_answers_piped_without_a_terminal_work_and_running_out_of_them_is_an_error(tmp_path):
    repo = make_repo(tmp_path, "app")
    # target, id, name, runtime, tests, branch, port, colour, start, guardrails
    proc = init(tmp_path, stdin=f"{repo}\n\n\n\nnone\n\n\n\nn\nno\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(entry(tmp_path / "config" / "projects.yaml", "app").path) == repo
    assert not (repo / "data" / "guardrails-acknowledged.json").exists()
    other = make_repo(tmp_path, "other")
    _refused(init(tmp_path, stdin=f"{other}\n\n"), 2, "no more answers")
    assert not (other / "agent.yaml").exists()


class Terminal:
    """A program on the slave end of a pty; `expect` reads what it shows until a text appears."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, cwd=cwd, env={**ENV, "TERM": "dumb"}, stdin=slave, stdout=slave,
                                     stderr=slave, start_new_session=True)
        os.close(slave)
        self.seen = ""
        self.read_to = 0

    def expect(self, text: str, timeout: float = 30.0) -> str:
        """Everything shown since the last expect, up to and including `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.read_to:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; the screen shows:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: the program closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the program ended before showing {text!r}:\n{self.seen}")
                self.seen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        end = self.seen.index(text, self.read_to) + len(text)
        shown, self.read_to = self.seen[self.read_to:end], end
        return shown

    def answer(self, prompt: str, text: str) -> str:
        shown = self.expect(prompt)
        os.write(self.master, text.encode() + b"\n")
        return shown

    def close(self) -> int:
        try:
            if sys.exc_info()[0] is not None:  # the test failed: do not wait for more answers
                self.proc.kill()
            return self.proc.wait(timeout=30)
        finally:
            os.close(self.master)


def test_the_interactive_questions_in_a_terminal(tmp_path):
    repo = make_repo(tmp_path, "shop")
    config = projects_file(tmp_path)
    term = Terminal(INIT, tmp_path)
    try:
        term.answer("Repository to adopt (a path or a git URL) [.]: ", "no-such-folder")
        shown = term.answer("Repository to adopt (a path or a git URL) [.]: ", str(repo))
        assert "not accepted: no-such-folder: no such directory" in shown  # asked again, with the reason
        term.answer("Project id [shop]: ", "Web Shop")
        shown = term.answer("Project id [shop]: ", "webshop")
        assert "not accepted: 'Web Shop': an id is 1-40 characters" in shown
        term.answer("Display name [shop]: ", "Web shop")
        term.answer("Runtime (claude_code | codex | opencode) [claude_code]: ", "cursor")
        shown = term.answer("Runtime (claude_code | codex | opencode) [claude_code]: ", "")
        assert "unknown runtime 'cursor'" in shown
        term.answer("Test command, run before landing ('none': no tests) [none]: ", "python -m pytest -q")
        term.answer("Base branch [main]: ", "")
        prompt = term.expect("]: ")
        assert "Agent port [" in prompt
        default_port = int(prompt.rsplit("[", 1)[1].split("]")[0])
        os.write(term.master, b"9100\n")
        shown = term.answer("Agent port [", "")
        assert "not accepted: port 9100 is project 'baton'" in shown
        term.answer("Colour on the board [#f5a623]: ", "#123abc")
        term.answer("(start: true)? [Y/n]: ", "n")
        shown = term.answer("Type yes to acknowledge", "yes")
        assert "The agent will run without the usual guardrails" in shown and "claude_code" in shown
        term.expect("next: baton-agent --project-dir")
    finally:
        status = term.close()
    assert status == 0, term.seen

    agent = load_agent_config(repo / "agent.yaml")
    assert (agent.project_id, agent.runtime, agent.test_command) == ("webshop", "claude_code", "python -m pytest -q")
    assert config.read_text().startswith(EXAMPLE)
    shop = entry(config, "webshop")
    assert (shop.name, shop.color, port_of(shop.agent_url), shop.start) == ("Web shop", "#123abc", default_port, False)
    assert json.loads((repo / "data" / "guardrails-acknowledged.json").read_text())["runtimes"] == ["claude_code"]

    # Run again in the terminal: registered already, so only the agent's own questions remain.
    term = Terminal([*INIT, str(repo)], tmp_path)
    try:
        for prompt in ("Runtime (", "Test command", "Base branch"):
            term.answer(prompt, "")
        shown = term.expect("nothing to change: already registered as webshop; agent.yaml unchanged")
        assert "Project id" not in shown and "Type yes" not in shown
    finally:
        assert term.close() == 0, term.seen


def test_baton_init_is_a_console_script():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["baton-init"] == "backend.init.cli:main"


def test_run_starts_the_board_in_its_place_and_one_ctrl_c_stops_it_and_the_agent(tmp_path):
    import signal

    import httpx

    from support import free_port, pid_alive, wait_for

    repo = make_repo(tmp_path, "shop")
    board = free_port()
    agent_port = str(free_port())
    proc = subprocess.Popen([*INIT, str(repo), "--yes", ACK, "--test-command", "none", "--port", agent_port,
                             "--run", "--dashboard-port", str(board)],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        def project_agent():
            try:
                projects = httpx.get(f"http://127.0.0.1:{board}/api/projects", timeout=2).json()["projects"]
            except (httpx.HTTPError, ValueError):
                return None
            agent = projects[0].get("agent") or {}
            return agent if agent.get("state") == "running" else None

        agent = wait_for(project_agent, timeout=60, what="the board to start the project's agent")
        assert httpx.get(f"http://127.0.0.1:{agent_port}/agent/health", timeout=5).json()["project_id"] == "shop"
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl+C
        assert proc.wait(timeout=60) == 0
        output = proc.stdout.read()
        assert "starting the board" in output
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{agent_port}/agent/health", timeout=2)
        assert agent["pid"] and not pid_alive(agent["pid"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
