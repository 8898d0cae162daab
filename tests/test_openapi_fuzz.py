"""Both OpenAPI documents match behaviour: schemathesis, driven only by /openapi.json, runs its
checks against the real agent and the real dashboard (uvicorn on free ports) and finds neither
a mismatch nor a 5xx. Among its checks: schema-valid data is accepted, schema-invalid data is
refused, status codes / content types / bodies are the documented ones, and a method a path
does not declare gets 405 with an `Allow` header listing exactly the declared ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("schemathesis", reason="SKIPPED LOUDLY: schemathesis (the test extra) is not installed")

TOKEN = "fuzz-token-0123456789abcdef"
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "positive_data_acceptance", "negative_data_rejection",
    "unsupported_method", "allow_header_conformance", "missing_required_header",
])


def fuzz(url: str, tmp_path: Path, *extra: str, parameters: dict[str, str] | None = None, more: str = "") -> None:
    """Run schemathesis over the server's own document; fail with its report. `more`: further
    schemathesis.toml text (e.g. per-operation settings)."""
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in (parameters or {}).items()) + more)
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{url}/openapi.json",
         "--checks", CHECKS, "--phases", "examples,coverage,fuzzing", "--max-examples", "15",
         "--seed", "7", "--workers", "1", "--request-timeout", "10", "--no-color",
         # An event stream follows a live task until it ends, and the fuzzer reuses real task ids
         # from earlier answers: it would only measure the timeout. The same id checks and
         # errors are fuzzed through the events pages.
         "--exclude-path-regex", "/stream$", *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-12000:] + proc.stderr[-3000:]


def test_agent_openapi_matches_behaviour(agent_factory, tmp_path: Path) -> None:
    agent = agent_factory(token=TOKEN)
    # Some existing tasks, so reads and cancels meet real ones too.
    for title in ("first", "second"):
        agent.client.post("/agent/tasks", json={"title": title},
                          headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
    fuzz(agent.url, tmp_path, "--header", f"Authorization: Bearer {TOKEN}", more=ATTACHMENT_UPLOADS + PLAN_GRAPHS)


def test_dashboard_openapi_matches_behaviour(agent_factory, dashboard_factory, tmp_path: Path) -> None:
    agent = agent_factory()
    agent.client.post("/agent/tasks", json={"title": "existing"}).raise_for_status()
    project_id = agent.client.get("/agent/health").json()["project_id"]
    board = dashboard_factory([{"id": "alpha", "name": "Alpha", "agent_url": agent.url,
                                "agent_project_id": project_id}])
    # The one configured project: random project ids would only ever meet 404.
    fuzz(str(board.base_url).rstrip("/"), tmp_path, parameters={"path.project_id": "alpha"},
         more=ATTACHMENT_UPLOADS + RELAYED_CREATES + PLAN_GRAPHS)


# The dashboard's document cannot name the runtimes each project's agent configures (its own
# document does: GET /agent/runtimes, and an enum in NewTask): a well-formed runtime the agent
# does not configure is its 422 runtime_not_configured, relayed.
RELAYED_CREATES = """
[[operations]]
include-path-regex = "^/api/projects/[{]project_id[}]/tasks(/bulk)?$"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""

# A plan's tasks must name each other (unique refs, dependencies within the plan, no cycle): rules
# no JSON Schema states. A well-formed plan that breaks them is a 422 validation_error.
PLAN_GRAPHS = """
[[operations]]
include-path-regex = "/plans(/[{]plan_id[}])?$"
include-method-regex = "^(POST|PUT)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""

# A schema can say "files in a multipart field", not which bytes make a PNG or UTF-8 text: a
# well-formed upload of random bytes is refused by type (415), name (422), size (413) or count (409).
# (First: where several [[operations]] entries match an operation, the first one's checks count.)
ATTACHMENT_UPLOADS = "".join(f"""
[[operations]]
include-name = "POST {path}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "413", "415", "422", "5xx"]
""" for path in ("/agent/tasks/{task_id}/attachments", "/api/projects/{project_id}/tasks/{task_id}/attachments"))


def test_options_on_bulk_names_post_only(agent) -> None:
    # The case the issue names: OPTIONS /agent/tasks/bulk used to say `Allow: GET`.
    answer = agent.client.options("/agent/tasks/bulk")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json()["error"]["code"] == "method_not_allowed"
    wrong = agent.client.get("/agent/tasks/bulk")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert agent.client.options("/agent/tasks/pending").headers["allow"] == "GET"


def test_schema_states_the_title_and_id_rules(agent) -> None:
    doc = agent.client.get("/openapi.json").json()
    title = doc["components"]["schemas"]["NewTask"]["properties"]["title"]
    assert (title["minLength"], title["maxLength"]) == (1, 200) and "pattern" in title
    rerun = doc["paths"]["/agent/tasks/{task_id}/rerun"]["post"]["parameters"][0]["schema"]
    assert rerun["pattern"] == "^[a-z0-9]{1,32}$"
