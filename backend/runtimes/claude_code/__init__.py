"""Claude Code (`claude -p --output-format stream-json --verbose`)."""

from .config import ClaudeCodeConfig
from .runtime import ClaudeCodeRuntime

__all__ = ["ClaudeCodeConfig", "ClaudeCodeRuntime"]
