"""Webhooks: run events POSTed to tenants' endpoints, signed per Standard Webhooks, durably.

Modules: `service` (the entry: intake, dispatcher, routes), `intake` (the RUN_EVENTS
consumer), `dispatcher` (claims, signs, sends, records), `store` (the tables), `sender` (one
HTTP attempt), `egress` (where a webhook may go), `signing`, `responders` (management over
`webhooks.*`), `metrics`.
"""

from runloom.webhooks.egress import EgressPolicy, Refused, why_forbidden
from runloom.webhooks.sender import Attempt, Sender
from runloom.webhooks.signing import new_secret, sign
from runloom.webhooks.store import RetryPolicy, Store

__all__ = [
    "Attempt",
    "EgressPolicy",
    "Refused",
    "RetryPolicy",
    "Sender",
    "Store",
    "new_secret",
    "sign",
    "why_forbidden",
]
