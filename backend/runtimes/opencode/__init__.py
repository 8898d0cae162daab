from .config import OpenCodeConfig
from .runtime import OpenCodeRuntime

__all__ = ["OpenCodeConfig", "OpenCodeRuntime"]
