"""Usage and budget routes without billing: a problem saying billing is away and when to retry,
never a 500; bad input is still refused at the edge."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.platform_services("gateway")  # no billing replica running

RUN = "run_01JD6Q0W7XKZ3T9M4N5P6R8S2V"


async def test_usage_and_budget_answer_503_with_retry_after_while_billing_is_away(platform):
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as c:
        for method, path, kwargs in [
            ("GET", "/v1/budget", {}),
            ("PUT", "/v1/budget", {"json": {"amount_usd": 5}}),
            ("GET", "/v1/usage", {}),
            ("GET", "/v1/usage", {"params": {"group_by": "model"}}),
            ("GET", "/v1/usage", {"params": {"run_id": RUN}}),
        ]:
            r = await c.request(method, path, **kwargs)
            where = f"{method} {path} {kwargs}"
            assert r.status_code == 503, f"{where}: {r.status_code} {r.text}"
            assert r.headers["content-type"].startswith("application/problem+json"), where
            assert int(r.headers["retry-after"]) > 0, where
            assert "billing" in r.json()["detail"], where
        # Invalid input is answered without asking billing.
        r = await c.put("/v1/budget", json={"amount_usd": -1})
        assert r.status_code == 422 and "amount_usd" in r.json()["detail"]
        r = await c.get("/v1/usage", params={"group_by": "week"})
        assert r.status_code == 422 and "group_by" in r.json()["detail"]
