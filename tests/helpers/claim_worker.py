"""A separate process that claims tasks until none are left; prints the ids it got as JSON.

After every successful claim it parses the store file from disk, so a torn or invalid write
by any process would be seen.
"""

import json
import os
import sys
from pathlib import Path

from backend.models import Owner
from backend.store import TaskStore


def main() -> None:
    store_path, name = Path(sys.argv[1]), sys.argv[2]
    store = TaskStore(store_path, lock_timeout=120)
    owner = Owner(pid=os.getpid(), host="race", instance=name)
    claimed = []
    store.snapshot()
    sys.stdin.readline()  # start barrier: every worker is loaded before any claims
    while (task := store.claim(owner, 60)) is not None:
        claimed.append(task.id)
        json.loads(store_path.read_bytes())
    print(json.dumps(claimed))


if __name__ == "__main__":
    main()
