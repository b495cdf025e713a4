"""Standard Webhooks signatures: secrets `whsec_<base64>`, `v1,<base64 HMAC-SHA256>`.

The signed content is `<webhook-id>.<webhook-timestamp>.<body>` (the body's exact bytes);
`webhook-signature` holds one `v1,` signature per secret that is valid now, separated by
spaces: during a rotation's grace period both the new and the previous secret sign, so a
receiver holding either verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
"""Key length: the specification asks for 24 to 64 random bytes."""


def new_secret() -> str:
    """A fresh signing secret, `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def key_of(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `<msg_id>.<timestamp>.<body>` under `secret`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key_of(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed by every given secret."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
    }
