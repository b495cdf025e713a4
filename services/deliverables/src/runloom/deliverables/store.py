"""Artifacts, content-addressed in the JetStream object store: an object is named by the
sha256 of its bytes, so the same bytes are stored once however often they are rendered."""

from __future__ import annotations

import hashlib

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore
from runloom.contracts import subjects


def object_name(data: bytes) -> str:
    return "sha256-" + hashlib.sha256(data).hexdigest()


class ArtifactStore:
    def __init__(self, bucket: ObjectStore) -> None:
        self.bucket = bucket

    @classmethod
    async def open(cls, js: JetStreamContext) -> ArtifactStore:
        return cls(await js.object_store(subjects.ARTIFACTS_BUCKET))

    async def put(self, data: bytes) -> str:
        """Store bytes (once); returns the object name."""
        name = object_name(data)
        try:
            info = await self.bucket.get_info(name)
            if info.size == len(data):
                return name
        except NotFoundError:
            pass
        await self.bucket.put(name, data)
        return name

    async def get(self, name: str) -> bytes:
        """The object's bytes (digest verified by the client); NotFoundError if absent."""
        result = await self.bucket.get(name)
        return bytes(result.data or b"")
