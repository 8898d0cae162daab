"""Several real processes race for the same store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from backend.models import NewTask, TaskStatus
from backend.store import TaskStore

HELPERS = Path(__file__).parent / "helpers"
ROOT = Path(__file__).parent.parent


def _python(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(HELPERS / script), *args],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_four_processes_claim_each_of_400_tasks_exactly_once(tmp_path: Path):
    store_path = tmp_path / "data" / "dev-tasks.json"
    store = TaskStore(store_path)
    store.initialize()
    created = {t.id for t in store.create_many(NewTask(title=f"task {i}") for i in range(400))}

    stop = tmp_path / "stop"
    reader = _python("reader.py", str(store_path), str(stop))
    workers = [_python("claim_worker.py", str(store_path), f"w{i}") for i in range(4)]
    for proc in workers:  # release the start barrier
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in workers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    stop.touch()
    reads_out, reads_err = reader.communicate(timeout=60)
    assert reader.returncode == 0, f"a reader saw an invalid store file:\n{reads_err}"
    assert int(reads_out) > 0

    counts = Counter(task_id for claimed in results for task_id in claimed)
    assert set(counts) == created
    assert max(counts.values()) == 1
    assert sum(1 for claimed in results if claimed) >= 2, "expected real contention between processes"

    final = TaskStore(store_path).check()
    assert {t.status for t in final.tasks.values()} == {TaskStatus.in_progress}
    assert {t.owner.instance for t in final.tasks.values()} == {f"w{i}" for i, c in enumerate(results) if c}
