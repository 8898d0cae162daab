"""Dispatcher state that is no store write (started, stopped, a run's phase, the merge queue)
wakes the agent's change streams at once: the board does not wait for their next poll."""

from __future__ import annotations

from test_change_stream import stream


def _next_state(reader) -> dict:
    while True:
        name, data, _ = reader.next()
        if name == "state":
            return data


def test_starting_and_stopping_the_dispatcher_is_a_state_event_without_waiting_for_the_poll(agent_factory):
    agent = agent_factory()
    # No poll within the test's read timeout: only a wake-up can bring the new state in time.
    agent.app.state.change_poll_seconds = 3600
    with stream(agent) as (_, reader):
        assert _next_state(reader)["dispatcher"]["state"] == "stopped"
        assert agent.client.post("/agent/dispatcher/start").status_code == 200
        assert _next_state(reader)["dispatcher"]["state"] == "running"
        assert agent.client.post("/agent/dispatcher/stop").status_code == 200  # writes nothing to the store
        assert _next_state(reader)["dispatcher"]["state"] == "stopped"
