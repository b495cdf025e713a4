"""Typed configuration from the environment. Every variable is listed in the README."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def secret(value: str, file_variable: str, *, optional: bool = False) -> str:
    """`value`, or when the variable `file_variable` (`<NAME>_FILE`) names a file, that file's
    content: a secret mounted as a file (Kubernetes) never sits in the environment. An
    `optional` secret's file may be absent (an optional Secret not made): `value` then."""
    path = os.environ.get(file_variable)
    if not path:
        return value
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError:
        if optional:
            return value
        raise ValueError(f"{file_variable}={path}: no such file") from None
    except OSError as exc:
        raise ValueError(f"{file_variable}={path}: cannot read it ({exc.strerror})") from None


@dataclass(frozen=True)
class Settings:
    """Runtime settings; `Settings.from_env()` reads `RUNLOOM_*` variables."""

    home: Path = field(default_factory=lambda: Path(_env("RUNLOOM_HOME", ".runloom")).resolve())
    nats_url: str = field(default_factory=lambda: _env("RUNLOOM_NATS_URL", ""))
    database_url: str = field(
        default_factory=lambda: secret(
            _env("RUNLOOM_DATABASE_URL", ""), "RUNLOOM_DATABASE_URL_FILE"
        )
    )
    nats_credentials: str = field(default_factory=lambda: _env("RUNLOOM_NATS_CREDENTIALS", ""))
    """Path of this process's own NATS credential, `<identity>.nk` (an nkey seed, mode 600);
    empty: connect without one (a server that requires authentication refuses)."""
    nats_ca: str = field(default_factory=lambda: _env("RUNLOOM_NATS_CA", ""))
    """Path of the CA certificate that signed the NATS servers' certificates: with it, the
    client speaks TLS and verifies the server (cluster mode, Kubernetes)."""
    nats_port: int = field(default_factory=lambda: int(_env("RUNLOOM_NATS_PORT", "14222")))
    postgres_port: int = field(default_factory=lambda: int(_env("RUNLOOM_POSTGRES_PORT", "15432")))
    gateway_host: str = field(default_factory=lambda: _env("RUNLOOM_GATEWAY_HOST", "127.0.0.1"))
    gateway_port: int = field(default_factory=lambda: int(_env("RUNLOOM_GATEWAY_PORT", "8080")))
    nats_sync_interval: str = field(
        default_factory=lambda: _env("RUNLOOM_NATS_SYNC_INTERVAL", "always")
    )
    stream_replicas: int = field(default_factory=lambda: int(_env("RUNLOOM_STREAM_REPLICAS", "1")))
    events_max_age_s: float = field(
        default_factory=lambda: float(_env("RUNLOOM_EVENTS_MAX_AGE_S", str(7 * 24 * 3600)))
    )
    events_max_bytes: int = field(
        default_factory=lambda: int(_env("RUNLOOM_EVENTS_MAX_BYTES", "-1"))
    )
    """RUN_EVENTS' own size limit (-1: none); past it appends are refused, never old events
    dropped (discard new): set it below the disk's size so the stream fills before the disk."""
    duplicate_window_s: float = field(
        default_factory=lambda: float(_env("RUNLOOM_DUPLICATE_WINDOW_S", "120"))
    )
    log_level: str = field(default_factory=lambda: _env("RUNLOOM_LOG_LEVEL", "INFO"))
    log_format: str = field(default_factory=lambda: _env("RUNLOOM_LOG_FORMAT", "json"))
    provider: str = field(default_factory=lambda: _env("RUNLOOM_PROVIDER", "offline"))
    openai_base_url: str = field(
        default_factory=lambda: _env("RUNLOOM_OPENAI_BASE_URL", "https://api.openai.com/v1")
    )
    openai_api_key: str = field(
        default_factory=lambda: secret(
            _env("RUNLOOM_OPENAI_API_KEY", ""), "RUNLOOM_OPENAI_API_KEY_FILE", optional=True
        )
    )
    openai_model: str = field(default_factory=lambda: _env("RUNLOOM_OPENAI_MODEL", "gpt-4o-mini"))
    otel_exporter: str = field(default_factory=lambda: _env("RUNLOOM_OTEL_EXPORTER", ""))
    """none | console | otlp; empty: otlp when an OTEL_EXPORTER_OTLP_*ENDPOINT is set."""
    management_host: str = field(
        default_factory=lambda: _env("RUNLOOM_MANAGEMENT_HOST", "127.0.0.1")
    )
    management_port: int = field(
        default_factory=lambda: int(_env("RUNLOOM_MANAGEMENT_PORT", "9090"))
    )
    replica_id: str = field(default_factory=lambda: _env("RUNLOOM_REPLICA_ID", ""))
    migrate_on_start: bool = field(
        default_factory=lambda: _flag(
            "RUNLOOM_MIGRATE_ON_START", _env("RUNLOOM_MIGRATE_ON_START", "true")
        )
    )

    @classmethod
    def from_env(cls) -> Settings:
        return cls()

    @property
    def effective_nats_url(self) -> str:
        return self.nats_url or f"nats://127.0.0.1:{self.nats_port}"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"postgresql://postgres@127.0.0.1:{self.postgres_port}/runloom"

    def describe(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def env_float(name: str, default: float) -> float:
    """A number from the environment; unset or empty gives `default`; junk fails loudly."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _flag(name: str, raw: str) -> bool:
    """`true`/`1` or `false`/`0`; anything else fails loudly."""
    value = raw.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError(f"{name}={raw!r} is neither true nor false")
