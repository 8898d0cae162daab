"""agent.yaml `claude_code:`."""

from __future__ import annotations

from pydantic import Field, field_validator

from ..section import RuntimeSection


class ClaudeCodeConfig(RuntimeSection):
    command: str = Field(default="claude", min_length=1)
    skip_permissions: bool = True
    # Used when skip_permissions is false.
    permission_mode: str = "acceptEdits"
    allowed_tools: list[str] = Field(default_factory=list)
    output_format: str = "stream-json"
    verbose: bool = True
    max_turns: int | None = Field(default=None, gt=0)
    append_system_prompt: str | None = None

    @field_validator("output_format")
    @classmethod
    def _stream_json_only(cls, value: str) -> str:
        if value != "stream-json":
            raise ValueError("must be 'stream-json' (Baton parses the streamed events)")
        return value

    @field_validator("permission_mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        modes = ("acceptEdits", "bypassPermissions", "default", "dontAsk", "plan")
        if value not in modes:
            raise ValueError(f"must be one of {', '.join(modes)}")
        return value
