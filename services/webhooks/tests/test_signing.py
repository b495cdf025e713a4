"""Signatures verify with the reference library (`standardwebhooks`), for either secret during a
rotation, and for no other secret or body."""

from __future__ import annotations

import time

import pytest
from runloom.webhooks import signing
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

BODY = b'{"type":"run.completed","data":{"partial":false}}'


def test_a_fresh_secret_is_whsec_base64_of_32_bytes_and_unique() -> None:
    a, b = signing.new_secret(), signing.new_secret()
    assert a.startswith("whsec_") and a != b
    assert len(signing.key_of(a)) == 32


def test_the_reference_library_verifies_what_we_sign() -> None:
    secret = signing.new_secret()
    headers = signing.headers([secret], "evt_01", int(time.time()), BODY)
    assert headers["webhook-id"] == "evt_01"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "run.completed",
        "data": {"partial": False},
    }


def test_during_a_rotation_either_secret_verifies_and_no_other() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    headers = signing.headers([new, old], "evt_02", int(time.time()), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(BODY, headers)


def test_a_changed_body_or_id_or_an_old_timestamp_does_not_verify() -> None:
    secret = signing.new_secret()
    headers = signing.headers([secret], "evt_03", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"false", b"true"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "evt_04"})
    stale = signing.headers([secret], "evt_03", int(time.time()) - 3600, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, stale)
