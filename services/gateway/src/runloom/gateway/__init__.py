"""The gateway: the HTTP API and SSE streams, auth and tenancy; the only public entry point.

- `app`: `create_app(settings)`, the FastAPI application (`python -m runloom.gateway` serves it).
- `routes`: one module per resource; `agui`: the AG-UI protocol adapter; `console`: the web UI.
- `usecases`: what a client does with runs (create, cancel, answer, stream, page), for the
  routes and the AG-UI adapter alike.
- `store`: the run and tenant tables and the only code that writes them (event archive, runs
  and deliverables read models, tenants and API keys); `quotas` holds the quota tables.
- `_streaming`, `_fanout`, `_history`, `_sse`: the run-event stream core (archive, one
  subscription per run fanned out in process, replay from JetStream or the archive).

`create_app` is loaded on first use: the upload parser's forkserver imports a module of this
package and must not load the whole application with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runloom.gateway.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from runloom.gateway.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
