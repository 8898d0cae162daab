"""The live board in a real browser, for tests/test_browser_{live,attention,dispatcher}.py: a real
baton-dashboard process (restartable on the same port) in front of real agents, and a page that
records its requests and errors."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from support import ROOT, free_port, wait_for_http


class BoardDashboard:
    """`baton-dashboard` as a process, over agents given as {project id: RunningAgent}."""

    def __init__(self, root: Path, agents: dict) -> None:
        self.root = root
        lines = [f"  - id: {pid}\n    name: {pid.title()}\n    agent_url: {agent.url}\n"
                 f"    agent_project_id: {agent.settings.project_id}\n" for pid, agent in agents.items()]
        (root / "projects.yaml").write_text("agent_timeout_seconds: 5\nprojects:\n" + "".join(lines))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml", "--port", str(self.port)],
            cwd=self.root, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
            stderr=open(self.root / "dashboard.err", "a"))
        wait_for_http(f"{self.url}/api/health", self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


class BoardPage:
    """A tab on the board: `requests` lists every request's (method, path, headers) since it opened."""

    def __init__(self, browser, url: str, *, init_script: str | None = None, grant: list[str] | None = None,
                 viewport: dict | None = None) -> None:
        self.context = browser.new_context(viewport=viewport or {"width": 1500, "height": 950})
        if grant:
            self.context.grant_permissions(grant, origin=url)
        if init_script:
            self.context.add_init_script(init_script)
        self.page = self.context.new_page()
        self.requests: list[tuple[str, str, dict]] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append((r.method, r.url.removeprefix(url), r.headers)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.goto(url)
        self.page.wait_for_selector("body[data-board-ready='1']")

    def paths(self, prefix: str) -> list[str]:
        return [path for _, path, _ in self.requests if path.startswith(prefix)]

    def close(self) -> None:
        self.context.close()


class DroppingProxy:
    """A plain TCP forwarder in front of the dashboard whose drop() cuts every open connection
    (the page's stream with it) while the dashboard stays up: a network drop, for real."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def drop(self) -> int:
        with self.lock:
            cut, self.open = self.open, set()
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        return len(cut)

    def close(self) -> None:
        self.listener.close()
        self.drop()
