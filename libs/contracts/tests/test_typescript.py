"""`runloom.d.ts` compiles (tsc --noEmit --strict) and `RunEvent` narrows on `type`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from runloom.contracts import codegen

USES = """
import type {
  ContentModel, RunEvent, RunEventData, RunEventType, StartRun, TerminalEventType,
} from "./runloom";

export function line(e: RunEvent): string {
  switch (e.type) {
    case "run.created":
      return `${e.seq} asked: ${e.data.question}`;
    case "message.delta":
      return e.data.text;
    case "deliverable.ready":
      return e.data.artifacts.map((a) => a.file_name).join(", ");
    case "run.completed":
      return e.data?.partial ? `partial: ${(e.data.missing ?? []).join("; ")}` : "done";
    default:
      return e.type;
  }
}

export const terminal: TerminalEventType = "run.budget_stopped";
export const kinds: RunEventType[] = ["plan.proposed", "rate_limited"];
export const data: RunEventData["source.found"] = { source_id: "s1", title: "T", passage: "p" };
export const start: StartRun = { command_id: "c", run_id: "r", tenant_id: "t" };
export const content: ContentModel = { run_id: "r", title: "T", question: "Q?" };
"""

WRONG = """
import type { RunEvent } from "./runloom";

export function question(e: RunEvent): string {
  if (e.type === "run.started") {
    return e.data.question;
  }
  return "";
}
"""


def _tsc(node_tools: Any, folder: Path, uses: str) -> subprocess.CompletedProcess[str]:
    shutil.copyfile(codegen.GENERATED / "runloom.d.ts", folder / "runloom.d.ts")
    (folder / "uses.ts").write_text(uses)
    return node_tools.run(
        node_tools.bin("tsc"),
        "--noEmit",
        "--strict",
        "--target",
        "es2022",
        "--module",
        "es2022",
        "--moduleResolution",
        "bundler",
        str(folder / "runloom.d.ts"),
        str(folder / "uses.ts"),
    )


def test_declarations_compile_and_narrow(node_tools: Any, tmp_path: Path) -> None:
    done = _tsc(node_tools, tmp_path, USES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_wrong_payload_for_a_type_does_not_compile(node_tools: Any, tmp_path: Path) -> None:
    done = _tsc(node_tools, tmp_path, WRONG)
    assert done.returncode != 0
    assert "Property 'question' does not exist on type 'RunStarted'" in done.stdout
