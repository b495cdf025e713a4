"""Stream tokens: short-lived, run-scoped credentials for EventSource (which cannot set headers).

A token is `st_<payload>.<mac>`: the payload names tenant, run and expiry, the mac is an
HMAC-SHA256 under a secret kept in Postgres (shared by every gateway replica, created once).
A token is accepted only as `?token=` on that run's events route, nowhere else. Tokens are
kept out of logs: the access log is off and `RedactTokens` scrubs `token=` from any record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass

import asyncpg
from starlette.requests import Request

SECRET_NAME = "stream-token-hmac"
DEFAULT_TTL_S = 300.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Grant:
    tenant_id: str
    run_id: str
    expires_at: float


class StreamTokens:
    def __init__(self, secret: bytes, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.secret = secret
        self.ttl_s = ttl_s

    @classmethod
    async def load(cls, pool: asyncpg.Pool, ttl_s: float = DEFAULT_TTL_S) -> StreamTokens:
        """The shared secret (made by the first replica that starts)."""
        await pool.execute(
            "INSERT INTO gateway_secrets(name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            SECRET_NAME,
            secrets.token_bytes(32),
        )
        secret = await pool.fetchval("SELECT value FROM gateway_secrets WHERE name=$1", SECRET_NAME)
        return cls(bytes(secret), ttl_s)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, tenant_id: str, run_id: str) -> tuple[str, float]:
        expires_at = time.time() + self.ttl_s
        payload = _b64(
            json.dumps({"t": tenant_id, "r": run_id, "e": round(expires_at, 3)}).encode()
        )
        return f"st_{payload}.{self._mac(payload)}", expires_at

    def verify(self, token: str) -> Grant | None:
        """The grant of a valid, unexpired token; None otherwise."""
        if not token.startswith("st_") or len(token) > 1000:
            return None
        payload, _, mac = token[3:].partition(".")
        if not (payload.isascii() and mac.isascii()):
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            grant = Grant(str(data["t"]), str(data["r"]), float(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if grant.expires_at < time.time():
            return None
        return grant

    def resolve(self, token: str, request: Request) -> Grant | None:
        """A token's grant if it is valid for this request (its run's events route only)."""
        grant = self.verify(token)
        if grant is None or request.url.path != f"/v1/runs/{grant.run_id}/events":
            return None
        return grant


_TOKEN_RE = re.compile(r"(token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """Scrub `token=...` from log records (a URL with a stream token must never be logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = record.getMessage()
                record.args = None
            except Exception:
                return True
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_RE.sub(r"\1[redacted]", record.msg)
        return True


def install_redaction() -> None:
    """Attach the filter to every handler of the root logger (idempotent)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())
