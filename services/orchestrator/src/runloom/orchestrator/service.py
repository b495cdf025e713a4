"""The orchestrator service (one replica)."""

from __future__ import annotations

from runloom.runtime.config import Settings
from runloom.runtime.service import ServiceContext, serve


async def main(ctx: ServiceContext) -> None:
    await ctx.stop.wait()


async def run(settings: Settings) -> None:
    await serve("orchestrator", settings, main)
