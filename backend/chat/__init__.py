"""Chat with a project (issue 12): the dashboard talks to the Anthropic Messages API about one
project, with the project's README, CLAUDE.md, file tree, recent commits and open tasks as
context, stores each conversation as a JSONL file, and turns a conversation into a plan.

config.py (the `chat:` section of projects.yaml and the price table), context.py (what a
project tells the model; shared by the agent's GET /agent/context and the local connector),
store.py (conversations on disk), files.py (attachments), convo.py (stored messages -> API
messages), service.py (streaming answers, stop), planning.py (chat -> plan with a forced tool).
"""
