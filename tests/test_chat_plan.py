"""Chat -> plan: the model is made to call `propose_plan` (tool_choice), its input is validated
as a PlanDraft, an invalid one is sent back once as a tool_result with is_error, and the plan
is created as a draft on the project's agent (plans/draft/<id>.json), recorded in the chat."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from backend.chat.planning import TOOL_NAME, plan_schema, validate
from backend.models import DEPENDS_MAX, REF_PATTERN, TITLE_PATTERN, Priority, TaskType
from backend.plans.model import PLAN_TASKS_MAX, PlanDraft
from chat_support import KEY, KEY_ENV, ChatWorld, chat_config
from fakes.messages_standin import MessagesStandIn, dropped, http_error, text, tool
from support import commit_and_push
from test_api import assert_error

GOOD = {"title": "Health checks", "summary": "A /health route, then its docs.", "tasks": [
    {"ref": "route", "title": "Add GET /health", "content": "Answer 200 with the version.", "task_type": "feature",
     "priority": "high", "depends_on": []},
    {"ref": "tests", "title": "Test /health", "content": "A test that calls it.", "task_type": "test",
     "depends_on": ["route"]},
    {"ref": "docs", "title": "Document /health", "content": "README section.", "task_type": "docs",
     "depends_on": ["route", "tests"]},
]}
CYCLE = {**GOOD, "tasks": [{**GOOD["tasks"][0], "depends_on": ["docs"]}, *GOOD["tasks"][1:]]}
DANGLING = {**GOOD, "tasks": [*GOOD["tasks"][:2], {**GOOD["tasks"][2], "depends_on": ["nowhere"]}]}


@pytest.fixture
def world(agent_factory, dashboard_factory, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    agent = agent_factory()
    commit_and_push(agent.settings.project_dir, {"CLAUDE.md": "Keep routes small.\n"}, "Rules")
    project_id = agent.client.get("/agent/health").json()["project_id"]
    with MessagesStandIn() as api:
        client = dashboard_factory([{"id": "alpha", "agent_url": agent.url, "agent_project_id": project_id}],
                                   timeout=10.0, chat=chat_config(api.url, tmp_path / "chats"))
        yield ChatWorld(client=client, api=api, agent=agent, chats_dir=tmp_path / "chats")


def _talked(world: ChatWorld) -> str:
    world.api.script(text(["A route, a test, then docs."], usage=(500, 20)))
    chat_id = world.new_chat()
    world.send(chat_id, "We need a health check.")
    return chat_id


def test_a_chat_becomes_a_draft_plan_on_the_agent(world):
    chat_id = _talked(world)
    world.api.script(tool(TOOL_NAME, GOOD, pieces=5, usage=(800, 300)))
    resp = world.client.post(world.url(chat_id, "plan"))
    assert resp.status_code == 201, resp.text
    plan = resp.json()
    assert (plan["state"], plan["revision"], plan["chat_id"], plan["title"]) == ("draft", 1, chat_id, "Health checks")
    assert [t["ref"] for t in plan["tasks"]] == ["route", "tests", "docs"]
    assert plan["tasks"][2]["depends_on"] == ["route", "tests"]
    # A file on the agent, and the same plan through the dashboard's plans API.
    assert (world.agent.settings.project_dir / "plans" / "draft" / f"{plan['id']}.json").is_file()
    assert world.client.get(f"/api/projects/alpha/plans/{plan['id']}").json()["id"] == plan["id"]
    # The model was made to call the tool, after the conversation and the instruction.
    request = world.api.requests[-1]["body"]
    assert request["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert [t["name"] for t in request["tools"]] == [TOOL_NAME]
    assert request["tools"][0]["input_schema"] == plan_schema()
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
    assert TOOL_NAME in request["messages"][-1]["content"][-1]["text"]
    assert "Keep routes small." in request["system"]
    # Recorded in the conversation, and its tokens counted.
    chat = world.chat(chat_id)
    assert chat["plan_ids"] == [plan["id"]]
    assert (chat["totals"]["input_tokens"], chat["totals"]["output_tokens"]) == (1300, 320)


@pytest.mark.parametrize("first, problem", [(CYCLE, "cycle"), (DANGLING, "nowhere"),
                                            ({"title": "No tasks"}, "tasks")])
def test_an_invalid_plan_is_sent_back_once(world, first, problem):
    chat_id = _talked(world)
    world.api.script(tool(TOOL_NAME, first), tool(TOOL_NAME, GOOD))
    resp = world.client.post(world.url(chat_id, "plan"))
    assert resp.status_code == 201, resp.text
    retry = world.api.requests[-1]["body"]["messages"]
    assert retry[-2]["role"] == "assistant" and retry[-2]["content"][0]["type"] == "tool_use"
    assert retry[-2]["content"][0]["input"] == first
    result = retry[-1]["content"][0]
    assert (result["type"], result["is_error"], result["tool_use_id"]) == ("tool_result", True, retry[-2]["content"][0]["id"])
    assert problem in result["content"]
    assert world.chat(chat_id)["plan_ids"] == [resp.json()["id"]]


def test_a_plan_invalid_twice_is_refused_and_nothing_is_created(world):
    chat_id = _talked(world)
    world.api.script(tool(TOOL_NAME, CYCLE), tool(TOOL_NAME, CYCLE))
    error = assert_error(world.client.post(world.url(chat_id, "plan")), 422, "invalid_plan")
    assert "cycle" in error["message"]
    assert world.client.get("/api/projects/alpha/plans").json()["plans"] == []
    chat = world.chat(chat_id)
    assert chat["plan_ids"] == [] and chat["totals"]["input_tokens"] == 500 + 2 * 200  # both attempts counted


def test_plan_errors(world):
    empty = world.new_chat()
    assert_error(world.client.post(world.url(empty, "plan")), 409, "chat_empty")
    chat_id = _talked(world)
    world.api.script(http_error(529))
    error = assert_error(world.client.post(world.url(chat_id, "plan")), 502, "chat_api_error")
    assert "overloaded" in error["message"]
    world.api.script(tool(TOOL_NAME, GOOD))  # and the chat is free again afterwards
    assert world.client.post(world.url(chat_id, "plan")).status_code == 201


def test_the_tool_schema_says_what_plan_draft_accepts():
    schema = plan_schema()
    task = schema["properties"]["tasks"]["items"]
    assert set(task["properties"]["task_type"]["enum"]) == set(get_args(TaskType))
    assert set(task["properties"]["priority"]["enum"]) == set(get_args(Priority))
    assert task["properties"]["ref"]["pattern"] == REF_PATTERN
    assert task["properties"]["depends_on"]["maxItems"] == DEPENDS_MAX
    assert schema["properties"]["tasks"]["maxItems"] == PLAN_TASKS_MAX
    # Every key the tool allows is one PlanDraft takes (extra="forbid" there).
    assert set(task["properties"]) <= set(PlanDraft.model_json_schema()["$defs"]["PlanTask"]["properties"])
    assert set(schema["properties"]) <= set(PlanDraft.model_json_schema()["properties"])
    # Titles are one line, as PlanDraft checks them.
    drafted = PlanDraft.model_json_schema()
    assert schema["properties"]["title"]["pattern"] == drafted["properties"]["title"]["pattern"] == TITLE_PATTERN
    assert task["properties"]["title"]["pattern"] == drafted["$defs"]["PlanTask"]["properties"]["title"]["pattern"]
    assert validate(GOOD)[0] is not None
    draft, problems = validate(CYCLE)
    assert draft is None and problems == "plan: depends_on makes a cycle: route -> docs -> route"


def test_a_plan_cut_off_at_max_tokens_is_refused_not_used_in_part(world):
    chat_id = _talked(world)
    # The JSON ends after the second task: the SDK parses what there is into a valid two-task plan.
    raw = json.dumps(GOOD)
    cut = raw[:raw.index('{"ref": "docs"')]
    assert validate(json.loads(cut.rstrip(", ") + "]}"))[0] is not None
    world.api.script(tool(TOOL_NAME, None, raw_json=cut, stop_reason="max_tokens", usage=(800, 16384)))
    error = assert_error(world.client.post(world.url(chat_id, "plan")), 422, "plan_too_long")
    assert "chat.plan_max_tokens" in error["message"] and "16384" in error["message"]
    assert len(world.api.requests) == 2  # the conversation's answer, one plan call: never asked again
    assert world.client.get("/api/projects/alpha/plans").json()["plans"] == []
    chat = world.chat(chat_id)
    assert chat["plan_ids"] == [] and chat["totals"]["output_tokens"] == 20 + 16384  # its tokens counted


@pytest.mark.parametrize("chunked", [True, False])
def test_a_connection_dropped_while_planning_is_a_502(world, chunked):
    chat_id = _talked(world)
    world.api.script(dropped(["{"], chunked=chunked))
    error = assert_error(world.client.post(world.url(chat_id, "plan")), 502, "chat_api_error")
    assert "dropped mid-answer" in error["message"]
    assert world.client.get("/api/projects/alpha/plans").json()["plans"] == []
    world.api.script(tool(TOOL_NAME, GOOD))  # and the chat is free again afterwards
    assert world.client.post(world.url(chat_id, "plan")).status_code == 201
