"""Jira Cloud (REST v3) as a task source."""

from .client import JiraTracker

__all__ = ["JiraTracker"]
