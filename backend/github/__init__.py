"""GitHub pull requests for `landing: pr`: a small REST client and the repository's name."""

from .client import GitHubClient, GitHubError, read_token
from .remote import repo_from_remote_url, resolve_repo

__all__ = ["GitHubClient", "GitHubError", "read_token", "repo_from_remote_url", "resolve_repo"]
