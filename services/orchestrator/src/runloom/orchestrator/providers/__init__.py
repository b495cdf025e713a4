"""Providers: `offline` (default, deterministic) and `openai` (OpenAI-compatible, streamed)."""

from runloom.orchestrator.providers.base import (
    Passage,
    Provider,
    ProviderError,
    RateLimitHook,
    WriteRequest,
    WriteResult,
)
from runloom.orchestrator.providers.offline import OfflineProvider
from runloom.orchestrator.providers.openai import OpenAIProvider

__all__ = [
    "OfflineProvider",
    "OpenAIProvider",
    "Passage",
    "Provider",
    "ProviderError",
    "RateLimitHook",
    "WriteRequest",
    "WriteResult",
]
