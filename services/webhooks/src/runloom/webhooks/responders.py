"""Endpoint management on `webhooks.*` (request/reply, queue group `webhooks`): the routes.

The gateway asks; only this service reads or writes the tables. A URL is checked here
(`EgressPolicy.admit`: its form, then every address its host resolves to) before anything is
stored; a refusal is a reply saying why (the gateway turns it into a 422 problem).
"""

from __future__ import annotations

from runloom.contracts import operations
from runloom.contracts.webhooks import (
    CreateWebhookReply,
    CreateWebhookRequest,
    DeleteWebhookReply,
    DeleteWebhookRequest,
    EnableWebhookReply,
    EnableWebhookRequest,
    ListDeliveriesReply,
    ListDeliveriesRequest,
    ListWebhooksReply,
    ListWebhooksRequest,
    RedeliverReply,
    RedeliverRequest,
    RotateWebhookSecretReply,
    RotateWebhookSecretRequest,
)
from runloom.runtime.responder import Route
from runloom.webhooks import signing
from runloom.webhooks.egress import EgressPolicy, Refused
from runloom.webhooks.store import Store, delivery_view, endpoint_view


class Management:
    def __init__(
        self,
        store: Store,
        policy: EgressPolicy,
        *,
        grace_s: float = 24 * 3600.0,
    ) -> None:
        self.store = store
        self.policy = policy
        self.grace_s = grace_s

    def routes(self) -> list[Route]:
        return [
            Route(operations.WEBHOOKS_CREATE, self.create),
            Route(operations.WEBHOOKS_LIST, self.list),
            Route(operations.WEBHOOKS_DELETE, self.delete),
            Route(operations.WEBHOOKS_ROTATE, self.rotate),
            Route(operations.WEBHOOKS_ENABLE, self.enable),
            Route(operations.WEBHOOKS_DELIVERIES, self.deliveries),
            Route(operations.WEBHOOKS_REDELIVER, self.redeliver),
            Route(operations.ERASE["webhooks"], self.store.erase),
        ]

    async def create(self, req: CreateWebhookRequest) -> CreateWebhookReply:
        try:
            await self.policy.admit(req.url)
        except Refused as exc:
            return CreateWebhookReply(refused=exc.kind, detail=exc.detail)  # type: ignore[arg-type]
        if req.check_only:
            return CreateWebhookReply()
        stored = await self.store.create_endpoint(
            endpoint_id=req.endpoint_id,
            tenant_id=req.tenant_id,
            url=req.url,
            events=req.events,
            description=req.description,
            run_id=req.run_id,
            secret=signing.new_secret(),
        )
        if stored is None:
            return CreateWebhookReply(
                refused="invalid_url", detail=f"The id {req.endpoint_id!r} is taken."
            )
        row, secret = stored
        return CreateWebhookReply(endpoint=endpoint_view(row), secret=secret)

    async def list(self, req: ListWebhooksRequest) -> ListWebhooksReply:
        rows = await self.store.endpoints(req.tenant_id)
        return ListWebhooksReply(endpoints=[endpoint_view(r) for r in rows])

    async def delete(self, req: DeleteWebhookRequest) -> DeleteWebhookReply:
        return DeleteWebhookReply(
            deleted=await self.store.delete_endpoint(req.tenant_id, req.endpoint_id)
        )

    async def rotate(self, req: RotateWebhookSecretRequest) -> RotateWebhookSecretReply:
        grace = self.grace_s if req.grace_s is None else max(0.0, min(req.grace_s, 7 * 86400.0))
        secret = signing.new_secret()
        row = await self.store.rotate(req.tenant_id, req.endpoint_id, secret, grace)
        if row is None:
            return RotateWebhookSecretReply()
        return RotateWebhookSecretReply(endpoint=endpoint_view(row), secret=secret)

    async def enable(self, req: EnableWebhookRequest) -> EnableWebhookReply:
        row = await self.store.enable(req.tenant_id, req.endpoint_id)
        return EnableWebhookReply(endpoint=endpoint_view(row) if row is not None else None)

    async def deliveries(self, req: ListDeliveriesRequest) -> ListDeliveriesReply:
        rows = await self.store.deliveries(req.tenant_id, req.endpoint_id, req.limit, req.status)
        if rows is None:
            return ListDeliveriesReply(found=False)
        return ListDeliveriesReply(found=True, deliveries=[delivery_view(r) for r in rows])

    async def redeliver(self, req: RedeliverRequest) -> RedeliverReply:
        row = await self.store.redeliver(req.tenant_id, req.endpoint_id, req.delivery_id)
        return RedeliverReply(delivery=delivery_view(row) if row is not None else None)
