"""Running a plan: ready -> executing, with every task created in one store write.

The tasks are created first (`TaskStore.create_many`, idempotency key `plan:<id>:<revision>`,
`plan_id` set, `depends_on` by ref), then the plan records their ids and moves to executing. A
crash between the two leaves a ready plan whose tasks exist: running it again finds them (and the
idempotency key would return them anyway), and the follower records them at the agent's start.
Deleting such a plan records them too, and is refused: the plan is executing (`delete_plan`).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..models import NewTask, Task
from ..store import IdempotencyKeyReusedError, TaskStore
from .model import Plan
from .store import PlanError, PlanStore, check_revision, wrong_state


def idempotency_key(plan: Plan) -> str:
    return f"plan:{plan.id}:{plan.revision}"


def new_tasks(plan: Plan) -> list[NewTask]:
    """The plan's tasks as a create request: refs kept, depends_on by ref."""
    return [NewTask.model_validate(task.model_dump()) for task in plan.tasks]


def created_for(plan: Plan, tasks: Mapping[str, Task]) -> dict[str, str]:
    """{ref: task id} of the live tasks this plan created (empty if it never ran)."""
    return {t.ref: t.id for t in tasks.values() if t.plan_id == plan.id and t.ref is not None}


def run_plan(plans: PlanStore, store: TaskStore, plan_id: str, revision: int | None = None) -> Plan:
    """ready -> executing. Holds the plans' lock throughout, so the follower (or a second click)
    sees either a ready plan without tasks or an executing one with them. `revision`: the one the
    person saw (another: 409 stale_plan)."""
    with plans.locked():
        plan = plans.get(plan_id, for_write=True)  # a plan that cannot be recorded creates no tasks
        if plan.state != "ready":
            raise wrong_state(plan, "run", "ready", ": approve it first" if plan.state == "draft" else "")
        if revision is not None:
            check_revision(plan, revision)
        task_ids = created_for(plan, store.snapshot().tasks)
        if not task_ids:
            plans.prepare("executing")  # nor does one whose folder cannot take it
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


def delete_plan(plans: PlanStore, store: TaskStore, plan_id: str) -> None:
    """Removes a plan's file. A ready plan whose tasks exist (its run was interrupted before it
    was recorded) is recorded first and refused: deleting it would orphan them."""
    with plans.locked():
        plan = plans.get(plan_id, for_write=True)
        if plan.state == "ready" and (task_ids := created_for(plan, store.snapshot().tasks)):
            record_run(plans, plan.id, task_ids)
            raise PlanError(409, "invalid_plan_state",
                            f"plan {plan.id} is executing: a run interrupted before it was recorded created its "
                            f"{len(task_ids)} tasks, now recorded; deleting it would orphan them, so it can be "
                            "deleted once it is done or failed")
        plans.delete(plan_id)
