"""Path parameters shared by the agent and dashboard APIs, declared so that the OpenAPI
documents say exactly which values the routes accept. The routes still check them themselves
(check_id and friends), which keeps the documented 400 `invalid_id` / 404 answers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from ..models import STATUSES, TASK_ID_RE

_ID = TASK_ID_RE.pattern.removeprefix("^").removesuffix("$")

TaskIdPath = Annotated[str, Path(
    description="A task id: 1-32 characters of a-z and 0-9.",
    json_schema_extra={"pattern": TASK_ID_RE.pattern, "minLength": 1, "maxLength": 32})]

StatusPath = Annotated[str, Path(description="A task status.", json_schema_extra={"enum": list(STATUSES)})]
# One task's detail: by its status (the mirror's folder), or `any` when the reader does not know it
# (a link, or a task that moved on meanwhile): then one read finds it wherever it is.
ANY_STATUS = "any"
DetailStatusPath = Annotated[str, Path(description="A task status, or `any`: the task in whatever status it has.",
                                       json_schema_extra={"enum": [*STATUSES, ANY_STATUS]})]

FilenamePath = Annotated[str, Path(
    description="`<id>.md` (the task's mirror file name) or `<id>`.",
    json_schema_extra={"pattern": f"^{_ID}(\\.md)?$", "minLength": 1, "maxLength": 35})]
