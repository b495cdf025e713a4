"""AG-UI: any AG-UI front end runs and watches a Runloom run, and resumes it after a drop.

A feature module of the gateway (`router`); the mapping is pure and written once
(`Projection`, `state_of`), the stream resumes from durable ids (`Renderer`).
"""

from runloom.gateway.agui._mapping import Projection, project, state_of
from runloom.gateway.agui._routes import router
from runloom.gateway.agui._stream import Position, Renderer, parse_id
from runloom.gateway.agui._view import PROTOCOL_VERSION, View

__all__ = [
    "PROTOCOL_VERSION",
    "Position",
    "Projection",
    "Renderer",
    "View",
    "parse_id",
    "project",
    "router",
    "state_of",
]
