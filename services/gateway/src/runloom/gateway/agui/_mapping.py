"""RunEvents -> AG-UI events: one pure mapping, fed a run's stored events in seq order.

`Projection.feed(event)` returns the AG-UI events (camelCase wire dicts) one stored event
stands for. Everything it knows comes from the events it was fed (the run's `RunState`, by
`runstate.fold`, and what the AG-UI side holds, a `View`), so replaying the same history
always yields the same frames: a reconnect rebuilds it from the store, nothing is lost.

- first event of the run, or of the part after an interrupt: `RUN_STARTED` (with
  `protocolVersion`), `STATE_SNAPSHOT`
- any change of the run's state (plan, steps, sources, usage, deliverables, rate limit, ...):
  `STATE_DELTA` (RFC 6902)
- `step.started` / `step.completed` / `step.failed`: `STEP_STARTED` / `STEP_FINISHED`; a parallel
  research step is a sub-agent too (`SUBAGENT_STARTED` / `_FINISHED` / `_ERROR`, its step
  carrying `subagentRunId`)
- `tool.called` / `tool.result`: `TOOL_CALL_START`, `_ARGS`, `_END` / `TOOL_CALL_RESULT`
- `message.delta` (report): `TEXT_MESSAGE_START` once, `TEXT_MESSAGE_CONTENT` in index order
- `deliverable.ready`: `ACTIVITY_SNAPSHOT` `runloom:deliverable` with artifact links
- `budget.warning`: `CUSTOM` `runloom:budget_warning`
- `clarification.requested`: `STATE_SNAPSHOT`, `MESSAGES_SNAPSHOT`, `RUN_FINISHED` with
  `outcome: {type: interrupt}`; `clarification.answered`: `RUN_STARTED` of the continuation
- `run.completed` (partial or not): `RUN_FINISHED` `outcome: success`, `result`, `usage`;
  `run.cancelled`: `outcome: cancelled`; `run.failed` / `run.budget_stopped`: `RUN_ERROR` with
  `code` (the failure's reason / `budget_stopped`) and `usage`

Whatever is open when a run part ends (message, steps, sub-agents) is closed first, so every
part is a complete AG-UI run.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from runloom.contracts.events import TERMINAL_TYPES, Event
from runloom.gateway.agui import _patch
from runloom.gateway.agui._view import PROTOCOL_VERSION, AguiEvent, View
from runloom.runtime.runstate import RunState, advance

INTERRUPT_REASON = "input_required"
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string", "minLength": 1, "maxLength": 5000}},
    "required": ["answer"],
}
"""What `resume[].payload` answers a clarification with."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _plain(value: Any) -> Any:
    """A contract struct as camelCase JSON data."""
    data = msgspec.to_builtins(value)
    if isinstance(data, dict):
        return {_camel(k): v for k, v in data.items()}
    return data


def artifact_url(artifact_id: str) -> str:
    return f"/v1/artifacts/{artifact_id}"


SourceCache = dict[str, tuple[Any, dict[str, Any]]]


def _source(sid: str, source: Any, cache: SourceCache | None) -> dict[str, Any]:
    hit = None if cache is None else cache.get(sid)
    if hit is not None and hit[0] is source:
        return hit[1]
    plain: dict[str, Any] = _plain(source)
    if cache is not None:
        cache[sid] = (source, plain)
    return plain


def state_of(rs: RunState, cache: SourceCache | None = None) -> dict[str, Any]:
    """The AG-UI shared state of a run: a camelCase view of `runstate.fold`'s answer.

    `cache` keeps each source's view while its object is unchanged (a follower rebuilds the
    state per event; the sources are most of it)."""
    return {
        "runId": rs.run_id,
        "status": rs.status,
        "question": rs.question,
        "title": rs.title,
        "skill": rs.skill,
        "budgetUsd": rs.budget_usd,
        "spentUsd": rs.spent_usd,
        "plan": [_plain(s) for s in rs.steps],
        "sources": {sid: _source(sid, s, cache) for sid, s in rs.sources.items()},
        "deliverables": {
            kind: {
                **{k: v for k, v in _plain(d).items() if k != "artifacts"},
                "artifacts": [
                    {**_plain(a), "url": artifact_url(a.artifact_id)} for a in d.artifacts
                ],
            }
            for kind, d in rs.deliverables.items()
        },
        "usage": _plain(rs.usage),
        "clarification": None if rs.clarification is None else _plain(rs.clarification),
        "queued": None if rs.queued is None else _plain(rs.queued),
        "rateLimited": None if rs.rate_limited is None else _plain(rs.rate_limited),
        "billingWaiting": rs.billing_waiting,
        "cancelRequested": rs.cancel_requested,
        "partial": rs.partial,
        "missing": list(rs.missing),
        "contentHash": rs.content_hash,
    }


