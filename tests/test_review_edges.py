"""Races around a person's actions on a task: a message while the dispatcher claims, a message
while a run winds down, an approval while the previous run of the same task is still ending."""

from __future__ import annotations

import threading

from backend import review
from backend.models import NewMessage, TaskStatus
from support import submit_task, wait_for


class _EndedRun:
    """What Dispatcher._work needs of a run whose work is over (its thread only winds down)."""

    def __init__(self, task) -> None:
        self.task, self.port = task, None

    def execute(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


def _in_status(agent, status: TaskStatus) -> str:
    """A task the dispatcher ran (claimed by its owner) that ended in `status`."""
    dispatcher = agent.app.state.dispatcher
    task_id = submit_task(agent, {"title": "Reviewed"})
    agent.store.claim(dispatcher.owner, 60, task_id=task_id)
    fields = {"review_sha": "a" * 40, "review_base": "b" * 40} if status is TaskStatus.review else {"plan": "a plan"}
    agent.store.transition(task_id, status, **fields)
    return task_id


def test_a_message_while_the_dispatcher_claims_does_not_deadlock(agent_factory):
    """post_message asks `winding_down` inside the store's lock; tick() holds the dispatcher's
    lock while it claims (the store's lock). Neither may wait for the other."""
    agent = agent_factory()
    dispatcher, store = agent.app.state.dispatcher, agent.store
    task_id = _in_status(agent, TaskStatus.review)
    held, in_store = threading.Event(), threading.Event()
    done: dict = {}

    def claimer() -> None:  # the lock order of tick(): the dispatcher's lock, then a claim
        with dispatcher._lock:
            held.set()
            in_store.wait(10)
            done["claimed"] = store.claim(dispatcher.owner, 60, task_id="nosuchtask")

    def running(tid: str) -> bool:  # called by post_message with the store's lock held
        in_store.set()
        return dispatcher.winding_down(tid)

    def poster() -> None:
        done["posted"] = review.post_message(store, task_id, NewMessage(text="hello"), running)

    threads = [threading.Thread(target=claimer, daemon=True)]
    threads[0].start()
    held.wait(10)
    threads.append(threading.Thread(target=poster, daemon=True))
    threads[1].start()
    wait_for(lambda: not any(t.is_alive() for t in threads), timeout=20,
             what="the message and the claim to finish (a lock-order deadlock otherwise)")
    assert done["posted"].delivery == "started" and done["claimed"] is None


def test_an_ending_run_leaves_a_newer_run_of_the_same_task_registered(agent_factory):
    """Approve (or a message) can put a task back to pending, and the dispatcher claim it, while
    the run that handed it to review is still in its thread's last lines."""
    agent = agent_factory()
    dispatcher = agent.app.state.dispatcher
    task_id = _in_status(agent, TaskStatus.review)
    ended = _EndedRun(agent.store.get(task_id))
    newer = object()  # the run launched for the approval
    dispatcher._runs[task_id] = newer
    dispatcher._work(ended)
    assert dispatcher._runs.get(task_id) is newer, "its lease would no longer be renewed, nor could it be cancelled"


def _message_while_winding_down(agent, status: TaskStatus) -> str:
    dispatcher = agent.app.state.dispatcher
    task_id = _in_status(agent, status)
    ended = _EndedRun(agent.store.get(task_id))
    dispatcher._threads[task_id] = threading.current_thread()  # its run's thread has not ended yet
    sent = agent.client.post(f"/agent/tasks/{task_id}/messages", json={"text": "one more thing"})
    assert sent.status_code == 202 and sent.json()["delivery"] == "queued", sent.text
    dispatcher._work(ended)  # the thread ends: what it held is let go
    return task_id


def test_a_message_to_a_task_in_review_whose_run_winds_down_starts_a_run_once_it_has(agent_factory):
    agent = agent_factory()
    task_id = _message_while_winding_down(agent, TaskStatus.review)
    task = agent.store.get(task_id)
    assert task.status is TaskStatus.pending, "the queued message would wait in review with nothing to deliver it"
    assert [m.text for m in task.inbox] == ["one more thing"]


def test_a_message_to_a_plan_in_review_whose_run_winds_down_starts_a_run_once_it_has(agent_factory):
    agent = agent_factory()
    task_id = _message_while_winding_down(agent, TaskStatus.plan_review)
    task = agent.store.get(task_id)
    assert task.status is TaskStatus.pending and [m.kind for m in task.inbox] == ["revise"]
