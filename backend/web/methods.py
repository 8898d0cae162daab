"""405 answers whose `Allow` header lists exactly the methods the OpenAPI document declares.

Starlette answers a wrong method with the methods of the first route whose path shape matches,
so `OPTIONS /agent/tasks/bulk` (POST only) was told `Allow: GET`, taken from
`GET /agent/tasks/{status}`, and `GET /agent/tasks/bulk` answered 404. Here, before routing,
every documented path whose parameters (as the document declares them: enum or pattern) match
the request contributes its methods; a method outside them gets 405 in the error shape.
Undocumented paths (the board's page, static files, /docs) are left to their routes."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAM = re.compile(r"\{([^}/]+)\}")


def _param_regex(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(re.escape(str(v)) for v in schema["enum"])
    if "pattern" in schema:
        return schema["pattern"].removeprefix("^").removesuffix("$")
    return "[^/]+"


def documented_paths(openapi: dict[str, Any]) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """(regex of the path, its methods) for every path of an OpenAPI document."""
    result = []
    for template, item in openapi.get("paths", {}).items():
        methods = frozenset(m.upper() for m in item if m in _METHODS)
        schemas: dict[str, dict] = {}
        for op in (item[m] for m in item if m in _METHODS):
            for param in op.get("parameters", []):
                if param.get("in") == "path":
                    schemas.setdefault(param["name"], param.get("schema", {}))
        pieces, last = [], 0
        for match in _PARAM.finditer(template):
            pieces.append(re.escape(template[last:match.start()]))
            pieces.append(f"(?:{_param_regex(schemas.get(match.group(1), {}))})")
            last = match.end()
        pieces.append(re.escape(template[last:]))
        result.append((re.compile("".join(pieces)), methods))
    return result


class MethodNotAllowedMiddleware:
    """Answers 405 before routing when the path is documented but the method is not."""

    def __init__(self, app: ASGIApp, *, fastapi_app: FastAPI) -> None:
        self.app = app
        self._fastapi_app = fastapi_app
        self._table: list[tuple[re.Pattern[str], frozenset[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._table is None:  # built on first use: the document is complete by then
                self._table = documented_paths(self._fastapi_app.openapi())
            matching = [methods for regex, methods in self._table if regex.fullmatch(scope["path"])]
            allowed = set().union(*matching)
            if matching and scope["method"] not in allowed:
                allow = ", ".join(sorted(allowed))
                response = error_response(405, "method_not_allowed",
                                          f"{scope['method']} is not allowed here; allowed: {allow}",
                                          headers={"Allow": allow})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_method_not_allowed(app: FastAPI) -> None:
    """Add before the security middleware, so that guards still run first."""
    app.add_middleware(MethodNotAllowedMiddleware, fastapi_app=app)
