"""config/projects.yaml -> validated DashboardConfig.

    agent_timeout_seconds: 2
    token: $BATON_DASHBOARD_TOKEN      # optional: protects the dashboard's own API
    session_hours: 12                  # how long a browser sign-in lasts
    allowed_hosts: []
    projects:
      - id: baton
        name: Baton
        path: /src/baton                # for a project without an agent (read from its store)
        agent_url: http://127.0.0.1:9100
        description: The orchestrator itself
        color: "#4f8cff"
        token: $BATON_TOKEN             # the agent's token, if it has one
        agent_project_id: baton         # the project_id its health must name (default: id)
        start: true                     # the dashboard runs this agent itself (needs path and a
                                        # loopback agent_url with a port): supervisor.py
        unattended: false               # true (with start: true): the dashboard passes the guardrails
                                        # flag, so the repository's WORKFLOW.md may bypass its prompts
    chat:                              # chat with a project (backend/chat/config.py has every key)
      model: claude-sonnet-5-5
      api_key_env: ANTHROPIC_API_KEY   # the variable's name; without it the chat says how to enable it
      dir: null                        # conversations; null: data/chats beside the config folder

Problems are reported one per line with the file, the entry and the key. A missing file means
no projects (the page says so).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from ..chat.config import ChatConfig
from ..config import ConfigError, read_yaml_mapping, resolve_secret
from ..sources.config import SourceConfig
from ..web.security import is_loopback

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_COLOR_RE = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
PALETTE = ["#4f8cff", "#2bb673", "#f5a623", "#e0567a", "#9b6dff", "#20b8c9", "#d98c3f", "#7fbf3f"]


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str
    name: str = ""
    path: str | None = None
    agent_url: str | None = None
    description: str = ""
    color: str | None = None
    token: str | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)  # overrides agent_timeout_seconds
    # The project_id the agent at agent_url must report in its health (default: `id`), so an
    # agent of another project that took the port is never shown under this name.
    agent_project_id: str | None = None
    # The dashboard starts (and restarts) this project's baton-agent itself: supervisor.py.
    start: bool = False
    # The agent the dashboard starts gets the guardrails flag (backend/guardrails.py FLAG): a
    # WORKFLOW.md whose runtime bypasses its permission prompts refuses to start without it.
    unattended: bool = False
    # Tasks come from an issue tracker (Linear, Jira): backend/sources/config.py.
    source: SourceConfig | None = None

    @field_validator("timeout_seconds", mode="before")
    @classmethod
    def _number(cls, value):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID_RE.fullmatch(value):
            raise ValueError("must be 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit")
        return value

    @field_validator("agent_project_id")
    @classmethod
    def _agent_project_id(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or len(value) > 200 or not value.isprintable()):
            raise ValueError("must be 1-200 printable characters")
        return value

    @property
    def expected_project_id(self) -> str:
        return self.agent_project_id or self.id

    @field_validator("agent_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials (use the project's token)")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r} is not an http(s)://host[:port] URL")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"{value!r} has an invalid port") from None
        return value.rstrip("/")

    @field_validator("start")
    @classmethod
    def _start(cls, value: bool, info: ValidationInfo) -> bool:
        # A path or agent_url that failed its own check is absent here and reported by it.
        if value and "path" in info.data and "agent_url" in info.data:
            problem = start_problem(info.data["path"], info.data["agent_url"])
            if problem:
                raise ValueError(f"true {problem}")
        return value

    @field_validator("unattended")
    @classmethod
    def _unattended(cls, value: bool, info: ValidationInfo) -> bool:
        # A `start` that failed its own check is absent here and reported by it.
        if value and info.data.get("start", True) is False:
            raise ValueError("true only for agents the dashboard starts (start: true); an agent you start "
                             "yourself takes the guardrails flag on its own command line")
        return value

    @field_validator("color")
    @classmethod
    def _color(cls, value: str | None) -> str | None:
        if value is not None and not _COLOR_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a colour like #4f8cff or #48f")
        return value

    @model_validator(mode="after")
    def _where(self) -> ProjectConfig:
        if not self.agent_url and not self.path:
            raise ValueError("needs agent_url (a running baton-agent) or path (read its store directly)")
        return self


def start_problem(path: str | None, agent_url: str | None) -> str | None:
    """Why the dashboard cannot start this project's agent, or None: it needs the repository and
    a plain-HTTP loopback agent_url with an explicit port (the port the agent is told to bind)."""
    if not path:
        return "needs path (the repository to run baton-agent in)"
    if not agent_url:
        return "needs agent_url (the loopback address the agent is to listen on, e.g. http://127.0.0.1:9100)"
    parts = urlsplit(agent_url)
    if parts.scheme != "http":
        return f"needs an http:// agent_url (baton-agent serves plain HTTP on loopback), not {agent_url!r}"
    if not is_loopback(parts.hostname or ""):
        return f"needs agent_url on a loopback host (127.0.0.1, ::1 or localhost), not {parts.hostname!r}"
    if parts.port is None:
        return f"needs an explicit port in agent_url, e.g. http://{parts.netloc}:9100"
    return None


class DashboardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    agent_timeout_seconds: float = Field(default=2.0, gt=0)
    token: str | None = None
    allowed_hosts: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    session_hours: float = Field(default=12.0, gt=0, le=24 * 365)  # lifetime of a browser sign-in
    projects: list[ProjectConfig] = Field(default_factory=list)
    chat: ChatConfig = Field(default_factory=ChatConfig)

    @field_validator("agent_timeout_seconds", "session_hours", mode="before")
    @classmethod
    def _number(cls, value):
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _unique(self) -> DashboardConfig:
        seen: set[str] = set()
        for index, project in enumerate(self.projects):
            if project.id in seen:
                raise ValueError(f"projects[{index}] (id {project.id!r}): id: duplicate id")
            seen.add(project.id)
        return self

    def start_all(self) -> DashboardConfig:
        """`--start-agents`: every project the dashboard can start gets `start: true`."""
        projects = [p.model_copy(update={"start": True}) if start_problem(p.path, p.agent_url) is None else p
                    for p in self.projects]
        return self.model_copy(update={"projects": projects})

    def with_defaults(self) -> DashboardConfig:
        """Names default to ids, colours to a palette."""
        projects = [
            p.model_copy(update={"name": p.name or p.id, "color": p.color or PALETTE[i % len(PALETTE)]})
            for i, p in enumerate(self.projects)
        ]
        return self.model_copy(update={"projects": projects})


def _describe(path: Path, data: dict, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        if message.startswith("projects["):  # already names its entry (duplicate ids)
            lines.append(f"{path}: {message}")
            continue
        where = ""
        if len(loc) >= 2 and loc[0] == "projects" and isinstance(loc[1], int):
            entry = (data.get("projects") or [])[loc[1]]
            ident = entry.get("id") if isinstance(entry, dict) else None
            where = f"projects[{loc[1]}]" + (f" (id {ident!r})" if ident else "") + ": "
            loc = loc[2:]
        key = ".".join(str(p) for p in loc) or "(entry)"
        if key == "token" or (loc and loc[-1] == "token"):
            message = message.split(" (got")[0]
        lines.append(f"{path}: {where}{key}: {message}")
    return "\n".join(lines)


def load_dashboard_config(path: Path) -> DashboardConfig:
    data = read_yaml_mapping(path)
    if data is None:
        config = DashboardConfig()
        return config.model_copy(update={"chat": config.chat.with_dir(path)})
    try:
        config = DashboardConfig.model_validate(data).with_defaults()
    except ValidationError as exc:
        raise ConfigError(_describe(path, data, exc)) from None
    config = config.model_copy(update={"chat": config.chat.with_dir(path)})
    unset = [f"{path}: projects[{i}] (id {p.id!r}): token: environment variable {p.token[1:]} is not set"
             for i, p in enumerate(config.projects) if p.token and p.token.startswith("$") and not resolve_secret(p.token)]
    unset += [f"{path}: projects[{i}] (id {p.id!r}): source: environment variable {name} is not set"
              for i, p in enumerate(config.projects) if p.source for name in p.source.missing_vars()]
    if unset:
        raise ConfigError("\n".join(unset))
    return config
