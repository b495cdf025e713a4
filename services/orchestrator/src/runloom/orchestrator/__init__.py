"""The orchestrator: run lifecycle, planning, research sub-agents, providers, the corpus.

- `service`: the replica (`python -m runloom.orchestrator`): owns runs from the command queue.
- `run`: one run driven from its events to its terminal event (research_report), in phases:
  `research` (parallel sub-agents), `writing` (verified sections, streamed), `delivery`.
- `planner`, `citations`, `text`: the skill's planning, citation checks, text tools.
- `providers`: `offline` (default, extractive) and `openai` (chat completions, streamed).
- `corpus`: documents and full-text search; `seed_default_corpus` loads the Python docs.
"""

from runloom.orchestrator.config import OrchestratorOptions
from runloom.orchestrator.phase import RunContext, Services
from runloom.orchestrator.providers import Provider
from runloom.orchestrator.service import Orchestrator, commands, make_provider, run

__all__ = [
    "Orchestrator",
    "OrchestratorOptions",
    "Provider",
    "RunContext",
    "Services",
    "commands",
    "make_provider",
    "run",
]
