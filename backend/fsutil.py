"""Small filesystem helpers: atomic file replacement, leftovers of interrupted writes, disk-full."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


# "No space left", "quota exceeded", "file too large": the write cannot succeed until someone frees space.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def tmp_prefix(path: Path) -> str:
    """The name prefix of atomic_write's temporary files for `path` (they end in `.tmp`)."""
    return f".{path.name}."


def remove_leftover_tmp(folder: Path, name: str) -> list[Path]:
    """Remove temporary files interrupted atomic_writes of `folder/<name>` left behind (a writer
    killed mid-write leaves a full-size one). `name` may be a glob ("*.md"). Call only while no
    writer of those files can be running."""
    removed = []
    try:
        candidates = list(folder.glob(f".{name}.*.tmp"))
    except OSError:
        return removed
    for leftover in candidates:
        try:
            leftover.unlink()
            removed.append(leftover)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove leftover temporary file %s: %s", leftover, exc)
    return removed


def atomic_write(
    path: Path, data: bytes | Iterable[bytes], *, durable: bool = True, mode: int | None = None
) -> None:
    """Replace `path` with `data` so readers see the old file or the new one, never a mix.

    `data` may be a sequence of chunks, written in order (saves joining a large file in memory).

    The temporary file lives in the same folder (os.replace is atomic only within one
    filesystem). With `durable`, the data and then the folder entry are fsynced so the new
    content survives a power cut, not just a process crash. `mode` forces the new file's mode.
    """
    folder = path.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=tmp_prefix(path), suffix=".tmp")
    try:
        # mkstemp makes 0600 files; keep the mode the file had (other local readers, such as
        # a dashboard running as another user, must still be able to read it).
        if mode is not None:
            os.fchmod(fd, mode)
        else:
            try:
                os.fchmod(fd, os.stat(path).st_mode & 0o777)
            except FileNotFoundError:
                os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                handle.writelines(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        try:
            fsync_dir(folder)
        except OSError as exc:
            # The new content is in place; failing the caller now would report a change that
            # happened as one that did not.
            log.warning("fsync of folder %s failed after replacing %s: %s", folder, path.name, exc)


def fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
