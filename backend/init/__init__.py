"""`baton-init`: adopt a repository (a path, or a URL cloned first) as a Baton project in one
command: its agent.yaml, its entry in config/projects.yaml, the guardrails acknowledgement."""
