"""What an AG-UI client holds after the events it applied: the fold on the AG-UI side.

The projection keeps one to know what is open (a run, steps, sub-agents, a message), and a
resumed stream builds its prelude from the one at the client's position: `RUN_STARTED`, the
state and messages snapshots, then every open step, sub-agent and message re-opened, so a strict
client (the `@ag-ui/client` verifier) accepts the continuation as a stream of its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from runloom.gateway.agui import _patch

AguiEvent = dict[str, Any]


@dataclass
class View:
    thread_id: str
    run_id: str
    open: bool = False
    """A run is open (RUN_STARTED seen, no RUN_FINISHED / RUN_ERROR yet)."""
    state: Any = None
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The transcript, by message id, in the order messages appeared."""
    subagents: dict[str, AguiEvent] = field(default_factory=dict)
    """Open sub-agents: their SUBAGENT_STARTED events."""
    steps: dict[str, str | None] = field(default_factory=dict)
    """Open steps: name -> the sub-agent they belong to."""
    texts: dict[str, str] = field(default_factory=dict)
    """Open text messages: id -> role."""
    tools: dict[str, str] = field(default_factory=dict)
    """Open tool calls: id -> tool name."""

    def copy(self) -> View:
        return copy.deepcopy(self)

    def apply(self, ev: AguiEvent) -> None:
        kind = ev["type"]
        if kind == "RUN_STARTED":
            self.open = True
            self.thread_id, self.run_id = ev["threadId"], ev["runId"]
            for m in (ev.get("input") or {}).get("messages", []):
                self.messages.setdefault(m["id"], copy.deepcopy(m))
        elif kind in ("RUN_FINISHED", "RUN_ERROR"):
            self.open = False
            self.subagents.clear()
            self.steps.clear()
            self.texts.clear()
            self.tools.clear()
        elif kind == "STATE_SNAPSHOT":
            self.state = copy.deepcopy(ev["snapshot"])
        elif kind == "STATE_DELTA":
            self.state = _patch.apply(self.state, ev["delta"])
        elif kind == "MESSAGES_SNAPSHOT":
            self.messages = {m["id"]: copy.deepcopy(m) for m in ev["messages"]}
        elif kind == "TEXT_MESSAGE_START":
            role = ev.get("role", "assistant")
            self.texts[ev["messageId"]] = role
            self.messages.setdefault(ev["messageId"], {"id": ev["messageId"], "role": role})
        elif kind == "TEXT_MESSAGE_CONTENT":
            message = self.messages[ev["messageId"]]
            message["content"] = message.get("content", "") + ev["delta"]
        elif kind == "TEXT_MESSAGE_END":
            self.texts.pop(ev["messageId"], None)
        elif kind == "TOOL_CALL_START":
            call = {
                "id": ev["toolCallId"],
                "type": "function",
                "function": {"name": ev["toolCallName"], "arguments": ""},
            }
            # A call the client holds already (from a MESSAGES_SNAPSHOT) keeps its arguments.
            self.messages.setdefault(
                ev["toolCallId"], {"id": ev["toolCallId"], "role": "assistant", "toolCalls": [call]}
            )
            self.tools[ev["toolCallId"]] = ev["toolCallName"]
        elif kind == "TOOL_CALL_ARGS":
            self.messages[ev["toolCallId"]]["toolCalls"][0]["function"]["arguments"] += ev["delta"]
        elif kind == "TOOL_CALL_END":
            self.tools.pop(ev["toolCallId"], None)
        elif kind == "TOOL_CALL_RESULT":
            self.messages[ev["messageId"]] = {
                "id": ev["messageId"],
                "role": "tool",
                "toolCallId": ev["toolCallId"],
                "content": ev["content"],
            }
        elif kind == "ACTIVITY_SNAPSHOT":
            self.messages[ev["messageId"]] = {
                "id": ev["messageId"],
                "role": "activity",
                "activityType": ev["activityType"],
                "content": copy.deepcopy(ev["content"]),
            }
        elif kind == "STEP_STARTED":
            self.steps[ev["stepName"]] = ev.get("subagentRunId")
        elif kind == "STEP_FINISHED":
            self.steps.pop(ev["stepName"], None)
        elif kind == "SUBAGENT_STARTED":
            self.subagents[ev["subagentRunId"]] = ev
        elif kind in ("SUBAGENT_FINISHED", "SUBAGENT_ERROR"):
            self.subagents.pop(ev["subagentRunId"], None)

    def transcript(self) -> list[dict[str, Any]]:
        """The messages, for MESSAGES_SNAPSHOT."""
        return [copy.deepcopy(m) for m in self.messages.values()]

    def prelude(self, timestamp: int | None = None) -> list[AguiEvent]:
        """What a new connection needs first to continue from this view (nothing if no run
        is open: the next event it gets is a RUN_STARTED)."""
        if not self.open:
            return []
        stamp = {} if timestamp is None else {"timestamp": timestamp}
        out: list[AguiEvent] = [
            {
                "type": "RUN_STARTED",
                "threadId": self.thread_id,
                "runId": self.run_id,
                "protocolVersion": PROTOCOL_VERSION,
                **stamp,
            }
        ]
        if self.state is not None:
            out.append({"type": "STATE_SNAPSHOT", "snapshot": copy.deepcopy(self.state), **stamp})
        if self.messages:
            out.append({"type": "MESSAGES_SNAPSHOT", "messages": self.transcript(), **stamp})
        out.extend(copy.deepcopy(ev) for ev in self.subagents.values())
        for name, subagent in self.steps.items():
            step: AguiEvent = {"type": "STEP_STARTED", "stepName": name, **stamp}
            if subagent is not None:
                step["subagentRunId"] = subagent
            out.append(step)
        out.extend(
            {"type": "TEXT_MESSAGE_START", "messageId": mid, "role": role, **stamp}
            for mid, role in self.texts.items()
        )
        out.extend(
            {"type": "TOOL_CALL_START", "toolCallId": cid, "toolCallName": name, **stamp}
            for cid, name in self.tools.items()
        )
        return out


PROTOCOL_VERSION = "1.0"
"""The AG-UI protocol version this adapter speaks (sent on every RUN_STARTED)."""
