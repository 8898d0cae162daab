"""Chat -> plan: the model is asked, with the conversation, to call one tool, `propose_plan`,
whose input is a PlanDraft (backend/plans/model.py). Its input is validated by PlanDraft itself;
an invalid one is answered once with a tool_result `is_error: true` listing the problems, and
the model asked again. The tool's JSON Schema is written out here, self-contained, from the
same constants (tests/test_chat_plan.py checks it agrees with PlanDraft).
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import ValidationError

from ..models import DEPENDS_MAX, REF_PATTERN, TITLE_MAX_CHARS, TITLE_PATTERN, Priority, TaskType
from ..plans.model import PLAN_SUMMARY_MAX, PLAN_TASKS_MAX, PLAN_TITLE_MAX, PlanDraft

TOOL_NAME = "propose_plan"

INSTRUCTION = (
    "Turn our conversation into a plan for this project: a set of tasks, each small enough for one "
    "coding agent to finish and test on its own, in the order the work depends on. Give every task a "
    "short `ref` (like `schema` or `api-2`); list in `depends_on` the refs of the tasks that must be "
    "completed before it can start (no cycles). Write each task's `content` as instructions for a coding "
    f"agent that has not read this conversation. Call the {TOOL_NAME} tool with the plan."
)


def plan_schema() -> dict[str, Any]:
    ref = {"type": "string", "pattern": REF_PATTERN}
    task = {
        "type": "object",
        "properties": {
            "ref": {**ref, "description": "A short local name other tasks use in depends_on, e.g. schema, api-2."},
            "title": {"type": "string", "minLength": 1, "maxLength": TITLE_MAX_CHARS, "pattern": TITLE_PATTERN,
                      "description": "One line saying what the task achieves."},
            "content": {"type": "string", "description": "What to do, for a coding agent that has not seen "
                        "this conversation: the goal, where in the code, how to know it works."},
            "task_type": {"type": "string", "enum": list(get_args(TaskType))},
            "priority": {"type": "string", "enum": list(get_args(Priority))},
            "depends_on": {"type": "array", "items": ref, "maxItems": DEPENDS_MAX,
                           "description": "Refs of tasks of this plan to complete first."},
            "needs_plan_review": {"type": "boolean",
                                  "description": "True when a person should approve the agent's plan first."},
        },
        "required": ["ref", "title", "content"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": PLAN_TITLE_MAX, "pattern": TITLE_PATTERN},
            "summary": {"type": "string", "maxLength": PLAN_SUMMARY_MAX,
                        "description": "What the plan achieves and why, in a few sentences."},
            "tasks": {"type": "array", "items": task, "minItems": 1, "maxItems": PLAN_TASKS_MAX},
        },
        "required": ["title", "summary", "tasks"],
        "additionalProperties": False,
    }


def plan_tool() -> dict[str, Any]:
    return {"name": TOOL_NAME, "description": "Propose the plan: tasks with their dependencies.",
            "input_schema": plan_schema()}


def validate(tool_input: Any) -> tuple[PlanDraft | None, str]:
    """(the draft, "") or (None, the problems as lines for the model and the person)."""
    try:
        return PlanDraft.model_validate(tool_input), ""
    except ValidationError as exc:
        lines = []
        for err in exc.errors()[:30]:
            where = ".".join(str(p) for p in err["loc"]) or "plan"
            lines.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
        return None, "\n".join(lines)


def tool_call(content: list[Any]) -> tuple[dict | None, Any]:
    """The propose_plan tool_use block of an answer, as a dict to send back, and its input."""
    for block in content:
        if getattr(block, "type", None) == "tool_use" and getattr(block, "name", None) == TOOL_NAME:
            return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}, block.input
    return None, None
