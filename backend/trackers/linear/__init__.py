"""Linear (GraphQL) as a task source."""

from .client import LinearTracker

__all__ = ["LinearTracker"]
