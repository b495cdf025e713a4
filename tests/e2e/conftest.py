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
    from runloom.runtime.tenants import hash_key

    pool = await db.create_pool(platform.settings.effective_database_url, max_size=2)
    try:
        tenant = await pool.fetchval(
            "SELECT tenant_id FROM api_keys WHERE key_hash=$1", hash_key(platform.api_key)
        )
        await seed_default_corpus(pool, tenant)
    finally:
        await pool.close()
    return str(tenant)


@pytest.fixture
async def platform_tenant(platform: Any) -> str:
    """The tenant id behind `platform.api_key`."""
    from runloom.runtime import db
    from runloom.runtime.tenants import hash_key

    pool = await db.create_pool(platform.settings.effective_database_url, max_size=1)
    try:
        tenant = await pool.fetchval(
            "SELECT tenant_id FROM api_keys WHERE key_hash=$1", hash_key(platform.api_key)
        )
    finally:
        await pool.close()
    return str(tenant)
