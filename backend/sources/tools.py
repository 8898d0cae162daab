"""ToolGate: the capability tokens that let a task's tracker tools reach its issue alone.

The dashboard holds the tracker's secret; a coding agent gets a token naming one project, one
tracker kind and one issue, which the dashboard's tool gateway (`POST /api/tracker-tools/call`,
dashboard/routes/sources.py) checks at every call:

    bt1.<urlsafe-b64 of {"project","kind","issue"} JSON>.<urlsafe-b64 of HMAC-SHA256>

The HMAC covers "bt1." and the payload, with a random 32-byte key kept in `key_file` (0600, its
folder made 0700, never followed through a symlink). A token does not expire: the gateway also
asks the project's agent whether that issue's task is running, so a token is worth nothing once
its task has ended.

A key file that is not a key (wrong size, not hex) is replaced by a fresh one, with a warning:
that only invalidates the grants of tasks running now (their tools answer 401), which is better
than a dashboard that cannot start. A key file that is a symlink, or cannot be read, is refused
(ToolKeyError): that is not damage but something else.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
from pathlib import Path

from ..models import ToolGrant
from .engine import carries_marker  # the gateway refuses an agent's comment carrying Baton's marker

__all__ = ["CALL_PATH", "ToolGate", "ToolKeyError", "carries_marker"]

log = logging.getLogger("baton.sources.tools")

VERSION = "bt1"
KEY_BYTES = 32
CALL_PATH = "/api/tracker-tools/call"
MAX_TOKEN_CHARS = 500  # ToolGrant.token's limit


class ToolKeyError(Exception):
    """The key file cannot be used (a symlink, unreadable, not writable). The message names the
    file and what to do; it never contains the key."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ToolGate:
    def __init__(self, key_file: Path, base_url: str) -> None:
        self.key_file = Path(key_file)
        self.base_url = base_url.rstrip("/")
        self._key: bytes | None = None
        self._lock = threading.Lock()

    # ----- the two operations ------------------------------------------------------------

    def grant(self, project_id: str, kind: str, issue_id: str) -> ToolGrant:
        payload = json.dumps({"project": project_id, "kind": kind, "issue": issue_id},
                             separators=(",", ":"), ensure_ascii=True).encode()
        body = f"{VERSION}.{_b64(payload)}"
        token = f"{body}.{_b64(self._sign(body))}"
        if len(token) > MAX_TOKEN_CHARS:
            raise ValueError(f"a tool token for issue {issue_id!r} would be longer than {MAX_TOKEN_CHARS} characters")
        return ToolGrant(url=f"{self.base_url}{CALL_PATH}", token=token)

    def verify(self, token: str) -> tuple[str, str, str] | None:
        """(project_id, kind, issue_id) of a token this gate made, else None (never raises for
        a bad token; ToolKeyError only when the key itself cannot be read)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            return None
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            return None
        body = f"{parts[0]}.{parts[1]}"
        # Compared as text: the one encoding this gate makes, nothing that merely decodes alike.
        if not hmac.compare_digest(parts[2].encode(), _b64(self._sign(body)).encode()):
            return None
        try:
            payload = json.loads(_unb64(parts[1]))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(payload, dict) or set(payload) != {"project", "kind", "issue"}:
            return None
        values = (payload["project"], payload["kind"], payload["issue"])
        if not all(isinstance(v, str) and v for v in values):
            return None
        return values

    # ----- the key ---------------------------------------------------------------------------

    def _sign(self, body: str) -> bytes:
        return hmac.new(self.key(), body.encode("ascii"), hashlib.sha256).digest()

    def key(self) -> bytes:
        """The key, read (or created) on first use and kept in memory."""
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = self._load_or_create()
        return self._key

    def _load_or_create(self) -> bytes:
        folder = self.key_file.parent
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ToolKeyError(f"cannot create {folder} for the tracker tools' key: {exc.strerror or exc}") from None
        key = self._read()
        if key is not None:
            return key
        key = secrets.token_bytes(KEY_BYTES)
        if not self._write(key, replace=self.key_file.exists() or self.key_file.is_symlink()):
            # Another process made the key between our read and our write: use that one.
            return self._read() or self._load_or_create()
        return key

    def _read(self) -> bytes | None:
        """The key in the file; None when there is no file or it holds no key (then replaced)."""
        try:
            fd = os.open(self.key_file, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ToolKeyError(f"{self.key_file} is a symbolic link; the tracker tools' key must be a plain "
                                   "file (remove the link and Baton makes a new key)") from None
            raise ToolKeyError(f"cannot read {self.key_file}: {exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ToolKeyError(f"{self.key_file} is not a regular file; remove it and Baton makes a new key")
            if info.st_mode & 0o077:
                os.fchmod(fd, 0o600)  # readable by others: take that back (the key stays valid)
                log.warning("%s was readable by other users; its mode is now 0600", self.key_file)
            raw = os.read(fd, 4 * KEY_BYTES)
        finally:
            os.close(fd)
        try:
            key = bytes.fromhex(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            log.warning("%s does not hold a tracker tools key; replacing it (the tracker tools of tasks "
                        "running now answer 401: their grants were signed with the old key)", self.key_file)
            return None
        return key

    def _write(self, key: bytes, *, replace: bool) -> bool:
        """Written to a new file beside it, then linked (a new key: False when one appeared
        meanwhile) or moved over it (`replace`): never half a key, never through a link."""
        temporary = self.key_file.with_name(f".{self.key_file.name}.{secrets.token_hex(6)}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, (key.hex() + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            if replace:
                os.replace(temporary, self.key_file)
            else:
                try:
                    os.link(temporary, self.key_file)
                except FileExistsError:
                    return False
                finally:
                    temporary.unlink(missing_ok=True)
            return True
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise ToolKeyError(f"cannot write the tracker tools' key to {self.key_file}: {exc.strerror or exc}") from None
