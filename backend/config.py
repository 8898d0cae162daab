"""agent.yaml -> validated AgentConfig.

Every problem is reported as one line naming the file, the key path and what is wrong, so a
person can fix it without reading code. A missing file means the documented defaults.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .runtimes import RUNTIMES, RuntimeName
from .runtimes.claude_code import ClaudeCodeConfig
from .runtimes.codex import CodexConfig
from .runtimes.demo import DemoConfig
from .runtimes.opencode import OpenCodeConfig
from .executors.dask.config import DaskConfig

__all__ = ["AgentConfig", "ClaudeCodeConfig", "CodexConfig", "ConfigError", "OpenCodeConfig", "load_agent_config"]


PROJECT_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")  # always fullmatch
TOKEN_MIN_CHARS = 16


def project_slug(name: str) -> str:
    """A project_id made from a folder name: lowercase, other runs -> '-', at most 40."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    return slug or "project"


def token_problem(token: str | None, host: str, where: str) -> str | None:
    """Why `token` is not good enough to listen on `host`, or None. Never quotes the token.
    Off loopback a token is the only guard: blank or guessable ones are refused."""
    from .web.security import is_loopback  # config stays importable without the web layer

    if is_loopback(host):
        return None
    if not token:
        return f"--host {host}: refusing to listen on a non-loopback address without a token ({where})"
    if sum(not c.isspace() for c in token) < TOKEN_MIN_CHARS:
        return (f"--host {host}: refusing to listen on a non-loopback address with a token of fewer than "
                f"{TOKEN_MIN_CHARS} non-blank characters ({where})")
    return None