def report_message_id(run_id: str) -> str:
    return f"{run_id}:report"


def question_message_id(run_id: str) -> str:
    return f"{run_id}:question"


def subagent_run_id(run_id: str, step_id: str) -> str:
    return f"{run_id}:{step_id}"


def interrupt_of(event: Event) -> dict[str, Any]:
    """The AG-UI interrupt a `clarification.requested` event stands for (id: the event's id)."""
    interrupt: dict[str, Any] = {
        "id": event.id,
        "reason": INTERRUPT_REASON,
        "message": event.data.get("question", ""),
        "responseSchema": ANSWER_SCHEMA,
    }
    if event.data.get("deadline"):
        interrupt["expiresAt"] = event.data["deadline"]
    return interrupt


class Projection:
    """A run's AG-UI events, one stored event at a time (see the module's table)."""

    def __init__(self, run_id: str, history: list[dict[str, Any]] | None = None) -> None:
        self.run_id = run_id
        self.rs = RunState()
        self.view = View(thread_id=run_id, run_id=run_id)
        for message in history or []:
            # The thread's earlier runs: a MESSAGES_SNAPSHOT is the whole conversation.
            self.view.messages[message["id"]] = message
        self.parts = 0
        """Run parts opened so far (1 + answered clarifications that reopened the run)."""
        self.paused = False
        """The last part ended on an interrupt; only an answer or the end reopens the run."""
        self.report_sent = 0
        self.calls: set[str] = set()
        self.usage: dict[tuple[str | None, str | None], dict[str, int]] = {}
        self.sources: SourceCache = {}
        self.state: dict[str, Any] = state_of(self.rs, self.sources)

    @property
    def thread_id(self) -> str:
        return self.view.thread_id

    def feed(self, ev: Event) -> list[AguiEvent]:
        """The AG-UI events for the next stored event (applied to `self.view` already)."""
        if ev.seq <= self.rs.last_seq or self.rs.terminal is not None:
            return []
        new_usage = ev.type == "usage.recorded" and ev.data.get("usage_id") not in self.rs.usage_ids
        advance(self.rs, [ev])
        if ev.type == "run.created":
            agui = (ev.data.get("options") or {}).get("agui") or {}
            self.view.thread_id = str(agui.get("thread_id") or self.run_id)
        out = _Out(int(ev.time.timestamp() * 1000), self.view)
        if self.paused and ev.type != "clarification.answered" and ev.type not in TERMINAL_TYPES:
            # Paused: no run is open on the AG-UI side. The change shows in the state
            # snapshot of whatever reopens it.
            self.state = state_of(self.rs, self.sources)
            return out.events
        if not self.view.open:
            self._open(out, ev)
        else:
            self._delta(out)
        handler = getattr(self, "_on_" + ev.type.replace(".", "_"), None)
        if handler is not None:
            handler(out, ev)
        if new_usage:
            self._count_usage(ev)
        return out.events

    # -- run parts ---------------------------------------------------------------------------

    def _open(self, out: _Out, ev: Event) -> None:
        self.parts += 1
        self.paused = False
        self.calls = set()
        self.usage = {}
        started: AguiEvent = {
            "type": "RUN_STARTED",
            "threadId": self.thread_id,
            "runId": self.run_id,
            "protocolVersion": PROTOCOL_VERSION,
        }
        if self.parts == 1 and self.rs.question:
            agui = self.rs.options.get("agui") or {}
            started["input"] = {
                "threadId": self.thread_id,
                "runId": str(agui.get("run_id") or self.run_id),  # as the client sent it
                "messages": [self._question()],
            }
        out.add(started)
        self.state = state_of(self.rs, self.sources)
        out.add({"type": "STATE_SNAPSHOT", "snapshot": self.state})
        # Steps still running when the previous part ended are open again in this one.
        for step in self.rs.steps:
            if step.status == "running" and ev.type not in TERMINAL_TYPES:
                self._start_step(out, step.step_id)

    def _question(self) -> dict[str, Any]:
        agui = self.rs.options.get("agui") or {}
        mid = str(agui.get("message_id") or question_message_id(self.run_id))
        return {"id": mid, "role": "user", "content": self.rs.question or ""}

    def _delta(self, out: _Out) -> None:
        new = state_of(self.rs, self.sources)
        ops = _patch.diff(self.state, new)
        self.state = new
        if ops:
            out.add({"type": "STATE_DELTA", "delta": ops})

    def _close_all(self, out: _Out, suspended: bool) -> None:
        for mid in list(self.view.texts):
            out.add({"type": "TEXT_MESSAGE_END", "messageId": mid})
        for cid in list(self.view.tools):
            out.add({"type": "TOOL_CALL_END", "toolCallId": cid})
        for name, sub in list(self.view.steps.items()):
            step: AguiEvent = {"type": "STEP_FINISHED", "stepName": name}
            if sub is not None:
                step["subagentRunId"] = sub
            out.add(step)
        for sub in list(self.view.subagents):
            finished: AguiEvent = {"type": "SUBAGENT_FINISHED", "subagentRunId": sub}
            if suspended:
                finished["outcome"] = {"type": "suspended"}
            out.add(finished)

    def _usage_list(self) -> list[dict[str, Any]]:
        out = []
        for (provider, model), counts in sorted(self.usage.items(), key=lambda kv: str(kv[0])):
            entry: dict[str, Any] = {**counts}
            entry["totalTokens"] = counts["inputTokens"] + counts["outputTokens"]
            if provider:
                entry["provider"] = provider
            if model:
                entry["model"] = model
            out.append(entry)
        return out

    def _count_usage(self, ev: Event) -> None:
        d = ev.data
        if d.get("kind") != "provider":
            return
        u = d.get("usage") or {}
        counts = self.usage.setdefault(
            (d.get("provider"), d.get("model")), {"inputTokens": 0, "outputTokens": 0}
        )
        counts["inputTokens"] += int(u.get("input_tokens") or 0)
        counts["outputTokens"] += int(u.get("output_tokens") or 0)

    def _finish(self, out: _Out, **fields: Any) -> None:
        self._close_all(out, suspended=False)
        usage = self._usage_list()
        out.add(
            {
                "type": "RUN_FINISHED",
                "threadId": self.thread_id,
                "runId": self.run_id,
                **fields,
                **({"usage": usage} if usage else {}),
            }
        )

    def _error(self, out: _Out, message: str, code: str) -> None:
        self._close_all(out, suspended=False)
        usage = self._usage_list()
        out.add(
            {"type": "RUN_ERROR", "message": message, "code": code}
            | ({"usage": usage} if usage else {})
        )

    # -- steps and sub-agents ----------------------------------------------------------------

    def _subagent_of(self, step_id: str) -> str | None:
        step = self.rs.step(step_id)
        if step is None or step.parallel_group is None:
            return None
        return subagent_run_id(self.run_id, step_id)

    def _start_step(self, out: _Out, step_id: str) -> None:
        if step_id in self.view.steps:
            return  # started again (another worker took the run over): still the same step
        sub = self._subagent_of(step_id)
        step = self.rs.step(step_id)
        if sub is not None and sub not in self.view.subagents:
            started: AguiEvent = {
                "type": "SUBAGENT_STARTED",
                "subagentRunId": sub,
                "name": step.kind if step is not None else "research",
            }
            if step is not None and step.title:
                started["description"] = step.title
            out.add(started)
        ev: AguiEvent = {"type": "STEP_STARTED", "stepName": step_id}
        if sub is not None:
            ev["subagentRunId"] = sub
        out.add(ev)

    def _end_step(self, out: _Out, step_id: str, error: tuple[str, str] | None) -> None:
        if step_id not in self.view.steps:
            return
        sub = self.view.steps[step_id]
        finished: AguiEvent = {"type": "STEP_FINISHED", "stepName": step_id}
        if sub is not None:
            finished["subagentRunId"] = sub
        out.add(finished)
        if sub is not None and sub in self.view.subagents:
            if error is None:
                out.add({"type": "SUBAGENT_FINISHED", "subagentRunId": sub})
            else:
                out.add(
                    {
                        "type": "SUBAGENT_ERROR",
                        "subagentRunId": sub,
                        "message": error[0],
                        "code": error[1],
                    }
                )

    def _on_step_started(self, out: _Out, ev: Event) -> None:
        self._start_step(out, ev.data["step_id"])

    def _on_step_completed(self, out: _Out, ev: Event) -> None:
        self._end_step(out, ev.data["step_id"], None)

    def _on_step_failed(self, out: _Out, ev: Event) -> None:
        d = ev.data
        self._end_step(out, d["step_id"], (d.get("error") or "failed", d.get("reason") or "error"))

    # -- text, tools, activities -------------------------------------------------------------

    def _on_message_delta(self, out: _Out, ev: Event) -> None:
        parts = self.rs.report_parts
        mid = report_message_id(self.run_id)
        while self.report_sent in parts:
            text = parts[self.report_sent]
            self.report_sent += 1
            if not text:
                continue
            if mid not in self.view.texts:
                out.add({"type": "TEXT_MESSAGE_START", "messageId": mid, "role": "assistant"})
            out.add({"type": "TEXT_MESSAGE_CONTENT", "messageId": mid, "delta": text})

    def _on_tool_called(self, out: _Out, ev: Event) -> None:
        d = ev.data
        call_id = d["call_id"]
        if call_id in self.calls:
            return
        self.calls.add(call_id)
        out.add({"type": "TOOL_CALL_START", "toolCallId": call_id, "toolCallName": d["tool"]})
        out.add(
            {
                "type": "TOOL_CALL_ARGS",
                "toolCallId": call_id,
                "delta": json.dumps(d.get("arguments") or {}, sort_keys=True),
            }
        )
        out.add({"type": "TOOL_CALL_END", "toolCallId": call_id})

    def _on_tool_result(self, out: _Out, ev: Event) -> None:
        d = ev.data
        call_id = d["call_id"]
        if call_id not in self.calls or f"{call_id}:result" in self.view.messages:
            return  # a call this part did not show, or a result already shown
        content = {
            k: d[k] for k in ("ok", "summary", "result_count", "error") if d.get(k) is not None
        }
        out.add(
            {
                "type": "TOOL_CALL_RESULT",
                "messageId": f"{call_id}:result",
                "toolCallId": call_id,
                "content": json.dumps(content, sort_keys=True),
                "role": "tool",
            }
        )

    def _on_deliverable_ready(self, out: _Out, ev: Event) -> None:
        kind = ev.data["kind"]
        out.add(
            {
                "type": "ACTIVITY_SNAPSHOT",
                "messageId": f"{self.run_id}:deliverable:{kind}",
                "activityType": "runloom:deliverable",
                "content": self.state["deliverables"][kind],
            }
        )

    def _on_budget_warning(self, out: _Out, ev: Event) -> None:
        out.add({"type": "CUSTOM", "name": "runloom:budget_warning", "value": _plain_data(ev)})

    # -- pauses and ends ---------------------------------------------------------------------

    def _on_clarification_requested(self, out: _Out, ev: Event) -> None:
        self._close_all(out, suspended=True)
        out.add({"type": "STATE_SNAPSHOT", "snapshot": self.state})
        out.add({"type": "MESSAGES_SNAPSHOT", "messages": self.view.transcript()})
        usage = self._usage_list()
        out.add(
            {
                "type": "RUN_FINISHED",
                "threadId": self.thread_id,
                "runId": self.run_id,
                "outcome": {"type": "interrupt", "interrupts": [interrupt_of(ev)]},
                **({"usage": usage} if usage else {}),
            }
        )
        self.paused = True

    def _on_run_completed(self, out: _Out, ev: Event) -> None:
        d = ev.data
        result: dict[str, Any] = {
            "status": "completed",
            "partial": bool(d.get("partial")),
            "missing": list(d.get("missing") or []),
            "spentUsd": self.rs.spent_usd,
            "deliverables": {
                kind: [a["url"] for a in dv["artifacts"]]
                for kind, dv in self.state["deliverables"].items()
            },
        }
        if d.get("summary"):
            result["summary"] = d["summary"]
        self._finish(out, result=result, outcome={"type": "success"})

    def _on_run_cancelled(self, out: _Out, ev: Event) -> None:
        self._finish(out, outcome={"type": "cancelled"})

    def _on_run_failed(self, out: _Out, ev: Event) -> None:
        d = ev.data
        self._error(out, d.get("error") or "The run failed.", d.get("reason") or "error")

    def _on_run_budget_stopped(self, out: _Out, ev: Event) -> None:
        d = ev.data
        kept = ", ".join(d.get("kept") or []) or "nothing yet"
        message = (
            f"Stopped by the {d.get('scope', 'run')} budget: spent ${d.get('spent_usd', 0):.4f} "
            f"of ${d.get('budget_usd', 0):.4f}. Kept: {kept}."
        )
        self._error(out, message, "budget_stopped")


def _plain_data(ev: Event) -> dict[str, Any]:
    return {_camel(k): v for k, v in ev.data.items()}


class _Out:
    """The events one stored event maps to, applied to the view as they are made."""

    __slots__ = ("events", "timestamp", "view")

    def __init__(self, timestamp: int | None, view: View) -> None:
        self.events: list[AguiEvent] = []
        self.timestamp = timestamp
        self.view = view

    def add(self, ev: AguiEvent) -> None:
        if self.timestamp is not None:
            ev["timestamp"] = self.timestamp
        self.view.apply(ev)
        self.events.append(ev)


def project(events: list[Event], history: list[dict[str, Any]] | None = None) -> list[AguiEvent]:
    """Every AG-UI event of a run's stored events (after its thread's earlier messages)."""
    if not events:
        return []
    p = Projection(events[0].run_id, history)
    return [a for ev in events for a in p.feed(ev)]


def transcript(events: list[Event], history: list[dict[str, Any]] | None = None) -> list[Any]:
    """The messages a client holds after a run's whole AG-UI stream."""
    if not events:
        return list(history or [])
    p = Projection(events[0].run_id, history)
    for ev in events:
        p.feed(ev)
    return p.view.transcript()
