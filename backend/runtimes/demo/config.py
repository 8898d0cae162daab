"""agent.yaml `demo:`."""

from __future__ import annotations

import sys
from typing import Any

from pydantic import Field, field_validator

from ..section import RuntimeSection


def _this_python() -> str:
    # The interpreter Baton runs on has Baton installed, so it can run the demo agent module.
    return sys.executable or "python3"


class DemoConfig(RuntimeSection):
    command: str = Field(default_factory=_this_python, min_length=1)  # a Python interpreter
    pace: float = Field(default=1.0, ge=0, le=60)  # seconds between the scripted agent's steps

    @field_validator("pace", mode="before")
    @classmethod
    def _int_is_fine(cls, value: Any) -> Any:
        # strict mode refuses 1 for a float field; YAML authors write integers.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value
