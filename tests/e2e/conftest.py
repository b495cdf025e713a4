"""e2e fixtures (shared: keep short, append yours). The platform itself comes from
runloom.devkit.testing (`platform`)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
async def corpus(platform: Any) -> str:
    """The platform tenant holds the default corpus (the Python docs topics); its tenant id."""
    from runloom.corpus.store import seed_default_corpus
    from runloom.runtime import db

    pool = await db.create_pool(platform.settings.effective_database_url, max_size=2)
    try:
        await seed_default_corpus(pool, platform.tenant_id)
    finally:
        await pool.close()
    return str(platform.tenant_id)


@pytest.fixture
async def platform_tenant(platform: Any) -> str:
    """The tenant id behind `platform.api_key`."""
    return str(platform.tenant_id)
