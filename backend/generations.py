"""The store's last few good generations: data/store-generations/dev-tasks.json.<revision>.

Right after each write (still under the lock) the new store file is hard-linked here under its
revision: no copy is made, the inode simply outlives the next replace. So the newest generation
is always the last state Baton wrote, whichever process wrote it: a process with an older memory
that restores a damaged store (the dashboard, say) restores that, not its own stale view. Only the
newest KEEP are kept. Revisions never go backwards across generations (the store writes past the
newest one), so pruning by revision always drops the oldest.

A store damaged in place (truncated or edited through its path) also damages its own newest
generation, which shares its inode: restoring then takes a running process's memory or the
generation before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

KEEP = 5
FOLDER = "store-generations"


class Generations:
    def __init__(self, store_path: Path, keep: int = KEEP) -> None:
        self.folder = store_path.parent / FOLDER
        self.name = store_path.name
        self.keep_count = keep

    def keep(self, store_path: Path, revision: int) -> None:
        """Keep the current store file as generation `revision`. Best effort: a generation
        that cannot be kept (disk full, a filesystem without hard links) must not stop a write."""
        target = self.folder / f"{self.name}.{revision}"
        # Named like atomic_write's temporary files, so start-up removes one a kill left behind.
        staging = self.folder / f".{self.name}.{revision}.tmp"
        try:
            self.folder.mkdir(exist_ok=True)
            staging.unlink(missing_ok=True)
            os.link(store_path, staging)
            os.replace(staging, target)
        except OSError as exc:
            log.warning("could not keep store generation %s: %s", target, exc)
            return
        self._prune()

    def newest_first(self) -> list[tuple[int, Path]]:
        prefix = self.name + "."
        found = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return []
        for entry in entries:
            suffix = entry.name[len(prefix):]
            if entry.name.startswith(prefix) and suffix.isdigit() and suffix.isascii():
                found.append((int(suffix), Path(entry.path)))
        return sorted(found, reverse=True)

    def newest_revision(self) -> int:
        found = self.newest_first()
        return found[0][0] if found else 0

    def _prune(self) -> None:
        for _revision, path in self.newest_first()[self.keep_count:]:
            try:
                path.unlink()
            except OSError as exc:
                log.warning("could not prune store generation %s: %s", path, exc)

    def describe(self, store_path: Path | None = None) -> str:
        """Where the last good generations are, for a message to a person. A generation that is
        the (damaged) store file itself, edited in place, is not named."""
        found = [(r, p) for r, p in self.newest_first() if store_path is None or not _same_file(p, store_path)]
        if not found:
            return f"no earlier generation was kept in {self.folder}"
        return (f"the last good generations are in {self.folder} (newest: {found[0][1].name}); to go back to "
                f"one, stop Baton and copy it over {self.folder.parent / self.name}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
