"""Every identity on the local bus, their credentials under `$RUNLOOM_HOME/secrets/nats`, and
the nats-server `authorization` block made from them.

`IDENTITIES` is the one list of workloads: a new service adds its package's `IDENTITY` here
(one line); its permissions come from that declaration (`runloom.runtime.access`).
"""

from __future__ import annotations

from pathlib import Path

from runloom.billing.access import IDENTITY as BILLING
from runloom.deliverables.access import IDENTITY as DELIVERABLES
from runloom.gateway.access import IDENTITY as GATEWAY
from runloom.lifecycle.access import IDENTITY as LIFECYCLE
from runloom.orchestrator.access import IDENTITY as ORCHESTRATOR
from runloom.runtime import access
from runloom.runtime.access import ADMIN, BACKUP, Identity
from runloom.webhooks.access import IDENTITY as WEBHOOKS

IDENTITIES: tuple[Identity, ...] = (
    ADMIN,
    BACKUP,
    GATEWAY,
    ORCHESTRATOR,
    DELIVERABLES,
    BILLING,
    WEBHOOKS,
    LIFECYCLE,
)

AUTH_FILE = "authorization.conf"


def by_name(name: str) -> Identity:
    for ident in IDENTITIES:
        if ident.name == name:
            return ident
    raise KeyError(f"no NATS identity {name!r}: one of {', '.join(i.name for i in IDENTITIES)}")


def secrets_dir(home: Path) -> Path:
    return home / "secrets" / "nats"


def credential(home: Path, identity: str) -> Path:
    """The path of an identity's nkey seed file (what RUNLOOM_NATS_CREDENTIALS names)."""
    return access.seed_path(secrets_dir(home), by_name(identity).name)


def prepare(home: Path) -> str:
    """Make any missing credential (mode 600) and return the `authorization` block with every
    identity's public key; also written beside them (`authorization.conf`, for a nats-server
    run elsewhere: RUNLOOM_NATS_URL)."""
    keys = access.ensure_all(secrets_dir(home), IDENTITIES)
    block = access.render_users(IDENTITIES, keys)
    path = secrets_dir(home) / AUTH_FILE
    path.write_text(block)
    path.chmod(0o600)
    return block


def key_environment(home: Path) -> dict[str, str]:
    """The template's `$RUNLOOM_NKEY_<IDENTITY>` variables: each identity's public key."""
    keys = access.ensure_all(secrets_dir(home), IDENTITIES)
    return {access.key_variable(name): key for name, key in keys.items()}


def template_block() -> str:
    """The block the shared template includes: public keys as `$RUNLOOM_NKEY_*` variables."""
    return access.render_users(
        IDENTITIES, {i.name: "$" + access.key_variable(i.name) for i in IDENTITIES}
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m runloom.devkit.busauth table|template|keys DIR`: the README's table, the block
    the shared nats-server template includes, or (keys) every identity's seed made under
    DIR/secrets/nats (kept if there) and the public keys printed as `RUNLOOM_NKEY_*=...`."""
    import sys

    what = (argv if argv is not None else sys.argv[1:]) or ["table"]
    if what[0] == "table":
        print(access.render_table(IDENTITIES), end="")
    elif what[0] == "template":
        print(template_block(), end="")
    elif what[0] == "keys" and len(what) == 2:
        for name, key in key_environment(Path(what[1])).items():
            print(f"{name}={key}")
    else:
        raise SystemExit("usage: python -m runloom.devkit.busauth table|template|keys DIR")


if __name__ == "__main__":
    main()
