"""AG-UI against the running platform, driven by the real `@ag-ui/client` (HttpAgent).

The client's own event verifier accepts every stream; what it folds (messages, state) equals
`runstate.fold` of the same run; a cut mid-message, even across a gateway SIGKILL, resumes
with no frame missing or repeated; an interrupt/resume round trip completes the run. Every
recorded stream passes `ag-ui-validate` (no error, no warning) and the `ag-ui-protocol` models.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui.core import AgentCapabilities
from ag_ui.core import Event as AguiEvent
from pydantic import TypeAdapter
from runloom.contracts.events import Event, decode_event
from runloom.devkit.node import NodeTools, install
from runloom.gateway.agui import state_of
from runloom.runtime.runstate import RunState, fold

QUESTION = "How do Python decorators and context managers work?"
EVENT = TypeAdapter(AguiEvent)


@pytest.fixture(scope="session")
def agui_node() -> NodeTools:
    return install(Path(__file__).parent / "agui_node", "agui")


async def client(node: NodeTools, tmp_path: Path, platform: Any, **cfg: Any) -> dict[str, Any]:
    """Run the HttpAgent script once; its outcome (frames, messages, state, errors)."""
    cfg = {"base": platform.url, "key": platform.api_key, **cfg}
    return await asyncio.to_thread(_client, node, tmp_path, cfg)


def _client(node: NodeTools, tmp_path: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    out = tmp_path / f"agui-{cfg['mode']}-{len(list(tmp_path.iterdir()))}.json"
    done = node.run("agui-client.mjs", json.dumps({**cfg, "out": str(out)}), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    assert not result["errors"], result["errors"]
    return result


def validate(raw: list[str], where: Path) -> None:
    """ag-ui-validate on the recorded SSE bytes: no error and no warning; models parse."""
    where.write_text("".join(raw))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ag-ui-validate"), str(where), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(done.stdout)
    bad = [d for d in report["diagnostics"] if d["severity"] in ("error", "warning")]
    assert not bad, bad
    assert report["summary"]["errors"] == report["summary"]["warnings"] == 0
    for frame in raw:
        for line in frame.splitlines():
            if line.startswith("data:"):
                EVENT.validate_json(line[5:])


async def stored(platform: Any, run_id: str) -> tuple[list[Event], RunState]:
    events: list[Event] = []
    after = None
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as http:
        while True:
            params = {"format": "json", "limit": 1000, **({"after": after} if after else {})}
            page = (await http.get(f"/v1/runs/{run_id}/events", params=params)).json()
            events += [decode_event(json.dumps(item["event"])) for item in page["events"]]
            after = page["next_cursor"]
            if page["done"] or not page["events"]:
                return events, fold(events)


def report_of(result: dict[str, Any], run_id: str) -> str:
    (report,) = [m for m in result["messages"] if m["id"] == f"{run_id}:report"]
    return str(report["content"])


async def whole(platform: Any, run_id: str, last_event_id: str | None = None) -> list[str]:
    """GET /v1/agui/runs/{id}: the frames, as sent."""
    headers = platform.headers(**({"Last-Event-ID": last_event_id} if last_event_id else {}))
    async with httpx.AsyncClient(base_url=platform.url, headers=headers, timeout=30) as http:
        resp = await http.get(f"/v1/agui/runs/{run_id}")
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/event-stream")
        return [f + "\n\n" for f in resp.text.split("\n\n") if f.strip()]


def ids(frames: list[str]) -> list[str]:
    return [line[3:].strip() for f in frames for line in f.splitlines() if line.startswith("id:")]


@pytest.mark.platform_env(RUNLOOM_OFFLINE_TOKEN_DELAY_S="0.005")
async def test_a_cut_mid_message_resumes_across_a_gateway_sigkill_without_gap_or_repeat(
    platform: Any, corpus: str, agui_node: NodeTools, tmp_path: Path
) -> None:
    cut = await client(
        agui_node,
        tmp_path,
        platform,
        mode="cut",
        question=QUESTION,
        threadId="thread-cut",
        cutAfterContent=2,
        forwardedProps={"deliverables": []},
    )
    assert cut["cut"] and cut["lastEventId"], cut["frames"][-3:]
    assert cut["frames"][-1]["event"]["type"] == "TEXT_MESSAGE_CONTENT"  # inside the message
    gateway = platform["gateway-1"]
    gateway.kill()
    gateway.start()
    platform.wait_ready(gateway)
    resumed = await client(
        agui_node,
        tmp_path,
        platform,
        mode="resume",
        threadId="thread-cut",
        runId=cut["runId"],
        lastEventId=cut["lastEventId"],
        messages=cut["messages"],
        state=cut["state"],
    )
    types = [f["event"]["type"] for f in resumed["frames"]]
    prelude = types[: types.index("TEXT_MESSAGE_START") + 1]
    assert prelude[:3] == ["RUN_STARTED", "STATE_SNAPSHOT", "MESSAGES_SNAPSHOT"], types
    assert all(f["id"] is None for f in resumed["frames"][: len(prelude)])
    assert types[-1] == "RUN_FINISHED"
    # No frame missing, none repeated: the ids of both connections are the whole run's.
    everything = await whole(platform, cut["runId"])
    got = [f["id"] for f in cut["frames"] + resumed["frames"] if f["id"]]
    assert got == ids(everything)
    # A client that dropped mid-message ends where one that never dropped ends.
    run_id = cut["runId"]
    _, rs = await stored(platform, run_id)
    assert resumed["state"] == state_of(rs)
    assert report_of(resumed, run_id) == rs.report_text
    validate(resumed["raw"], tmp_path / "resumed.sse")
    # The same, by query parameter; a malformed cursor gets a clear answer.
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as http:
        q = await http.get(f"/v1/agui/runs/{run_id}", params={"last_event_id": cut["lastEventId"]})
        after = ids(everything)[ids(everything).index(cut["lastEventId"]) + 1 :]
        assert ids(q.text.split("\n\n")) == after
        bad = await http.get(f"/v1/agui/runs/{run_id}", headers={"Last-Event-ID": "nope"})
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]


@pytest.mark.platform_env(RUNLOOM_SSE_HEARTBEAT_S="0.5")
async def test_http_agent_runs_through_an_interrupt_and_folds_what_runstate_fold_says(
    platform: Any, corpus: str, agui_node: NodeTools, tmp_path: Path
) -> None:
    result = await client(
        agui_node,
        tmp_path,
        platform,
        mode="interrupt",
        question="Can you help me?",
        answer="decorators and context managers",
        threadId="thread-hitl",
        forwardedProps={"deliverables": ["report"], "budget_usd": 5},
    )
    # First AG-UI run: it asks (snapshots, then RUN_FINISHED with the interrupt).
    (asked,) = result["interrupts"]
    assert asked["reason"] == "input_required" and asked["message"]
    first = [f["event"] for f in result["frames"][: result["firstPart"]]]
    assert first[0]["type"] == "RUN_STARTED" and first[0]["protocolVersion"] == "1.0"
    assert [e["type"] for e in first][-3:] == [
        "STATE_SNAPSHOT",
        "MESSAGES_SNAPSHOT",
        "RUN_FINISHED",
    ]
    assert first[-1]["outcome"]["interrupts"] == [asked]
    # Second AG-UI run (the resume): the same Runloom run goes on to a cited report.
    rest = [f["event"] for f in result["frames"][result["firstPart"] :]]
    types = [e["type"] for e in rest]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED", types
    assert {"STEP_STARTED", "SUBAGENT_STARTED", "TEXT_MESSAGE_CONTENT", "STATE_DELTA"} <= set(types)
    assert "ACTIVITY_SNAPSHOT" in types and "TOOL_CALL_RESULT" in types
    assert rest[-1]["outcome"] == {"type": "success"}
    run_id = result["runId"]
    assert run_id.startswith("run_") and rest[-1]["runId"] == run_id
    assert result["threadId"] == "thread-hitl" and result["pendingInterrupts"] == []
    # What the client folded is what runstate.fold says about the stored run.
    _, rs = await stored(platform, run_id)
    assert rs.status == "completed"
    assert result["state"] == state_of(rs)
    assert report_of(result, run_id) == rs.report_text and rs.report_text.startswith("# ")
    links = result["state"]["deliverables"]["report"]["artifacts"]
    assert links and links[0]["url"].startswith("/v1/artifacts/")
    validate(result["raw"][: result["firstRaw"]], tmp_path / "part1.sse")
    validate(result["raw"][result["firstRaw"] :], tmp_path / "part2.sse")
    # The whole run again, from the durable ids: the same frames, one valid stream.
    again = await whole(platform, run_id)
    assert ids(again) == [f["id"] for f in result["frames"] if f["id"]]
    validate(again, tmp_path / "all.sse")
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as http:
        caps = (await http.get("/v1/agui/capabilities")).json()
        assert AgentCapabilities.model_validate(caps).transport.resumable is True  # type: ignore[union-attr]
        stranger = await http.get(f"/v1/agui/runs/{run_id}", headers={"Authorization": "Bearer x"})
        assert stranger.status_code == 401
    # The spec's interrupt rules, on a fresh thread that is waiting for an answer.
    async with httpx.AsyncClient(base_url=platform.url, headers=platform.headers()) as http:

        async def post(**body: Any) -> list[dict[str, Any]]:
            base = {"threadId": "thread-rules", "runId": "r1", "messages": [], "state": {}}
            resp = await http.post("/v1/agui", json={**base, **body}, timeout=60)
            assert resp.status_code == 200, resp.text
            return [
                json.loads(line[5:]) for line in resp.text.splitlines() if line.startswith("data:")
            ]

        nothing = await post(messages=[{"id": "a", "role": "assistant", "content": "hi"}])
        assert (nothing[-1]["type"], nothing[-1]["code"]) == ("RUN_ERROR", "invalid_input")
        assert (await http.post("/v1/agui", json={"threadId": "t"})).status_code == 422
        assert (
            await http.post("/v1/agui", json={}, headers={"Authorization": ""})
        ).status_code == 401
        user = {"id": "u1", "role": "user", "content": "Can you help me?"}
        paused = await post(messages=[user])
        interrupt = paused[-1]["outcome"]["interrupts"][0]
        assert await post(messages=[user]) == paused  # the same input again: the same answer
        # Watching the paused run: its first part, then heartbeats (SSE comments) while it waits.
        async with http.stream("GET", f"/v1/agui/runs/{paused[0]['runId']}", timeout=30) as resp:
            seen = ""
            async for chunk in resp.aiter_text():
                seen += chunk
                if "\n: keep-alive\n" in seen:
                    break
        assert '"outcome":{"type":"interrupt"' in seen
        blocked = await post(runId="r2", messages=[user, {**user, "id": "u2"}])
        assert (blocked[-1]["type"], blocked[-1]["code"]) == ("RUN_ERROR", "interrupt_pending")
        unknown = [{"interruptId": "nope", "status": "resolved", "payload": {"answer": "x"}}]
        assert (await post(runId="r3", resume=unknown))[-1]["code"] == "unknown_interrupt"
        empty = [{"interruptId": interrupt["id"], "status": "resolved", "payload": {}}]
        assert (await post(runId="r4", resume=empty))[-1]["code"] == "invalid_resume_payload"
        cancel = [{"interruptId": interrupt["id"], "status": "cancelled"}]
        ended = await post(runId="r5", resume=cancel)
        assert ended[-1]["type"] == "RUN_FINISHED", ended[-3:]
        assert ended[-1]["outcome"] == {"type": "cancelled"}
        again = await post(runId="r6", resume=cancel)
        assert again[-1]["code"] == "interrupt_resolved"
