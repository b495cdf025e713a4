"""`make eval`: the research quality figures (see runloom.orchestrator.evaluation)."""
