"""Task dependencies: resolving a create request's references, refusing cycles, and deciding
which waiting tasks are blocked.

Pure functions over tasks; the store calls them under its lock, so a dependency's status change
and its dependents' `blocked` <-> `pending` moves are one write.

- A task with `depends_on` is claimable only when every dependency is completed (`ready`).
- A pending task one of whose dependencies failed, was cancelled or is itself blocked becomes
  `blocked`, with the reason in words; when none is any more (a rerun, say) it is pending again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .models import NewTask, Task, TaskStatus

Lookup = Callable[[str], Task | None]  # a task by id, live or archived; None: no such task

_WAITING = (TaskStatus.pending, TaskStatus.blocked)
_REASON_MAX = 300


class DependencyError(ValueError):
    """A create request whose dependencies cannot be: unknown, repeated refs, or a cycle."""


def resolve(items: Sequence[NewTask], new_ids: Sequence[str], lookup: Lookup) -> list[list[str]]:
    """Each item's `depends_on` as task ids: a ref of another item in the request names that
    item's new id (refs win over ids), anything else must be an existing task's id. Raises
    DependencyError on an unknown name, a ref used twice or a cycle."""
    refs: dict[str, int] = {}
    for index, item in enumerate(items):
        if item.ref is not None:
            if item.ref in refs:
                raise DependencyError(f"tasks[{index}].ref {item.ref!r} is also the ref of tasks[{refs[item.ref]}]; "
                                      "refs must be unique within a request")
            refs[item.ref] = index
    resolved: list[list[str]] = []
    edges: list[list[int]] = []  # item index -> indexes of the items it depends on
    for index, item in enumerate(items):
        ids: list[str] = []
        local: list[int] = []
        for name in item.depends_on:
            if name in refs:
                target = refs[name]
                if target == index:
                    raise DependencyError(f"tasks[{index}] ({_short(item.title)}) depends on itself")
                task_id = new_ids[target]
                local.append(target)
            elif lookup(name) is not None:
                task_id = name
            else:
                raise DependencyError(f"tasks[{index}] ({_short(item.title)}): depends_on {name!r} is neither "
                                      "an existing task's id nor the ref of another task in this request")
            if task_id not in ids:
                ids.append(task_id)
        resolved.append(ids)
        edges.append(local)
    cycle = find_cycle(edges)
    if cycle:
        names = " -> ".join(items[i].ref or f"tasks[{i}]" for i in cycle)
        raise DependencyError(f"depends_on makes a cycle: {names}")
    return resolved


def find_cycle(edges: list[list[int]]) -> list[int]:
    """A cycle in the graph (as a closed path of indexes), or []; iterative depth-first search."""
    state = [0] * len(edges)  # 0 unseen, 1 on the current path, 2 done
    for start in range(len(edges)):
        if state[start]:
            continue
        path: list[int] = []
        stack: list[tuple[int, int]] = [(start, 0)]
        while stack:
            node, next_edge = stack.pop()
            if next_edge == 0:
                state[node] = 1
                path.append(node)
            if next_edge < len(edges[node]):
                stack.append((node, next_edge + 1))
                child = edges[node][next_edge]
                if state[child] == 1:
                    return path[path.index(child):] + [child]
                if state[child] == 0:
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return []


def ready(task: Task, lookup: Lookup) -> bool:
    """Every dependency is completed (a task without any is always ready)."""
    for dep_id in task.depends_on:
        dep = lookup(dep_id)
        if dep is None or dep.status is not TaskStatus.completed:
            return False
    return True


def settle(tasks: Mapping[str, Task], lookup_archived: Lookup) -> list[tuple[Task, dict[str, Any]]]:
    """Which waiting tasks must move: [(task, fields)] where fields hold the new `status` and
    `blocked_reason`. `tasks` is the live store as it will be written; a dependency not in it is
    looked up in the archive (finished tasks only)."""
    waiting = {tid: t for tid, t in tasks.items() if t.status in _WAITING and t.depends_on}
    if not waiting:
        return []
    decided: dict[str, str | None] = {}  # waiting task id -> its blocked reason (None: not blocked)

    def status_reason(dep_id: str) -> str | None:
        if dep_id in waiting:
            return decided.get(dep_id) and f"{_named(waiting[dep_id])} is blocked"
        dep = tasks.get(dep_id) or lookup_archived(dep_id)
        if dep is None:
            return f"{dep_id} no longer exists"
        if dep.status is TaskStatus.failed:
            why = dep.error_message or dep.error_reason or "no reason given"
            return f"{_named(dep)} failed: {why}"
        if dep.status is TaskStatus.cancelled:
            return f"{_named(dep)} was cancelled"
        return None

    for task_id in _dependencies_first(waiting):
        reasons = [r for r in (status_reason(d) for d in waiting[task_id].depends_on) if r]
        decided[task_id] = _clip("; ".join(reasons)) if reasons else None

    moves: list[tuple[Task, dict[str, Any]]] = []
    for task_id, reason in decided.items():
        task = waiting[task_id]
        target = TaskStatus.blocked if reason else TaskStatus.pending
        if task.status is not target or task.blocked_reason != reason:
            moves.append((task, {"status": target, "blocked_reason": reason}))
    return moves


def _dependencies_first(waiting: Mapping[str, Task]) -> list[str]:
    """The waiting tasks, each after the waiting tasks it depends on (Kahn's algorithm). The
    store refuses cycles at create; should one exist anyway, its tasks come last, in any order."""
    pending_deps = {tid: {d for d in t.depends_on if d in waiting} for tid, t in waiting.items()}
    dependents: dict[str, list[str]] = {tid: [] for tid in waiting}
    for tid, deps in pending_deps.items():
        for dep in deps:
            dependents[dep].append(tid)
    order = [tid for tid, deps in pending_deps.items() if not deps]
    for tid in order:  # grows while it is walked
        for child in dependents[tid]:
            pending_deps[child].discard(tid)
            if not pending_deps[child]:
                order.append(child)
    if len(order) < len(waiting):
        seen = set(order)
        order += [tid for tid in waiting if tid not in seen]
    return order


def _named(task: Task) -> str:
    # The title first: a card clamps the reason, and the title is what a person recognises.
    return f"{_short(task.title)} ({task.id})"


def _short(title: str, limit: int = 60) -> str:
    return f"“{title if len(title) <= limit else title[: limit - 1] + '…'}”"


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"
