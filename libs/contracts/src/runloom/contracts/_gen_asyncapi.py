"""`asyncapi.json`: an AsyncAPI 3.0 document of every subject (private to `codegen`)."""

from __future__ import annotations

import inspect
import json

import msgspec
from runloom.contracts import commands, events, subjects, webhooks
from runloom.contracts._gen_schema import HEADER, Schema, components, envelopes
from runloom.contracts.headers import Header
from runloom.contracts.operations import OPERATIONS
from runloom.contracts.types import RUN_ID

# -- AsyncAPI --------------------------------------------------------------------------------------


def _asyncapi_schema(schema: Schema) -> Schema:
    """A component as an AsyncAPI schema: refs into `components/schemas`."""
    text = json.dumps(schema).replace('"#/$defs/', '"#/components/schemas/')
    out: Schema = json.loads(text)
    return out


def _doc(cls: type[msgspec.Struct]) -> str | None:
    return inspect.cleandoc(cls.__doc__) if cls.__doc__ else None


def _message(name: str, cls: type[msgspec.Struct], headers: str | None = None) -> Schema:
    msg: Schema = {
        "name": name,
        "title": name,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
    }
    doc = _doc(cls)
    if doc:
        msg["summary"] = doc.splitlines()[0]
    if headers:
        msg["headers"] = {"$ref": f"#/components/schemas/{headers}"}
    return msg


RUN_EVENT_HEADERS: Schema = {
    "type": "object",
    "description": "NATS headers of an appended run event.",
    "properties": {
        "Nats-Msg-Id": {
            "type": "string",
            "description": "The event's `id`: a retried publish is dropped as a duplicate.",
        },
        "Nats-Expected-Last-Subject-Sequence": {
            "type": "string",
            "description": "Optimistic concurrency: the stream sequence of the subject's "
            "last event the writer saw; a writer that lost the race re-reads and retries.",
        },
        Header.EVENT_TYPE.value: {
            "type": "string",
            "enum": sorted(events.EVENT_TYPES),
            "description": "The event's `type`: a consumer may skip events without decoding them.",
        },
        "traceparent": {"type": "string", "description": "W3C trace context of the writer."},
    },
    "required": ["Nats-Msg-Id"],
}

TRACE_HEADERS: Schema = {
    "type": "object",
    "description": "NATS headers of a command, job or request.",
    "properties": {
        "Nats-Msg-Id": {"type": "string", "description": "Dedup key (the command or job id)."},
        "traceparent": {"type": "string", "description": "W3C trace context of the sender."},
    },
}


REPLY_HEADERS: Schema = {
    "type": "object",
    "description": "NATS headers of a billing reply.",
    "properties": {
        Header.ERROR.value: {
            "type": "string",
            "description": "Set when the request was not served: `unavailable` (retry later) or "
            "why it is invalid (do not retry); the body is then empty.",
        },
        "traceparent": {"type": "string", "description": "W3C trace context of the replier."},
    },
}


WEBHOOK_HEADERS: Schema = {
    "type": "object",
    "description": "HTTP headers of a webhook delivery (Standard Webhooks).",
    "properties": {
        "webhook-id": {
            "type": "string",
            "description": "The event's id: the same on every attempt; deduplicate on it.",
        },
        "webhook-timestamp": {
            "type": "string",
            "description": "Unix time (seconds) of this attempt; refuse one far from your clock.",
        },
        "webhook-signature": {
            "type": "string",
            "description": "Space-separated `v1,<base64 HMAC-SHA256>` of "
            "`<webhook-id>.<webhook-timestamp>.<body>`, one per valid secret (two while a "
            "rotated secret is in its grace period); one matching signature is enough.",
        },
    },
    "required": ["webhook-id", "webhook-timestamp", "webhook-signature"],
}


