"""Where a workflow task's worktree lives: `<workspace.root>/<workspace key>` (SPEC 4.2, 9.5).

The key is the issue's identifier with every character outside [A-Za-z0-9._-] replaced by `_`;
when that changed anything, "-" and the first 16 hex digits of the identifier's sha256 follow,
so two identifiers that sanitize alike still get folders of their own. The identifier comes from
the tracker (untrusted text): the path is refused unless it is strictly inside the root.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
HASH_HEX = 16  # 64 bits: SPEC 4.2's minimum entropy for the suffix


def workspace_key(identifier: str) -> str:
    """MT-1 -> MT-1; "MT 1/x" -> MT_1_x-<16 hex of sha256("MT 1/x")>."""
    key = _UNSAFE.sub("_", identifier)
    if key != identifier:
        key += "-" + hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_HEX]
    return key


def workspace_path(root: Path, identifier: str) -> Path:
    """The workspace folder of the issue `identifier` under `root` (absolute). ValueError for a
    key that would not be a folder strictly inside root ("", ".", "..")."""
    key = workspace_key(identifier)
    if key in ("", ".", ".."):
        raise ValueError(f"the issue identifier {identifier!r} cannot name a workspace folder")
    base = Path(root).absolute()
    path = base / key
    # The key has no separator, so this only guards against the names above; kept as the
    # invariant itself (SPEC 9.5) rather than trusting that reasoning.
    if path.parent != base or path == base:
        raise ValueError(f"the workspace of {identifier!r} would not be inside {base}")
    return path
