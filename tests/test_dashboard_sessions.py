"""The dashboard's browser sessions against the real server: random server-side ids that expire
and can be ended, and sign-in guesses that are throttled per address and overall."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from support import ROOT, free_port, make_repo, wait_for, wait_for_http
from test_api import assert_error

TOKEN = "dashboard-secret-token"


@pytest.fixture
def dashboard(dashboard_factory, tmp_path):
    def start(**config_keys) -> httpx.Client:
        return dashboard_factory([{"id": "p", "path": str(make_repo(tmp_path, "sessions"))}], token=TOKEN,
                                 **config_keys)
    return start


def sign_in(client: httpx.Client) -> httpx.Response:
    resp = client.post("/api/session", json={"token": TOKEN})
    assert resp.status_code == 204, resp.text
    return resp


def with_cookie(client: httpx.Client, value: str, method: str = "GET", path: str = "/api/projects") -> httpx.Response:
    """Send exactly this session cookie (whatever the client's jar holds or has expired)."""
    client.cookies.clear()
    return client.request(method, path, headers={"Cookie": f"baton_session={value}"})


def from_address(client: httpx.Client, address: str) -> httpx.Client:
    """A client of the same dashboard whose connections come from another loopback address."""
    return httpx.Client(base_url=str(client.base_url), timeout=10,
                        transport=httpx.HTTPTransport(local_address=address))


def test_each_sign_in_gets_its_own_random_session(dashboard):
    client = dashboard()
    first, second = sign_in(client), sign_in(client)
    one, two = first.cookies["baton_session"], second.cookies["baton_session"]
    assert one != two and TOKEN not in one + two and len(one) >= 40
    header = first.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=strict" in header and "Max-Age=43200" in header  # 12 h default
    assert with_cookie(client, one).status_code == 200
    assert with_cookie(client, two).status_code == 200
    assert_error(with_cookie(client, "not-a-session"), 401, "unauthorized")


def test_sign_out_ends_the_session_on_the_server(dashboard):
    client = dashboard()
    kept = sign_in(client).cookies["baton_session"]
    ended = sign_in(client).cookies["baton_session"]
    out = with_cookie(client, ended, "DELETE", "/api/session")
    assert out.status_code == 204
    assert 'baton_session=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    assert_error(with_cookie(client, ended), 401, "unauthorized")  # a copied cookie is dead too
    assert with_cookie(client, kept).status_code == 200  # other sessions are not touched


def test_a_session_expires_after_its_lifetime(dashboard):
    client = dashboard(session_hours=1 / 3600)  # one second
    login = sign_in(client)
    assert "Max-Age=1" in login.headers["set-cookie"]
    value = login.cookies["baton_session"]
    wait_for(lambda: with_cookie(client, value).status_code == 401, timeout=15, what="the session to expire")
    assert_error(with_cookie(client, value), 401, "unauthorized")


def test_failed_sign_ins_are_throttled_per_address(dashboard):
    client = dashboard()
    for n in range(5):
        assert_error(client.post("/api/session", json={"token": f"guess-{n}"}), 401, "unauthorized")
    locked = client.post("/api/session", json={"token": "guess-5"})
    assert_error(locked, 429, "too_many_attempts")
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    right = client.post("/api/session", json={"token": TOKEN})  # even the right token waits
    assert_error(right, 429, "too_many_attempts")
    assert "set-cookie" not in right.headers
    with from_address(client, "127.0.0.2") as other:  # another address is not locked out
        assert other.post("/api/session", json={"token": TOKEN}).status_code == 204


def test_many_addresses_together_cannot_keep_guessing(dashboard):
    client = dashboard()
    for n in range(10):  # 5 guesses each from 10 addresses: none is locked on its own
        with from_address(client, f"127.0.1.{n + 1}") as guesser:
            for m in range(5):
                assert_error(guesser.post("/api/session", json={"token": f"guess-{n}-{m}"}), 401, "unauthorized")
    with from_address(client, "127.0.2.1") as fresh:
        resp = fresh.post("/api/session", json={"token": "guess-new"})
        assert_error(resp, 429, "too_many_attempts")
        assert int(resp.headers["retry-after"]) >= 1


def test_wrong_bearer_tokens_count_as_failed_sign_ins(dashboard):
    client = dashboard()
    for n in range(5):
        assert_error(client.get("/api/projects", headers={"Authorization": f"Bearer guess-{n}"}), 401, "unauthorized")
    locked = client.get("/api/projects", headers={"Authorization": f"Bearer {TOKEN}"})
    assert_error(locked, 429, "too_many_attempts")
    assert int(locked.headers["retry-after"]) >= 1
    assert_error(client.post("/api/session", json={"token": TOKEN}), 429, "too_many_attempts")


def test_one_stale_token_sent_again_and_again_locks_nobody_out(dashboard):
    # A script still polling with an old token is not guessing: it must not lock the owner (same
    # address: everything on this machine is 127.0.0.1) out of the board.
    client = dashboard()
    for _ in range(20):
        assert_error(client.get("/api/projects", headers={"Authorization": "Bearer old-token"}), 401, "unauthorized")
        assert_error(client.post("/api/session", json={"token": "old-token"}), 401, "unauthorized")
    assert client.get("/api/projects", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    sign_in(client)


def test_x_forwarded_for_does_not_give_a_guesser_fresh_addresses(tmp_path):
    # The real command: uvicorn would otherwise take a loopback client's X-Forwarded-For as its
    # address, and each invented address would get guesses of its own.
    (tmp_path / "projects.yaml").write_text("projects: []\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.dashboard.cli", "--config", "projects.yaml", "--port", str(port)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "BATON_DASHBOARD_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"{url}/api/health", proc)
        with httpx.Client(base_url=url, timeout=10) as client:
            for n in range(5):
                resp = client.post("/api/session", json={"token": f"guess-{n}"},
                                   headers={"X-Forwarded-For": f"203.0.113.{n + 1}"})
                assert_error(resp, 401, "unauthorized")
            resp = client.post("/api/session", json={"token": "guess-5"}, headers={"X-Forwarded-For": "203.0.113.99"})
            assert_error(resp, 429, "too_many_attempts")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_token_that_is_not_valid_unicode_is_a_wrong_token(dashboard):
    # JSON may spell a lone surrogate ("\ud800"): a wrong token, never a 500.
    client = dashboard()
    resp = client.post("/api/session", content=b'{"token": "\\ud800"}', headers={"Content-Type": "application/json"})
    assert_error(resp, 401, "unauthorized")
