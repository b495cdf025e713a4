"""Who may do what on the bus: one NATS identity per workload, its permissions derived from
what it declares.

Each service declares one `Identity` (its package's `access` module): the durables it consumes
(the `Consumer` declarations' stream and durable), the subjects it serves (its `Route`s, in its
queue group), the subjects it publishes and requests, the core subscriptions it listens to, the
streams it reads and the object stores it writes. `Identity.permissions()` turns that into
nats-server publish and subscribe allow lists:

- its own reply inbox, `_INBOX_<identity>.>` (the client's `inbox_prefix`), and nobody else's;
- for each durable: create/update, info, next and ack of that durable only;
- for each stream read: stream info, direct and leader gets, ordered (ephemeral) consumers;
- object stores: the `$O.<bucket>.` subjects written, gets of the bucket's stream;
- `allow_responses` when it serves requests (it may answer a request it received, once).

Nothing else: no `$JS.API.STREAM.CREATE|UPDATE|DELETE|PURGE|NAMES|LIST`, no other service's
durables, requests or inboxes. `ADMIN` (the release Job, `runloom admin`, `runloom up`'s
provisioning) alone may do everything; `BACKUP` only reads stream snapshots. `render_users`
writes the nats-server `authorization`
block; `render_table` the README's table. The server has no anonymous user (`no_auth_user` is
never set): a client without a known nkey is refused.

Credentials are nkey seeds in files (`<identity>.nk`, mode 600), one per identity, created by
`ensure_seed`; a process is given the path of its own (RUNLOOM_NATS_CREDENTIALS) and nothing
else. The seed never appears in the environment, a command line or a log line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runloom.contracts import subjects
from runloom.contracts.operations import ERASE, OPERATIONS

JS_API = "$JS.API"
STREAMS = (
    subjects.RUN_EVENTS_STREAM,
    subjects.COMMANDS_STREAM,
    subjects.JOBS_STREAM,
    subjects.DLQ_STREAM,
)
BUCKETS = (subjects.ARTIFACTS_BUCKET, subjects.CORPUS_UPLOADS_BUCKET)
KV = (subjects.ERASURES_BUCKET,)
SEED_SUFFIX = ".nk"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class Durable:
    """A durable pull consumer an identity serves (a `Consumer`'s stream and durable)."""

    stream: str
    durable: str


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool


@dataclass(frozen=True, kw_only=True)
class Identity:
    """One workload's identity on the bus and what it declares it does there."""

    name: str
    consumes: tuple[Durable, ...] = ()
    """Durables it creates and pulls from (acks, dead letters as `dlq.<stream>.<durable>`)."""
    serves: tuple[str, ...] = ()
    """Request subjects it answers (its `Route`s), in the queue group `queue`."""
    queue: str = ""
    """Its responders' queue group (dead letters of requests as `dlq.core.<queue>`)."""
    publishes: tuple[str, ...] = ()
    """Subjects it publishes (to a stream or core NATS)."""
    requests: tuple[str, ...] = ()
    """Request subjects it asks (another identity serves them)."""
    listens: tuple[str, ...] = ()
    """Core subscriptions (live messages, no consumer)."""
    reads: tuple[str, ...] = ()
    """Streams it reads by position or subject (direct gets, ordered consumers)."""
    buckets_read: tuple[str, ...] = ()
    buckets_write: tuple[str, ...] = ()
    buckets_delete: tuple[str, ...] = ()
    """Object stores whose objects it deletes (a filtered purge of that bucket's stream)."""
    purges: tuple[str, ...] = ()
    """Streams it purges subjects of (erasure: `run.<id>.events`). A permission cannot name
    the purge's filter: this is the power to purge the whole stream."""
    deletes_from: tuple[str, ...] = ()
    """Streams whose messages it reads and deletes by sequence (erasure)."""
    kv: tuple[str, ...] = ()
    """Key-value buckets it reads and writes (erasure jobs)."""
    snapshots: tuple[str, ...] = ()
    """Streams it takes snapshots of (a backup): read-only copies of every message, sent to
    its own inbox; no restore, no change to any stream."""
    admin: bool = False
    """Everything (streams, object stores, any subject): the release Job and `runloom admin`."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"identity name {self.name!r}: lower case letters, digits and '-'")

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.name)

    def streams(self) -> list[str]:
        """Streams whose info (configuration and counts, no content) it may ask: every one of
        Runloom's, whose presence a starting service waits for (the release made them)."""
        return [*STREAMS, *(bucket_stream(b) for b in BUCKETS), *(kv_stream(b) for b in KV)]

    def permissions(self) -> Permissions:
        if self.admin:
            return Permissions(publish=(">",), subscribe=(">",), allow_responses=False)
        pub: list[str] = [*self.publishes, *self.requests]
        sub: list[str] = [f"{self.inbox_prefix}.>", *self.serves, *self.listens]
        for d in self.consumes:
            api = f"{d.stream}.{d.durable}"
            pub += [
                f"{JS_API}.CONSUMER.DURABLE.CREATE.{api}",
                f"{JS_API}.CONSUMER.CREATE.{api}",
                f"{JS_API}.CONSUMER.CREATE.{api}.>",
                f"{JS_API}.CONSUMER.INFO.{api}",
                f"{JS_API}.CONSUMER.MSG.NEXT.{api}",
                f"$JS.ACK.{api}.>",
                f"dlq.{api}",
            ]
        if self.serves:
            pub.append(f"dlq.core.{self.queue}")
        readable = [*self.reads, *(bucket_stream(b) for b in self.buckets_read)]
        readable += [bucket_stream(b) for b in (*self.buckets_write, *self.buckets_delete)]
        for stream in dict.fromkeys(readable):
            pub += [
                f"{JS_API}.DIRECT.GET.{stream}",
                f"{JS_API}.DIRECT.GET.{stream}.>",
                f"{JS_API}.STREAM.MSG.GET.{stream}",
                f"{JS_API}.CONSUMER.CREATE.{stream}",
                f"$JS.FC.{stream}.>",
            ]
        if self.buckets_read:
            # nats-py's object get finds the bucket's stream by subject: names only, no content.
            pub.append(f"{JS_API}.STREAM.NAMES")
        pub += [f"{JS_API}.STREAM.INFO.{s}" for s in self.streams()]
        pub += [f"$O.{b}.>" for b in (*self.buckets_write, *self.buckets_delete)]
        pub += [f"{JS_API}.STREAM.PURGE.{bucket_stream(b)}" for b in self.buckets_delete]
        pub += [f"{JS_API}.STREAM.PURGE.{s}" for s in self.purges]
        for stream in self.deletes_from:
            pub += [f"{JS_API}.STREAM.MSG.GET.{stream}", f"{JS_API}.STREAM.MSG.DELETE.{stream}"]
        for bucket in self.kv:
            kv = kv_stream(bucket)
            pub += [
                f"$KV.{bucket}.>",
                f"{JS_API}.DIRECT.GET.{kv}.>",
                f"{JS_API}.STREAM.MSG.GET.{kv}",
                f"{JS_API}.CONSUMER.CREATE.{kv}",
                # listing keys asks about, then drops, its own ephemeral consumer (the bucket
                # has no durable one to harm)
                f"{JS_API}.CONSUMER.INFO.{kv}.*",
                f"{JS_API}.CONSUMER.DELETE.{kv}.*",
                f"$JS.FC.{kv}.>",
            ]
        for stream in self.snapshots:
            # the snapshot request, and the flow-control answers to its chunks
            pub += [f"{JS_API}.STREAM.SNAPSHOT.{stream}", f"$JS.SNAPSHOT.ACK.{stream}.>"]
        return Permissions(
            publish=tuple(dict.fromkeys(pub)),
            subscribe=tuple(dict.fromkeys(sub)),
            allow_responses=bool(self.serves),
        )


ADMIN = Identity(name="admin", admin=True)


def inbox_prefix(identity: str) -> str:
    """The identity's reply subjects: `_INBOX_<identity>` (its subscribe permission)."""
    return f"_INBOX_{identity}"


def bucket_stream(bucket: str) -> str:
    return f"OBJ_{bucket}"


def kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


BACKUP = Identity(
    name="backup",
    snapshots=(*STREAMS, *(bucket_stream(b) for b in BUCKETS), *(kv_stream(b) for b in KV)),
)
"""The backup (`runloom backup`, `python -m runloom.admin backup`, the Kubernetes CronJob):
stream info and snapshots of every stream, nothing else (a restore is the admin's)."""


def served_by(service: str) -> tuple[str, ...]:
    """The request subjects `service` answers: the operations table's rows naming it."""
    return tuple(op.subject for op in OPERATIONS if op.answered_by == service)


def asked(*groups: str, erase: bool = False) -> tuple[str, ...]:
    """The request subjects of whole operation groups (`billing`, `corpus` ...), for an asker."""
    ops = [op.subject for op in OPERATIONS if op.group in groups]
    if erase:
        ops += [op.subject for op in ERASE.values()]
    return tuple(dict.fromkeys(ops))


# -- nats-server configuration -----------------------------------------------------------------


def _quote(subject: str) -> str:
    return '"' + subject.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_quote(s) for s in items) + "]"


