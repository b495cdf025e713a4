"""Tenants and their API keys. A key is stored only as its sha256; it is shown once, at creation."""

from __future__ import annotations

import hashlib
import secrets

import asyncpg


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return "rlk_" + secrets.token_urlsafe(32)


async def create_tenant(pool: asyncpg.Pool, tenant_id: str, name: str) -> str:
    """Create a tenant (if missing) with a fresh API key; returns the key."""
    key = new_api_key()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO tenants(id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            tenant_id,
            name,
        )
        await conn.execute(
            "INSERT INTO api_keys(key_hash, tenant_id, label) VALUES ($1, $2, $3)",
            hash_key(key),
            tenant_id,
            "created",
        )
    return key


async def tenant_of_key(pool: asyncpg.Pool, key: str) -> str | None:
    """The tenant an API key belongs to (None for an unknown or revoked key)."""
    tenant: str | None = await pool.fetchval(
        "SELECT tenant_id FROM api_keys WHERE key_hash=$1 AND revoked_at IS NULL", hash_key(key)
    )
    return tenant
