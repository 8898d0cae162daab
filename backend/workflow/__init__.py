"""A repository's WORKFLOW.md: Symphony's contract for running a tracker's issues unattended.

Modules:

- schema.py: the front matter's typed view (`WorkflowConfig`): tracker, polling, workspace,
  hooks, agent, agent_runtime; what it means for Baton (`source_config()`, `runtime()`).
- loader.py: reading and validating the file (`load_workflow`, `Workflow`, `WorkflowError`).
- template.py: the body as a sandboxed, strict jinja2 template (`render_first`,
  `render_continuation`, `issue_vars`).
- live.py: the file followed while the agent runs (`LiveWorkflow`): a good edit applies, an
  invalid one keeps the last good workflow and says why.
- hooks.py, policy.py, taskside.py, runner.py, cleanup.py, keys.py: running its issues (the
  dispatcher's side, the tracker engine over the agent's store, workspace names and cleanup).
"""