def render_users(identities: Sequence[Identity], keys: Mapping[str, str]) -> str:
    """The nats-server `authorization { users: [...] }` block: one nkey user per identity.

    `keys`: identity -> its public nkey, or a `$VARIABLE` nats-server resolves from its
    environment (the Kubernetes template's way: public keys are not secrets)."""
    lines = [
        "# Generated by runloom.runtime.access from the services' declarations: do not edit.",
        "# No anonymous user: a client without one of these nkeys is refused.",
        "authorization {",
        "  users: [",
    ]
    for ident in identities:
        p = ident.permissions()
        key = keys[ident.name]
        key_text = key if key.startswith("$") else _quote(key)
        lines += [
            f"    # {ident.name}",
            f"    {{nkey: {key_text}, permissions: {{",
            f"      publish: {{allow: {_list(p.publish)}}}",
            f"      subscribe: {{allow: {_list(p.subscribe)}}}",
        ]
        if p.allow_responses:
            lines.append("      allow_responses: true")
        lines.append("    }}")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def key_variable(identity: str) -> str:
    """The environment variable holding an identity's public key in the shared template."""
    return "RUNLOOM_NKEY_" + identity.upper().replace("-", "_")


def render_table(identities: Sequence[Identity]) -> str:
    """A Markdown table, identity x subject -> `pub` / `sub` (the README shows it): one row
    per subject pattern any identity may use, in the order they first appear."""
    perms = {i.name: i.permissions() for i in identities}
    rows: dict[str, None] = {}
    for p in perms.values():
        rows.update(dict.fromkeys((*p.publish, *p.subscribe)))
    names = [i.name for i in identities]
    lines = [
        "| subject | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for subject in rows:
        cells = []
        for name in names:
            p = perms[name]
            both = [k for k, v in (("pub", p.publish), ("sub", p.subscribe)) if subject in v]
            cells.append(" ".join(both))
        lines.append(f"| `{subject}` | " + " | ".join(cells) + " |")
    answers = ["yes" if perms[n].allow_responses else "" for n in names]
    lines.append(
        "| *answer a request received (`allow_responses`)* | " + " | ".join(answers) + " |"
    )
    return "\n".join(lines) + "\n"


# -- credentials -----------------------------------------------------------------------------


def seed_path(directory: Path, identity: str) -> Path:
    return directory / f"{identity}{SEED_SUFFIX}"


def ensure_seed(directory: Path, identity: str) -> str:
    """The identity's public key; its seed file (mode 600, folder 700) is made on first use."""
    import nkeys

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = seed_path(directory, identity)
    if not path.exists():
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(seed + b"\n")
    path.chmod(0o600)
    return public_key(path)


def public_key(path: Path) -> str:
    import nkeys

    kp = nkeys.from_seed(bytearray(path.read_bytes().strip()))
    try:
        return str(kp.public_key.decode())
    finally:
        kp.wipe()


def identity_of(path: Path) -> str:
    """The identity a credential file belongs to (its name without `.nk`)."""
    if path.suffix != SEED_SUFFIX:
        raise ValueError(f"{path}: a NATS credential is an nkey seed file named <identity>.nk")
    return path.stem


def ensure_all(directory: Path, identities: Sequence[Identity]) -> dict[str, str]:
    """Every identity's public key, seeds made where missing."""
    return {i.name: ensure_seed(directory, i.name) for i in identities}
