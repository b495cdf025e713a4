"""The README's bus access table is the generator's output for the declared identities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runloom.devkit import busauth
from runloom.runtime import access

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_table_is_the_generated_one() -> None:
    begin, end = "<!-- bus-access-table:begin -->\n", "<!-- bus-access-table:end -->"
    shown = README.split(begin, 1)[1].split(end, 1)[0]
    assert shown == access.render_table(busauth.IDENTITIES), (
        "README bus access table is stale: paste `python -m runloom.devkit.busauth table`"
    )


def test_only_admin_may_administer_streams() -> None:
    admin_api = (
        "STREAM.CREATE",
        "STREAM.UPDATE",
        "STREAM.DELETE",
        "STREAM.LIST",
        "CONSUMER.DELETE",
    )
    for ident in busauth.IDENTITIES:
        p = ident.permissions()
        if ident.admin:
            assert p.publish == (">",)
            continue
        kv_own = tuple(f"$JS.API.CONSUMER.DELETE.KV_{b}." for b in ident.kv)  # no durables there
        admin = [s for s in p.publish if any(a in s for a in admin_api)]
        assert [s for s in admin if not s.startswith(kv_own or ("-",))] == [], ident.name
        assert ">" not in p.publish and ">" not in p.subscribe
        assert [s for s in p.subscribe if s.startswith("_INBOX")] == [f"_INBOX_{ident.name}.>"]
        purges = [s for s in p.publish if "STREAM.PURGE" in s]
        assert purges == [
            *(f"$JS.API.STREAM.PURGE.OBJ_{b}" for b in ident.buckets_delete),
            *(f"$JS.API.STREAM.PURGE.{s}" for s in ident.purges),
        ]
    # Whole-stream purges outside object stores, message deletes and the erasure records:
    # the lifecycle service's alone (README); never the gateway, which clients reach.
    assert {i.name: i.purges for i in busauth.IDENTITIES if i.purges} == {
        "lifecycle": ("RUN_EVENTS",)
    }
    assert {i.name for i in busauth.IDENTITIES if i.deletes_from or i.kv} == {"lifecycle"}
    gateway = busauth.by_name("gateway").permissions().publish
    assert not [s for s in gateway if "PURGE" in s or "MSG.DELETE" in s or "$KV." in s]
    assert not [s for s in gateway if s.startswith("erase.")], "erasing is asked of lifecycle"


def test_identities_are_distinct() -> None:
    names = [i.name for i in busauth.IDENTITIES]
    assert len(set(names)) == len(names)


def test_the_template_includes_the_generated_users() -> None:
    nats_dir = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "nats"
    assert (nats_dir / "authorization.conf").read_text() == busauth.template_block(), (
        "deploy/k8s/base/nats/authorization.conf is stale: "
        "python -m runloom.devkit.busauth template > deploy/k8s/base/nats/authorization.conf"
    )
    assert 'include "authorization.conf"' in (nats_dir / "nats.conf").read_text()
    assert "no_auth_user" not in (nats_dir / "nats.conf").read_text()


def test_a_secret_may_come_from_a_file(tmp_path: Path, monkeypatch: Any) -> None:
    from runloom.runtime.config import Settings

    url = tmp_path / "url"
    url.write_text("postgresql://runloom_gateway:s3cret@db:5432/runloom\n")
    monkeypatch.setenv("RUNLOOM_DATABASE_URL", "postgresql://ignored@x/y")
    monkeypatch.setenv("RUNLOOM_DATABASE_URL_FILE", str(url))
    assert Settings.from_env().database_url == "postgresql://runloom_gateway:s3cret@db:5432/runloom"
    monkeypatch.delenv("RUNLOOM_DATABASE_URL_FILE")
    assert Settings.from_env().database_url == "postgresql://ignored@x/y"
