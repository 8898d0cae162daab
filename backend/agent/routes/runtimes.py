"""/agent/runtimes: the runtimes a task may choose here, and whether each can start now."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from ...web.errors import ERROR_RESPONSES
from ..deps import DispatcherDep, SettingsDep
from ..runtimechoice import describe
from ..schemas import RuntimeList

router = APIRouter(prefix="/agent", tags=["runtimes"], responses=ERROR_RESPONSES)


@router.get("/runtimes", response_model=RuntimeList)
def runtimes(settings: SettingsDep, dispatcher: DispatcherDep) -> dict:
    """The configured runtimes, the project's default first: `available` is false (with the
    `problem`) while a runtime's CLI cannot be started; `cost: estimated` when Baton computes
    its costs from a price table."""
    return describe(settings.config, dispatcher.ctx.runtimes)


def document_choices(app: FastAPI, names: list[str]) -> None:
    """The OpenAPI document names the runtimes a new task may choose on this agent (instead of
    any well-formed name), and allows a `run_on` only where agent turns run on other machines
    (executor: dask), so that a schema-valid create is one this agent accepts."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()  # cached on the app: patched once
            properties = schema["components"]["schemas"]["NewTask"]["properties"]
            for option in properties["runtime"].get("anyOf", []):
                if option.get("type") == "string":
                    option.pop("pattern", None)
                    option["enum"] = list(names)
            if app.state.dispatcher.config.executor == "local":  # a run_on is 422 run_on_needs_dask
                run_on = properties["run_on"]
                run_on["anyOf"] = [option for option in run_on.get("anyOf", []) if option.get("type") == "null"]
        return app.openapi_schema

    app.openapi = openapi
