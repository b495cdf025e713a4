"""The gateway app in the test's own process: its lifespan run, and a client holding a key."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx


@contextlib.asynccontextmanager
async def in_process(settings: Any, key: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """(a client sending `key`, the app's `GatewayState`) while the gateway serves in process."""
    from runloom.gateway.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as client:
            yield client, app.state.runloom
