"""The demo runtime: a scripted stand-in agent (no model, no key) that makes real edits and
commits, so a newcomer can watch tasks flow without installing anything (`baton-dashboard --demo`).
Configured only when asked for (`runtime: demo` or a `demo:` section)."""

from .config import DemoConfig
from .runtime import DemoRuntime

__all__ = ["DemoConfig", "DemoRuntime"]
