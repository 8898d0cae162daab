from .config import CodexConfig
from .runtime import CodexRuntime

__all__ = ["CodexConfig", "CodexRuntime"]
