"""/docs renders in a real browser under the servers' CSP (default-src 'self'): Swagger UI's
files come from an installed package and its start-up code from a file of ours, never from a
CDN or an inline script."""

from __future__ import annotations


import pytest

from browsing import playwright_or_skip


playwright_api = playwright_or_skip()


def render_docs(browser, url: str, operation: str) -> tuple[str, list[str], list[str]]:
    """Open {url}/docs; return the page text once `operation` shows, the console errors, and
    every request that left this origin."""
    page = browser.new_page()
    errors: list[str] = []
    elsewhere: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith(url) else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(f"{url}/docs")
        page.get_by_text(operation, exact=True).first.wait_for(timeout=15000)
        return page.inner_text("body"), errors, elsewhere
    finally:
        page.close()


def test_agent_docs_render_with_the_csp(browser, agent) -> None:
    text, errors, elsewhere = render_docs(browser, agent.url, "/agent/tasks")
    assert "baton-agent" in text  # the API title
    assert "/agent/tasks/bulk" in text
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors
    assert not errors, errors
    assert not elsewhere, elsewhere


def test_dashboard_docs_render_with_the_csp(browser, dashboard_factory) -> None:
    board = dashboard_factory([{"id": "alpha", "name": "Alpha", "agent_url": "http://127.0.0.1:9"}])
    url = str(board.base_url).rstrip("/")
    text, errors, elsewhere = render_docs(browser, url, "/api/projects")
    assert "baton-dashboard" in text
    assert not errors, errors
    assert not elsewhere, elsewhere


def test_docs_assets_are_served_from_this_origin(agent) -> None:
    page = agent.client.get("/docs")
    assert page.status_code == 200
    assert "<script>" not in page.text and "cdn" not in page.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "docs-init.js"):
        answer = agent.client.get(f"/docs/assets/{asset}")
        assert answer.status_code == 200, asset
    assert agent.client.get("/docs/assets/..%2F..%2Fpyproject.toml").status_code == 404
    assert agent.client.get("/redoc").status_code == 404
