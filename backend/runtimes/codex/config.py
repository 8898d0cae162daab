"""agent.yaml `codex:`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..section import RuntimeSection

_CONFIG_KEY_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
# Keys whose values are credentials: on the command line every local user could read them.
# Codex takes them from the environment instead (`env_key`, `env_http_headers`).
_SECRET_NAME_RE = re.compile(r"(.*_)?(api_key|token|secret|password|http_headers|headers)", re.IGNORECASE)


def _secret_key(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return not last.lower().startswith("env_") and _SECRET_NAME_RE.fullmatch(last) is not None

ApprovalRequest = Literal["command", "file_change"]
ApprovalPolicy = Literal["never", "on-request", "on-failure", "untrusted"]
SandboxMode = Literal["read-only", "workspace-write", "danger-full-access"]
# The sandbox modes as the `type` of Codex's SandboxPolicy object (turn/start `sandboxPolicy`).
POLICY_TYPES: dict[str, str] = {"danger-full-access": "dangerFullAccess", "read-only": "readOnly",
                                "workspace-write": "workspaceWrite"}
# Policy types under which Codex itself sandboxes nothing (externalSandbox: it trusts one around it).
FULL_ACCESS_TYPES = frozenset({"dangerFullAccess", "externalSandbox"})


class Price(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    cached_input: float = Field(ge=0)
    output: float = Field(ge=0)


class CodexConfig(RuntimeSection):
    command: str = Field(default="codex", min_length=1)
    # Sent to `thread/start`. "never": Codex asks for nothing; it runs in the task's worktree
    # with full access, as Claude Code does with skip_permissions (see README, Runtimes).
    # A Codex AskForApproval object (e.g. {"granular": {...}}) is sent as it is.
    approval_policy: ApprovalPolicy | dict[str, Any] = "never"
    sandbox: SandboxMode = "danger-full-access"
    # Sent on every turn/start as `sandboxPolicy` (it overrides `sandbox` for the turn): a mode
    # name, or a Codex SandboxPolicy object ({"type": "workspaceWrite", "networkAccess": true}).
    turn_sandbox_policy: SandboxMode | dict[str, Any] | None = None
    # Approval requests Baton accepts. Any other request fails the task with approval_required:
    # nobody is there to answer it.
    approve: list[ApprovalRequest] = Field(default_factory=list)
    # Passed through untouched as `-c key=value` overrides (any config.toml key, dotted).
    # Never put a secret here (arguments are visible to every local user): name it in a
    # provider's `env_key` and pass it through `env` or Baton's environment.
    config: dict[str, Any] = Field(default_factory=dict)
    # Merged over the documented defaults (runtimes/codex/prices.py); Codex reports no cost.
    prices: dict[str, Price] = Field(default_factory=dict)
    # true: a CODEX_HOME of its own per task (no login from ~/.codex: use an env_key provider).
    isolated_home: bool = False

    @field_validator("config")
    @classmethod
    def _keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        from .overrides import toml_value

        for key, item in value.items():
            if not _CONFIG_KEY_RE.fullmatch(key):
                raise ValueError(f"{key!r} is not a dotted config.toml key")
            if _secret_key(key) or (isinstance(item, dict) and any(_secret_key(str(k)) for k in item)):
                raise ValueError(f"{key!r} would put a credential on Codex's command line, readable by every local "
                                 "user: name an environment variable instead (a provider's env_key or "
                                 "env_http_headers) and pass it through codex.env or Baton's environment")
            try:
                toml_value(item)
            except ValueError as exc:
                raise ValueError(f"{key!r}: {exc}") from None
        return value

    @field_validator("turn_sandbox_policy")
    @classmethod
    def _policy_type(cls, value: Any) -> Any:
        if isinstance(value, dict) and not (isinstance(value.get("type"), str) and value["type"]):
            raise ValueError("a sandbox policy object needs a string `type` (dangerFullAccess, readOnly, "
                             "workspaceWrite or externalSandbox)")
        return value

    def sandbox_policy(self) -> dict[str, Any] | None:
        """turn/start's `sandboxPolicy`, or None to leave the thread's `sandbox` in force."""
        value = self.turn_sandbox_policy
        if value is None:
            return None
        return {"type": POLICY_TYPES[value]} if isinstance(value, str) else dict(value)

    def full_access(self) -> bool:
        """Whether its turns run outside any sandbox of Codex's (the turn policy wins over `sandbox`)."""
        policy = self.sandbox_policy()
        if policy is None:
            return self.sandbox == "danger-full-access"
        return policy["type"] in FULL_ACCESS_TYPES

    @field_validator("prices", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        # strict mode refuses 3 for a float; YAML authors write integers.
        if isinstance(value, dict):
            return {m: {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in p.items()}
                    if isinstance(p, dict) else p for m, p in value.items()}
        return value
