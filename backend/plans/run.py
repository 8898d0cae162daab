"""Running a plan: ready -> executing, with every task created in one store write.

The tasks are created first (`TaskStore.create_many`, idempotency key `plan:<id>:<revision>`,
`plan_id` set, `depends_on` by ref), then the plan records their ids and moves to executing. A
crash between the two leaves a ready plan whose tasks exist: running it again finds them (and the
idempotency key would return them anyway), and the follower records them at the agent's start.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..models import NewTask, Task
from ..store import IdempotencyKeyReusedError, TaskStore
from .model import Plan
from .store import PlanError, PlanStore, wrong_state


def idempotency_key(plan: Plan) -> str:
    return f"plan:{plan.id}:{plan.revision}"


def new_tasks(plan: Plan) -> list[NewTask]:
    """The plan's tasks as a create request: refs kept, depends_on by ref."""
    return [NewTask.model_validate(task.model_dump()) for task in plan.tasks]


def created_for(plan: Plan, tasks: Mapping[str, Task]) -> dict[str, str]:
    """{ref: task id} of the live tasks this plan created (empty if it never ran)."""
    return {t.ref: t.id for t in tasks.values() if t.plan_id == plan.id and t.ref is not None}


def run_plan(plans: PlanStore, store: TaskStore, plan_id: str) -> Plan:
    """ready -> executing. Holds the plans' lock throughout, so the follower (or a second click)
    sees either a ready plan without tasks or an executing one with them."""
    with plans.locked():
        plan = plans.get(plan_id, for_write=True)  # a plan that cannot be recorded creates no tasks
        if plan.state != "ready":
            raise wrong_state(plan, "run", "ready", ": approve it first" if plan.state == "draft" else "")
        task_ids = created_for(plan, store.snapshot().tasks)
        if not task_ids:
            try:
                created = store.create_many(new_tasks(plan), idempotency_key=idempotency_key(plan), plan_id=plan.id)
            except IdempotencyKeyReusedError as exc:  # only a hand-edited plan file could get here
                raise PlanError(409, "idempotency_key_reused", str(exc)) from None
            task_ids = {t.ref: t.id for t in created if t.ref is not None}
        return record_run(plans, plan.id, task_ids)


def record_run(plans: PlanStore, plan_id: str, task_ids: dict[str, str]) -> Plan:
    def change(plan: Plan) -> dict | None:
        if plan.state != "ready":
            return None
        return {"state": "executing", "task_ids": task_ids, "reason": None}
    return plans.update(plan_id, change)