def asyncapi() -> Schema:
    """An AsyncAPI 3.0 document of every subject Runloom uses and its messages."""
    _, comps = components()
    env = envelopes()
    c = commands
    schemas: dict[str, Schema] = {n: _asyncapi_schema(s) for n, s in comps.items()}
    schemas["RunEventHeaders"] = RUN_EVENT_HEADERS
    schemas["TraceHeaders"] = TRACE_HEADERS
    schemas["ReplyHeaders"] = REPLY_HEADERS
    schemas["WebhookHeaders"] = WEBHOOK_HEADERS

    messages: dict[str, Schema] = {}
    for cls in env.values():
        messages[cls.__name__] = _message(cls.__name__, cls, "RunEventHeaders")
    for cls in c.COMMAND_TYPES.values():
        reply = cls.__name__.endswith("Reply")
        messages[cls.__name__] = _message(
            cls.__name__, cls, "ReplyHeaders" if reply else "TraceHeaders"
        )
    for cls in webhooks.MANAGEMENT_TYPES.values():
        reply = cls.__name__.endswith("Reply")
        messages[cls.__name__] = _message(
            cls.__name__, cls, "ReplyHeaders" if reply else "TraceHeaders"
        )
    for cls in webhooks.WEBHOOK_BODIES.values():
        messages[cls.__name__] = _message(cls.__name__, cls, "WebhookHeaders")

    def refs(*names: str) -> dict[str, Schema]:
        return {n: {"$ref": f"#/components/messages/{n}"} for n in names}

    def chan(name: str) -> Schema:
        return {"$ref": f"#/channels/{name}"}

    def ops_msgs(channel: str, *names: str) -> list[Schema]:
        return [{"$ref": f"#/channels/{channel}/messages/{n}"} for n in names]

    run_msgs = [cls.__name__ for cls in env.values()]
    channels: dict[str, Schema] = {
        "runEvents": {
            "address": subjects.RUN_EVENTS_ADDRESS,
            "title": "Run events",
            "description": (
                f"Every event of one run, in order (stream `{subjects.RUN_EVENTS_STREAM}`, "
                "file storage). Each has a dense per-run `seq`; the last one is terminal."
            ),
            "parameters": {"runId": {"description": f"The run's id (pattern `{RUN_ID.pattern}`)."}},
            "messages": refs(*run_msgs),
        },
        "startRun": {
            "address": subjects.START_RUN,
            "title": "Start a run",
            "description": f"Work queue (stream `{subjects.COMMANDS_STREAM}`): an orchestrator "
            "replica queues the run in its tenant's queue.",
            "messages": refs("StartRun"),
        },
        "driveRun": {
            "address": subjects.DRIVE_RUN,
            "title": "Work on a queued run",
            "description": f"Work queue (stream `{subjects.COMMANDS_STREAM}`): the dispatcher "
            "hands out queued runs weighted round-robin across tenants; the replica that "
            "takes one owns the run.",
            "messages": refs("DriveRun"),
        },
        "resumeRun": {
            "address": subjects.RESUME_RUN,
            "title": "Resume a paused run",
            "description": f"Work queue (stream `{subjects.COMMANDS_STREAM}`).",
            "messages": refs("ResumeRun"),
        },
        "deliverableJobs": {
            "address": subjects.DELIVERABLE_JOB_ADDRESS,
            "title": "Deliverable jobs",
            "description": f"Work queue (stream `{subjects.JOBS_STREAM}`), one subject per kind.",
            "parameters": {
                "kind": {
                    "enum": list(subjects.DELIVERABLE_KINDS),
                    "description": "The kind of deliverable.",
                }
            },
            "messages": refs("DeliverableJob"),
        },
        "deadLetters": {
            "address": subjects.DEAD_LETTER_ADDRESS,
            "title": "Dead letters",
            "description": f"Messages a consumer could not process, with the reason "
            f"(stream `{subjects.DLQ_STREAM}`, subjects `{subjects.DLQ_SUBJECTS}`).",
            "parameters": {
                "stream": {"description": "The stream the message came from."},
                "consumer": {"description": "The durable consumer that gave up on it."},
            },
            "messages": refs("DeadLetter"),
        },
    }
    operations: dict[str, Schema] = {
        "appendRunEvent": {
            "action": "send",
            "channel": chan("runEvents"),
            "title": "Append a run event",
            "summary": "Every service appends with Nats-Msg-Id and an expected last sequence.",
            "messages": ops_msgs("runEvents", *run_msgs),
        },
        "followRunEvents": {
            "action": "receive",
            "channel": chan("runEvents"),
            "title": "Replay and follow a run's events",
            "summary": "The gateway (SSE), projections and the orchestrator read them.",
            "messages": ops_msgs("runEvents", *run_msgs),
        },
        "sendStartRun": {
            "action": "send",
            "channel": chan("startRun"),
            "summary": "The gateway, once `run.created` is stored.",
            "messages": ops_msgs("startRun", "StartRun"),
        },
        "takeStartRun": {
            "action": "receive",
            "channel": chan("startRun"),
            "summary": "An orchestrator replica (durable pull consumer).",
            "messages": ops_msgs("startRun", "StartRun"),
        },
        "sendDriveRun": {
            "action": "send",
            "channel": chan("driveRun"),
            "summary": "The orchestrators' dispatcher (one at a time, under a database lock).",
            "messages": ops_msgs("driveRun", "DriveRun"),
        },
        "takeDriveRun": {
            "action": "receive",
            "channel": chan("driveRun"),
            "summary": "An orchestrator replica (durable pull consumer `orchestrator-drive`).",
            "messages": ops_msgs("driveRun", "DriveRun"),
        },
        "sendResumeRun": {
            "action": "send",
            "channel": chan("resumeRun"),
            "messages": ops_msgs("resumeRun", "ResumeRun"),
        },
        "takeResumeRun": {
            "action": "receive",
            "channel": chan("resumeRun"),
            "messages": ops_msgs("resumeRun", "ResumeRun"),
        },
        "sendDeliverableJob": {
            "action": "send",
            "channel": chan("deliverableJobs"),
            "summary": "The orchestrator, keyed by job id (idempotent).",
            "messages": ops_msgs("deliverableJobs", "DeliverableJob"),
        },
        "takeDeliverableJob": {
            "action": "receive",
            "channel": chan("deliverableJobs"),
            "summary": "A deliverables replica (durable pull consumer).",
            "messages": ops_msgs("deliverableJobs", "DeliverableJob"),
        },
        "deadLetter": {
            "action": "send",
            "channel": chan("deadLetters"),
            "summary": "A consumer, for a message it can never process.",
            "messages": ops_msgs("deadLetters", "DeadLetter"),
        },
        "inspectDeadLetters": {
            "action": "receive",
            "channel": chan("deadLetters"),
            "messages": ops_msgs("deadLetters", "DeadLetter"),
        },
    }
    answers = {
        "billing": "billing answers on the request's inbox",
        "orchestrator": "the orchestrator (which owns the corpus) answers on the request's inbox",
        "deliverables": "the deliverables service answers on the request's inbox",
        "webhooks": "the webhooks service answers on the request's inbox",
        "gateway": "the gateway answers on the request's inbox",
        "lifecycle": "the lifecycle service (erasure, retention) answers on the request's inbox",
    }
    for op in OPERATIONS:
        name, request, reply = op.name, op.request.__name__, op.reply.__name__
        channels[name] = {
            "address": op.subject,
            "title": f"{op.group.capitalize()}: {op.verb}",
            "description": f"Core NATS request/reply; {answers[op.answered_by]}.",
            "messages": refs(request),
        }
        channels[f"{name}Reply"] = {
            "address": None,
            "title": f"{op.group.capitalize()}: {op.verb} reply",
            "description": "The requester's reply inbox (dynamic).",
            "messages": refs(reply),
        }
        operations[name] = {
            "action": "receive",
            "channel": chan(name),
            "summary": op.summary,
            "messages": ops_msgs(name, request),
            "reply": {
                "channel": chan(f"{name}Reply"),
                "messages": ops_msgs(f"{name}Reply", reply),
            },
        }
    bodies = [cls.__name__ for cls in webhooks.WEBHOOK_BODIES.values()]
    channels["webhookDelivery"] = {
        "address": None,
        "title": "Webhook delivery",
        "description": "HTTP POST to a tenant's endpoint URL (dynamic), signed per Standard "
        "Webhooks; a run's events reach an endpoint in `seq` order, retried until answered 2xx.",
        "servers": [{"$ref": "#/servers/tenantEndpoint"}],
        "messages": refs(*bodies),
    }
    operations["sendWebhook"] = {
        "action": "send",
        "channel": chan("webhookDelivery"),
        "summary": "The webhooks service, for each subscribed event of each run.",
        "messages": ops_msgs("webhookDelivery", *bodies),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Runloom",
            "version": f"{events.SCHEMA_VERSION}.0.0",
            "description": (
                f"{HEADER}\n\nThe subjects of Runloom's NATS JetStream bus: run events, "
                "commands and jobs on work queues, billing, corpus, deliverables and webhooks "
                "request/reply, dead letters; and the webhooks POSTed to tenants' endpoints."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:14222",
                "protocol": "nats",
                "description": "`runloom up` (embedded nats-server with JetStream).",
            },
            "tenantEndpoint": {
                "host": "{host}",
                "protocol": "https",
                "description": "A tenant's webhook endpoint (POST /v1/webhooks).",
                "variables": {"host": {"description": "The endpoint URL's host."}},
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
