"""Cluster mode on the bus: TLS on client connections and routes, clients verify the nodes,
and nobody without a known nkey gets in (the session's `nats_cluster`, as `runloom up
--cluster` runs it, from the Kubernetes template)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import nats
import pytest
from runloom.devkit import tls as devtls
from runloom.runtime import bus


async def _refused(urls: str, **kwargs: Any) -> str:
    with pytest.raises(Exception) as caught:
        async with asyncio.timeout(15):
            nc = await nats.connect(
                urls.split(","),
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
                **kwargs,
            )
            await nc.close()
    return f"{type(caught.value).__name__}: {caught.value}".lower()


async def test_the_cluster_refuses_anonymous_plain_and_unverified_clients(
    nats_cluster: Any, tmp_path: Any
) -> None:
    trusted = ssl.create_default_context(cafile=nats_cluster.ca)
    # Anonymous over TLS: the server's users do not include it.
    assert "authorization" in await _refused(nats_cluster.urls, tls=trusted)
    # A known key without TLS: the server requires TLS.
    seed = str(nats_cluster.credential("admin"))
    assert await _refused(nats_cluster.urls, nkeys_seed=seed)
    # A known key, but a client that trusts another CA: the node's certificate fails.
    other = devtls.ensure(tmp_path / "other-ca", ["127.0.0.1"])
    untrusted = ssl.create_default_context(cafile=str(other.ca))
    assert "certificate" in await _refused(nats_cluster.urls, nkeys_seed=seed, tls=untrusted)


async def test_each_identity_connects_over_verified_tls_and_routes_are_tls(
    nats_cluster: Any, cluster_js: Any
) -> None:
    for identity in ("admin", "gateway", "orchestrator", "deliverables", "billing"):
        nc = await bus.connect(
            nats_cluster.urls,
            f"tls-{identity}",
            credentials=nats_cluster.credential(identity),
            ca=nats_cluster.ca,
        )
        try:
            assert nc.is_connected
            conns = []
            for node in nats_cluster.nodes:
                conns += node.monitor("/connz?auth=1")["connections"] or []
            (mine,) = [c for c in conns if c.get("name") == f"tls-{identity}"]
            assert mine.get("tls_version"), mine
        finally:
            await nc.close()
    for node in nats_cluster.nodes:
        routes = node.monitor("/routez")
        assert routes["num_routes"] >= 2, routes
        conf = (node.root / "conf" / "cluster-tls.conf").read_text()
        assert "verify: true" in conf
    info = await cluster_js.stream_info("RUN_EVENTS")
    assert info.cluster is not None and len(info.cluster.replicas or []) == 2
