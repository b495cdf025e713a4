"""`runloom webhooks`: the tenant's webhook endpoints and their recent deliveries.

    runloom webhooks list
    runloom webhooks add URL [--events run.completed,run.failed] [--description TEXT]
    runloom webhooks deliveries WEBHOOK_ID [--status pending|delivered|failed] [--limit N]
    runloom webhooks rotate WEBHOOK_ID [--grace SECONDS]
    runloom webhooks enable WEBHOOK_ID
    runloom webhooks redeliver WEBHOOK_ID DELIVERY_ID
    runloom webhooks delete WEBHOOK_ID

Everything goes through the gateway's HTTP API (`/v1/webhooks`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from runloom.contracts.webhooks import WEBHOOK_EVENT_TYPES

from runloom.cli._gateway import Gateway
from runloom.cli.client import _guard, _table


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="gateway URL (default: RUNLOOM_URL, else local port)")
    common.add_argument("--key", help="API key (default: RUNLOOM_API_KEY, else .runloom/api-key)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    hooks = sub.add_parser("webhooks", help="webhook endpoints and their deliveries")
    cmds = hooks.add_subparsers(dest="webhooks_command", metavar="SUBCOMMAND", required=True)

    p = cmds.add_parser("list", parents=[common], help="the tenant's endpoints")
    p.set_defaults(func=_guard(cmd_list))

    p = cmds.add_parser("add", parents=[common], help="register an endpoint (prints its secret)")
    p.add_argument("endpoint_url", metavar="URL")
    p.add_argument(
        "--events",
        type=_events,
        default=list(WEBHOOK_EVENT_TYPES),
        metavar="LIST",
        help="comma-separated event types (default: all)",
    )
    p.add_argument("--description")
    p.set_defaults(func=_guard(cmd_add))

    p = cmds.add_parser("deliveries", parents=[common], help="an endpoint's recent deliveries")
    p.add_argument("webhook_id")
    p.add_argument("--status", choices=("pending", "delivered", "failed"))
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_guard(cmd_deliveries))

    p = cmds.add_parser("rotate", parents=[common], help="a new secret (the old one still signs)")
    p.add_argument("webhook_id")
    p.add_argument("--grace", type=float, metavar="SECONDS", help="default 24 h")
    p.set_defaults(func=_guard(cmd_rotate))

    p = cmds.add_parser("enable", parents=[common], help="enable a disabled endpoint again")
    p.add_argument("webhook_id")
    p.set_defaults(func=_guard(cmd_enable))

    p = cmds.add_parser("redeliver", parents=[common], help="send one delivery again")
    p.add_argument("webhook_id")
    p.add_argument("delivery_id")
    p.set_defaults(func=_guard(cmd_redeliver))

    p = cmds.add_parser("delete", parents=[common], help="delete an endpoint")
    p.add_argument("webhook_id")
    p.set_defaults(func=_guard(cmd_delete))


def _events(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in WEBHOOK_EVENT_TYPES]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown event type {', '.join(unknown) or '(none)'}; choose from "
            + ",".join(WEBHOOK_EVENT_TYPES)
        )
    return kinds


def _when(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def cmd_list(args: argparse.Namespace, gw: Gateway) -> int:
    hooks = gw.request("GET", "/v1/webhooks")["webhooks"]
    if args.json:
        print(json.dumps(hooks, indent=2))
        return 0
    if not hooks:
        print("No webhooks yet. Add one: runloom webhooks add https://example.com/hook")
        return 0
    rows = [
        (
            h["id"],
            h["status"],
            h["url"],
            ",".join(h["events"]) if len(h["events"]) < len(WEBHOOK_EVENT_TYPES) else "all",
            h.get("run_id") or "",
            h.get("disabled_reason")
            or (f"failing since {_when(h['failing_since'])}" if h.get("failing_since") else ""),
        )
        for h in hooks
    ]
    _table(("WEBHOOK", "STATUS", "URL", "EVENTS", "RUN", "NOTE"), rows)
    return 0


def _show(args: argparse.Namespace, hook: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(hook, indent=2))
        return 0
    print(f"webhook {hook['id']} -> {hook['url']}")
    if hook.get("secret"):
        print(f"secret  {hook['secret']}  (shown once: keep it to verify signatures)")
    if hook.get("previous_secret_expires_at"):
        print(f"the previous secret still signs until {_when(hook['previous_secret_expires_at'])}")
    return 0


def cmd_add(args: argparse.Namespace, gw: Gateway) -> int:
    body = {"url": args.endpoint_url, "events": args.events, "description": args.description}
    return _show(args, gw.request("POST", "/v1/webhooks", json=body))


def cmd_rotate(args: argparse.Namespace, gw: Gateway) -> int:
    body = {"grace_s": args.grace} if args.grace is not None else {}
    path = f"/v1/webhooks/{args.webhook_id}/rotate-secret"
    return _show(args, gw.request("POST", path, json=body))


def cmd_deliveries(args: argparse.Namespace, gw: Gateway) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    got = gw.request("GET", f"/v1/webhooks/{args.webhook_id}/deliveries", params=params)
    deliveries = got["deliveries"]
    if args.json:
        print(json.dumps(deliveries, indent=2))
        return 0
    if not deliveries:
        print("No deliveries yet.")
        return 0
    rows = [
        (
            d["id"],
            d["event_type"],
            f"{d['run_id']}#{d['seq']}",
            d["status"],
            str(d["attempts"]),
            "" if d["response_status"] is None else str(d["response_status"]),
            _when(d["next_attempt_at"]) if d["status"] == "pending" else "",
            (d.get("last_error") or "")[:60],
        )
        for d in deliveries
    ]
    _table(("DELIVERY", "EVENT", "RUN#SEQ", "STATUS", "TRIES", "HTTP", "NEXT", "LAST ERROR"), rows)
    return 0


def cmd_enable(args: argparse.Namespace, gw: Gateway) -> int:
    hook = gw.request("POST", f"/v1/webhooks/{args.webhook_id}/enable")
    print(json.dumps(hook, indent=2) if args.json else f"webhook {hook['id']} is {hook['status']}")
    return 0


def cmd_redeliver(args: argparse.Namespace, gw: Gateway) -> int:
    path = f"/v1/webhooks/{args.webhook_id}/deliveries/{args.delivery_id}/redeliver"
    d = gw.request("POST", path)
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(f"delivery {d['id']} ({d['event_type']}) will be sent again now")
    return 0


def cmd_delete(args: argparse.Namespace, gw: Gateway) -> int:
    gw.request("DELETE", f"/v1/webhooks/{args.webhook_id}")
    print(f"deleted webhook {args.webhook_id}")
    return 0