class ConfigError(Exception):
    """A configuration problem; str() is the complete message for the person."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


_REPO_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")  # always fullmatch
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


class GitHubConfig(_Strict):
    """agent.yaml `github:`, for `landing: pr`. The token is read from the environment
    variable `token_env` when a request is made; it is never written anywhere."""

    # owner/name; None: read from the remote's URL when it points at github.com.
    repo: str | None = None
    # https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server.
    api_url: str = "https://api.github.com"
    token_env: str = "GITHUB_TOKEN"
    poll_seconds: float = Field(default=30, gt=0)  # how often open pull requests are read
    timeout: float = Field(default=20, gt=0)  # seconds per request
    draft: bool = False  # open pull requests as drafts

    @field_validator("poll_seconds", "timeout", mode="before")
    @classmethod
    def _int_is_fine(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str | None) -> str | None:
        if value is not None and (not _REPO_RE.fullmatch(value) or ".." in value):
            raise ValueError("must be owner/name, e.g. acme/widgets")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("must be an http(s) URL such as https://api.github.com or https://HOST/api/v3")
        return value.rstrip("/")

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        if not _ENV_NAME_RE.fullmatch(value):
            raise ValueError("must be the name of an environment variable (letters, digits, _), not the token")
        return value


class AgentConfig(_Strict):
    max_parallel_workers: int = Field(default=5, gt=0, le=64)
    poll_interval_seconds: float = Field(default=10, gt=0)
    # The runtime of tasks that do not choose one. A task may choose any configured runtime:
    # this one and every runtime whose section is written here (see configured_runtimes).
    runtime: RuntimeName = "claude_code"
    claude_code: ClaudeCodeConfig = Field(default_factory=ClaudeCodeConfig)
    codex: CodexConfig = Field(default_factory=CodexConfig)
    opencode: OpenCodeConfig = Field(default_factory=OpenCodeConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)  # the scripted demo agent
    port_range_start: int = Field(default=9200, ge=1, le=65535)
    port_range_end: int = Field(default=9299, ge=1, le=65535)
    test_command: str = "pytest"
    test_timeout: int = Field(default=900, gt=0)
    push_to_remote: bool = True
    symlink_files: list[str] = Field(default_factory=lambda: ["data/dev-tasks.json"])
    copy_files: list[str] = Field(default_factory=lambda: ["CLAUDE.md", "PROGRESS.md"])
    max_merge_retries: int = Field(default=3, ge=0)
    # How tested work lands (a task may choose otherwise): auto | review | pr (see models.Landing).
    landing: Literal["auto", "review", "pr"] = "auto"
    github: GitHubConfig = Field(default_factory=GitHubConfig)
    # Merge queue: candidates tested at once, each stacked on those ahead of it (null: as many as
    # max_parallel_workers; lower it for a suite that needs a whole machine), and re-runs of a
    # failing test command before it counts as failed (for flaky suites).
    max_parallel_tests: int | None = Field(default=None, gt=0, le=64)
    test_retries: int = Field(default=0, ge=0, le=10)
    # None: detected at start (the remote's HEAD, else the checkout's branch); see agent/basebranch.py.
    base_branch: str | None = Field(default=None, min_length=1)
    remote: str = Field(default="origin", min_length=1)
    dispatcher_autostart: bool = True
    # Names the project in /agent/health so a dashboard can tell it reached the right agent.
    # None: a slug of the project folder's name.
    project_id: str | None = None
    lease_seconds: int = Field(default=120, gt=0)
    max_attempts: int = Field(default=3, gt=0)
    # Finished tasks older than this leave the live store for data/dev-tasks.archive.jsonl
    # (still served by the API). 0 keeps everything live.
    archive_after_days: float = Field(default=7, ge=0)
    secret_env_vars: list[str] = Field(
        default_factory=lambda: ["BATON_TOKEN", "LINEAR_API_KEY", "JIRA_API_TOKEN", "GITHUB_TOKEN"]
    )
    # API
    token: str | None = None
    allowed_hosts: list[str] = Field(default_factory=list)
    # 100 tasks of 256 KiB, even when a JSON encoder's escaping doubles their size.
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Where agent turns run: here (local), or on Dask workers (dask, with the `dask:` section;
    # see backend/executors/). Claiming, testing and landing stay here either way.
    executor: Literal["local", "dask"] = "local"
    dask: DaskConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `codex:` written with nothing under it means "this runtime, with its defaults".
        if isinstance(data, dict) and any(data.get(name, {}) is None for name in RUNTIMES):
            data = {**data, **{name: {} for name in RUNTIMES if name in data and data[name] is None}}
        return data

    @field_validator("poll_interval_seconds", "archive_after_days", mode="before")
    @classmethod
    def _int_is_fine(cls, value: Any) -> Any:
        # strict mode refuses 10 for a float field; YAML authors write integers.
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    @field_validator("test_command")
    @classmethod
    def _test_command(cls, value: str) -> str:
        # "" means: run no tests before landing. Anything else must split like a shell line.
        if value.strip():
            try:
                shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot be split into arguments: {exc}") from None
        return value

    @field_validator("symlink_files", "copy_files")
    @classmethod
    def _relative_paths(cls, value: list[str]) -> list[str]:
        for item in value:
            path = Path(item)
            if not item or path.is_absolute() or ".." in path.parts or not path.parts:
                raise ValueError(f"{item!r} must be a relative path inside the project")
        return value

    @field_validator("symlink_files")
    @classmethod
    def _no_links_into_batons_state(cls, value: list[str]) -> list[str]:
        # A link is writable from the worktree: a link to data/ (or anything in it but the store,
        # which is linked to a read-only copy) would hand agents the live store, its lock and
        # its generations.
        for item in value:
            parts = Path(item).parts
            if parts[:1] == ("data",) and parts != ("data", "dev-tasks.json"):
                raise ValueError(f"{item!r} would link Baton's own data/ folder into every worktree; "
                                 "only data/dev-tasks.json (given to agents as a read-only copy) may be linked")
        return value

    @field_validator("project_id")
    @classmethod
    def _project_id(cls, value: str | None) -> str | None:
        if value is not None and not PROJECT_ID_RE.fullmatch(value):
            raise ValueError("must be 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit")
        return value

    @field_validator("base_branch", "remote")
    @classmethod
    def _git_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if value.startswith("-") or any(c.isspace() or c in "~^:?*[\\" for c in value) or ".." in value:
            raise ValueError(f"{value!r} is not a valid git name")
        return value

    @property
    def configured_runtimes(self) -> list[str]:
        """The default runtime first, then each runtime whose section was given."""
        return [self.runtime] + [name for name in RUNTIMES if name != self.runtime and name in self.model_fields_set]

    def runtime_section(self, name: str):
        return getattr(self, name)

    @property
    def hidden_env_vars(self) -> set[str]:
        """Variables no coding agent's environment gets: the secrets, Baton's token, the GitHub token."""
        return set(self.secret_env_vars) | {"BATON_TOKEN", self.github.token_env}

    @property
    def test_slots(self) -> int:
        """How many merge-queue candidates may be tested at once."""
        return self.max_parallel_tests or self.max_parallel_workers

    @model_validator(mode="after")
    def _executor(self) -> AgentConfig:
        if self.executor == "dask" and self.dask is None:
            raise ValueError("executor: is dask, which needs a dask: section with at least the scheduler address")
        if self.dask is not None:
            leaked = sorted(set(self.dask.forward_env) & self.hidden_env_vars)
            if leaked:
                raise ValueError(f"dask.forward_env: {', '.join(leaked)} "
                                 f"{'is a secret' if len(leaked) == 1 else 'are secrets'} no agent may see "
                                 "(secret_env_vars, BATON_TOKEN, the GitHub token)")
        return self

    @model_validator(mode="after")
    def _ports(self) -> AgentConfig:
        if self.port_range_start > self.port_range_end:
            raise ValueError(
                f"port_range_start ({self.port_range_start}) is above port_range_end ({self.port_range_end})"
            )
        return self


def resolve_secret(value: str | None) -> str | None:
    """`$NAME` means the environment variable NAME (so secrets need not sit in YAML)."""
    if value and value.startswith("$"):
        return os.environ.get(value[1:]) or None
    return value or None


def _format_error(path: Path, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = err["msg"].removeprefix("Value error, ")
            secret = err["loc"][-1:] == ("token",)
            if (err["type"].endswith("_type") or err["type"] == "model_type") and not secret:
                message += f" (got {type(err['input']).__name__} {err['input']!r})"
        if not key and "port_range_start" in message:
            key = "port_range_start"
        elif key == "dask" and (named := re.match(r"(scheduler|tls): ", message)):
            key, message = f"dask.{named.group(1)}", message[named.end():]
        elif not key and (named := re.match(r"([a-z_]+(?:\.[a-z_]+)?): ", message)):
            key, message = named.group(1), message[named.end():]  # a check across keys names its key first
        problems.append(f"{path}: {key or '(top level)'}: {message}")
    return "\n".join(problems)


def read_yaml_mapping(path: Path) -> dict | None:
    """A YAML file's top-level mapping; None when the file is missing or empty.
    Raises ConfigError naming the file (and line) for anything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    except RecursionError:
        # PyYAML's composer recurses per level: "[[[[…" would otherwise escape as a crash.
        raise ConfigError(f"{path}: nested too deeply to be a configuration file") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: (top level): must be a mapping of keys to values, got {type(data).__name__}")
    return data


def load_agent_config(path: Path) -> AgentConfig:
    """Read and validate agent.yaml. Missing file: defaults. Raises ConfigError."""
    data = read_yaml_mapping(path)
    if data is None:
        return AgentConfig()
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None
