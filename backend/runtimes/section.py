"""What every runtime's section of agent.yaml has (`claude_code:`, `codex:`, `opencode:`).

Each runtime's own section (in its folder's config.py) adds its keys to these. Kept free of
imports from the rest of Baton so backend/config.py can import the sections.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RuntimeSection(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    command: str = Field(default="", min_length=1)
    model: str | None = Field(default=None, min_length=1)
    extra_args: list[str] = Field(default_factory=list)  # appended to the CLI's arguments, as they are
    # Added to the CLI's environment. A value "$NAME" is read from Baton's environment when the
    # turn starts (so keys need not sit in YAML); an unset one is left out.
    env: dict[str, str] = Field(default_factory=dict)
    timeout: int = Field(default=600, gt=0)
    stall_timeout: int = Field(default=300, gt=0)

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        # Run from each task's worktree: a relative path would name a different file there
        # than the one the start-up check found.
        if "/" in value and not value.startswith("/"):
            raise ValueError(f"{value!r} must be a command name found on PATH or an absolute path")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @field_validator("extra_args")
    @classmethod
    def _no_empty(cls, value: list[str]) -> list[str]:
        if any("\0" in arg for arg in value):
            raise ValueError("arguments cannot hold NUL characters")
        return value

    def env_additions(self, environ: dict[str, str]) -> dict[str, str]:
        """`env` with "$NAME" values read from `environ`."""
        out = {}
        for name, value in self.env.items():
            if value.startswith("$"):
                if environ.get(value[1:]):
                    out[name] = environ[value[1:]]
            else:
                out[name] = value
        return out
