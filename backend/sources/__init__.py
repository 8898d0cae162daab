"""Issue trackers as task sources: a project's `source:` (config.py), the sync engine that keeps
its tasks and issues in step (engine.py), run per project in the dashboard (runner.py), over the
tasks of an agent (taskside.py)."""
