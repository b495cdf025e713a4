import httpx


async def test_gateway_answers_health_and_problem_json(platform):
    async with httpx.AsyncClient(base_url=platform.url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        checks = ready.json()["checks"]
        # NATS, PostgreSQL, each consumer of the gateway (its archive) taking its work, and its
        # responder (erase.gateway) answering.
        assert checks == {
            "nats": "ok",
            "postgres": "ok",
            "consumer RUN_EVENTS/run-archive": "ok",
            "responder gateway": "ok",
        }
        missing = await client.get("/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert "/v1/nothing-here" in missing.json()["detail"]
