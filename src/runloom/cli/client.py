"""Gateway client commands: ask, watch, runs, answer, docs add, usage.

Everything goes through the gateway's public HTTP/SSE API (no bus, no database), and a run's
state is always the shared fold of its events (`runloom.runtime.runstate.fold`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from runloom.contracts.kinds import DELIVERABLE_KINDS
from runloom.runtime.runstate import RunState

from runloom.cli._follow import Follower
from runloom.cli._gateway import CliError, Gateway, resolve_config
from runloom.cli._view import JsonView, TerminalView, money, status_text

DOC_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf"}
EXIT = {"completed": 0, "failed": 1, "cancelled": 130, "budget_stopped": 2}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="gateway URL (default: RUNLOOM_URL, else local port)")
    common.add_argument("--key", help="API key (default: RUNLOOM_API_KEY, else .runloom/api-key)")

    p = sub.add_parser(
        "ask", parents=[common], help="start a run and watch it live; Ctrl-C cancels it"
    )
    p.add_argument("question", help="what to research")
    p.add_argument("--budget", type=_usd, metavar="USD", help="stop the run before it spends more")
    p.add_argument(
        "--deliverables",
        type=_kinds,
        default=list(DELIVERABLE_KINDS),
        metavar="LIST",
        help="comma-separated: report,website,slides (default: all)",
    )
    p.add_argument("--skill", help="skill to run (default: the gateway's, research_report)")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="save artifacts here (default ./runloom-out/RUN_ID)"
    )
    p.add_argument("--json", action="store_true", help="print the run's events as JSON lines")
    p.set_defaults(func=_guard(cmd_ask))

    p = sub.add_parser("watch", parents=[common], help="follow a run's events to its end")
    p.add_argument("run_id")
    p.add_argument("--out", type=Path, metavar="DIR", help="save its artifacts here at the end")
    p.add_argument("--json", action="store_true", help="print the run's events as JSON lines")
    p.set_defaults(func=_guard(cmd_watch))

    p = sub.add_parser("runs", parents=[common], help="list recent runs")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_runs))

    p = sub.add_parser("answer", parents=[common], help="answer a run's clarification question")
    p.add_argument("run_id")
    p.add_argument("answer")
    p.set_defaults(func=_guard(cmd_answer))

    p = sub.add_parser("cancel", parents=[common], help="ask a run to stop")
    p.add_argument("run_id")
    p.set_defaults(func=_guard(cmd_cancel))

    docs = sub.add_parser("docs", help="the document corpus runs research")
    docs_sub = docs.add_subparsers(dest="docs_command", metavar="SUBCOMMAND", required=True)
    p = docs_sub.add_parser("add", parents=[common], help="upload files or folders")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.set_defaults(func=_guard(cmd_docs_add))

    p = sub.add_parser("usage", parents=[common], help="spend and tokens of your tenant")
    p.add_argument("--run", dest="run_id", help="one run's usage")
    p.add_argument("--from", dest="from_", metavar="DATE", help="start (YYYY-MM-DD)")
    p.add_argument("--to", metavar="DATE", help="end (YYYY-MM-DD)")
    p.add_argument("--group-by", choices=("day", "run", "model"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_usage))


# -- argument types ------------------------------------------------------------------------------


def _usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in USD, e.g. 0.50") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the budget must be more than 0 USD")
    return value


def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in DELIVERABLE_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown deliverable {', '.join(unknown)}; choose from {','.join(DELIVERABLE_KINDS)}"
        )
    return kinds


def _guard(
    func: Callable[[argparse.Namespace, Gateway], int],
) -> Callable[[argparse.Namespace], int]:
    """Run a command with a gateway client; a CliError is printed as a message, not a trace."""

    def run(args: argparse.Namespace) -> int:
        for stream in (sys.stdout, sys.stderr):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(errors="replace")
        gateway = Gateway(resolve_config(args.url, args.key))
        try:
            return func(args, gateway)
        except CliError as exc:
            sys.stdout.flush()
            print(f"runloom: {exc}", file=sys.stderr)
            return exc.code
        finally:
            gateway.close()

    return run


# -- ask / watch ---------------------------------------------------------------------------------


def cmd_ask(args: argparse.Namespace, gw: Gateway) -> int:
    body: dict[str, Any] = {
        "question": args.question,
        "options": {"deliverables": args.deliverables},
    }
    if args.budget is not None:
        body["budget_usd"] = args.budget
    if args.skill:
        body["skill"] = args.skill
    # One key per invocation: a retried request answers the same run, never a second one.
    run = gw.request("POST", "/v1/runs", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    run_id = run["id"]
    view = JsonView() if args.json else TerminalView()
    view.notice(f"run {run_id} — also live at {gw.config.url}/#/runs/{run_id}; Ctrl-C cancels it")
    state = _follow(gw, run_id, view, cancel_on_interrupt=True, answer=sys.stdin.isatty())
    _save(gw, state, args.out or Path("runloom-out") / run_id, view)
    return EXIT.get(state.status, 1)


def cmd_watch(args: argparse.Namespace, gw: Gateway) -> int:
    view = JsonView() if args.json else TerminalView()
    state = _follow(gw, args.run_id, view, cancel_on_interrupt=False, answer=sys.stdin.isatty())
    if args.out:
        _save(gw, state, args.out, view)
    return EXIT.get(state.status, 1)


def _follow(
    gw: Gateway, run_id: str, view: TerminalView, *, cancel_on_interrupt: bool, answer: bool
) -> RunState:
    def prompt(state: RunState, event: Any) -> None:
        """When the run pauses for a clarification, ask for the answer right here."""
        if not answer or event.type != "clarification.requested":
            return
        if state.clarification is None or state.status != "waiting_clarification":
            return  # already answered (we are replaying history)
        try:
            text = input("  your answer (empty: answer later with `runloom answer`): ")
        except EOFError:  # Ctrl-D: keep watching, answer later
            text = ""
        if text.strip():
            gw.request("POST", f"/v1/runs/{run_id}/clarification", json={"answer": text})

    follower = Follower(gw, run_id, view, on_event=prompt)
    cancelling = False
    while True:
        try:
            return follower.run()
        except KeyboardInterrupt:
            if not cancel_on_interrupt:
                raise CliError("stopped watching; the run goes on", code=130) from None
            if cancelling:
                raise CliError(
                    f"stopped waiting; the cancel of {run_id} was requested and goes on",
                    code=130,
                ) from None
            cancelling = True
            view.notice("Ctrl-C: cancelling the run… (Ctrl-C again to stop waiting)")
            gw.request("POST", f"/v1/runs/{run_id}/cancel")


def _save(gw: Gateway, state: RunState, out: Path, view: TerminalView) -> None:
    artifacts = [
        (k, a) for k, d in state.deliverables.items() if d.status == "ready" for a in d.artifacts
    ]
    if not artifacts:
        return
    out.mkdir(parents=True, exist_ok=True)
    names = [a.file_name for _, a in artifacts]
    for kind, a in artifacts:
        name = a.file_name if names.count(a.file_name) == 1 else f"{kind}-{a.file_name}"
        dest = out / Path(name).name  # never a path from the server
        gw.download(f"/v1/artifacts/{a.artifact_id}", dest)
        digest = hashlib.sha256(dest.read_bytes()).hexdigest()
        if a.sha256 and digest != a.sha256:
            raise CliError(f"{dest} does not match its checksum; download it again")
        view.notice(f"saved {dest} ({dest.stat().st_size} bytes)")


# -- runs, answer, cancel ------------------------------------------------------------------------


def _items(page: Any) -> list[dict[str, Any]]:
    if isinstance(page, list):
        return page
    for key in ("runs", "items", "data", "results", "documents"):
        if isinstance(page, dict) and isinstance(page.get(key), list):
            return list(page[key])
    return []


def cmd_runs(args: argparse.Namespace, gw: Gateway) -> int:
    page = gw.request("GET", "/v1/runs", params={"limit": args.limit})
    runs = _items(page)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print('No runs yet. Start one: runloom ask "your question"')
        return 0
    rows = [
        (
            r.get("id", ""),
            status_text(r),
            money(float(r["spent_usd"])) if r.get("spent_usd") is not None else "",
            (r.get("created_at") or "")[:19].replace("T", " "),
            (r.get("title") or r.get("question") or "")[:60],
        )
        for r in runs
    ]
    _table(("RUN", "STATUS", "SPENT", "CREATED", "QUESTION"), rows)
    return 0


def cmd_answer(args: argparse.Namespace, gw: Gateway) -> int:
    gw.request("POST", f"/v1/runs/{args.run_id}/clarification", json={"answer": args.answer})
    print(f"answered; follow the run with: runloom watch {args.run_id}")
    return 0


def cmd_cancel(args: argparse.Namespace, gw: Gateway) -> int:
    gw.request("POST", f"/v1/runs/{args.run_id}/cancel")
    print(f"cancel requested; follow the run with: runloom watch {args.run_id}")
    return 0


# -- docs ----------------------------------------------------------------------------------------


def _document_files(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    files, skipped = [], []
    for path in paths:
        if not path.exists():
            raise CliError(f"{path} does not exist")
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in candidates:
            (files if f.suffix.lower() in DOC_SUFFIXES else skipped).append(f)
    return files, skipped


def cmd_docs_add(args: argparse.Namespace, gw: Gateway) -> int:
    files, skipped = _document_files(args.paths)
    for f in skipped:
        print(f"skipped {f} (not {', '.join(sorted(DOC_SUFFIXES))})", file=sys.stderr)
    if not files:
        raise CliError("no documents to add: give .txt, .md, .html or .pdf files, or folders")
    for f in files:
        media = mimetypes.guess_type(f.name)[0] or "text/plain"
        with f.open("rb") as fh:
            answer = gw.request("POST", "/v1/documents", files={"file": (f.name, fh, media)})
        for doc in _items(answer) or [answer or {}]:
            chunks = doc.get("chunk_count")
            extra = f", {chunks} chunks" if chunks is not None else ""
            print(f"added {f} as {doc.get('id', '?')} “{doc.get('title', f.stem)}”{extra}")
    print(f"{len(files)} document{'s' if len(files) != 1 else ''} added")
    return 0


# -- usage ---------------------------------------------------------------------------------------


def cmd_usage(args: argparse.Namespace, gw: Gateway) -> int:
    params = {
        k: v
        for k, v in {
            "run_id": args.run_id,
            "from": args.from_,
            "to": args.to,
            "group_by": args.group_by,
        }.items()
        if v
    }
    data = gw.request("GET", "/v1/usage", params=params)
    if args.json or not isinstance(data, dict):
        print(json.dumps(data, indent=2))
        return 0
    if "run_id" in data:
        budget = data.get("budget_usd")
        print(f"run {data['run_id']}: spent {money(float(data.get('total_usd') or 0))}", end="")
        print(f" of {money(float(budget))}" if budget is not None else "", end="")
        held = float(data.get("held_usd") or 0)
        print(f" ({money(held)} reserved for calls in flight)" if held else "")
        rows = [
            (
                (i.get("time") or "")[11:19],
                f"{i.get('provider')}/{i['model']}" if i.get("model") else i.get("tool") or "",
                str(i.get("input_tokens", "")),
                str(i.get("output_tokens", "")),
                f"{float(i.get('cost_usd', 0)):.6f}",
            )
            for i in data.get("items", [])
        ]
        if rows:
            _table(("TIME", "CALL", "IN", "OUT", "USD"), rows, indent="  ")
    else:
        print(f"usage {data.get('from', '')} .. {data.get('to', '')} by {data.get('group_by')}")
        for value in data.values():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                columns = list(value[0].keys())
                _table(
                    [c.upper() for c in columns],
                    [tuple(_cell(r.get(c)) for c in columns) for r in value],
                    indent="  ",
                )
    totals = data.get("totals")
    if isinstance(totals, dict):
        print("total: " + ", ".join(f"{k}={_cell(v)}" for k, v in totals.items()))
    return 0


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def _table(header: Iterable[str], rows: Sequence[Sequence[str]], indent: str = "") -> None:
    header = tuple(header)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print(
            indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        )
