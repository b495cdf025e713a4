"""The document corpus: per-tenant documents, chunked, searched with Postgres full-text search.

Chunks carry a generated `tsvector` (title weighted above text) under a GIN index. A search
parses the query with `websearch_to_tsquery`, ranks with `ts_rank`, and computes highlighted
passages (`ts_headline`, the expensive part) only for the top hits it returns.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from runloom.contracts.commands import MAX_DOCUMENT_CHARS, CorpusDocument
from runloom.contracts.ids import new_id
from runloom.corpus import text as textlib

log = logging.getLogger(__name__)

CHANNEL = "runloom_corpus_chunks"
"""NOTIFY channel: chunks were stored (payload: the tenant id); wakes the embedding job."""


class CorpusError(ValueError):
    """Bad input for the corpus, with a message a person can act on."""


class DocumentTooLarge(CorpusError):
    """The document's text is over MAX_DOCUMENT_CHARS."""


@dataclass(frozen=True, kw_only=True)
class Document:
    id: str
    tenant_id: str
    title: str
    url: str | None
    media_type: str
    origin: str
    size_chars: int
    chunk_count: int
    created_at: datetime

    def as_contract(self) -> CorpusDocument:
        """The document as the `corpus.*` replies carry it."""
        return CorpusDocument(
            id=self.id,
            title=self.title,
            url=self.url,
            media_type=self.media_type,
            origin=self.origin,
            size_chars=self.size_chars,
            chunk_count=self.chunk_count,
            created_at=self.created_at,
        )


@dataclass(frozen=True, kw_only=True)
class Hit:
    chunk_id: str
    document_id: str
    title: str
    url: str | None
    text: str
    rank: float
    headline: str

    @classmethod
    def from_row(cls, r: asyncpg.Record, rank: str = "rank") -> Hit:
        return cls(
            chunk_id=r["id"],
            document_id=r["document_id"],
            title=r["title"],
            url=r["url"],
            text=r["text"],
            rank=float(r[rank]),
            headline=textlib.normalize_space(r["headline"]),
        )


def _document(row: asyncpg.Record) -> Document:
    return Document(
        id=row["id"],
        tenant_id=row["tenant_id"],
        title=row["title"],
        url=row["url"],
        media_type=row["media_type"],
        origin=row["origin"],
        size_chars=row["size_chars"],
        chunk_count=row["chunk_count"],
        created_at=row["created_at"],
    )


async def add_document(
    pool: asyncpg.Pool,
    tenant_id: str,
    *,
    title: str,
    text: str,
    url: str | None = None,
    media_type: str = "text/plain",
    origin: str = "upload",
    document_id: str | None = None,
) -> Document:
    """Store a document and its chunks in one transaction; returns it.

    With a `document_id` the call is idempotent: an existing document of that id is returned.
    Raises CorpusError for an empty title or text, or text over MAX_DOCUMENT_CHARS.
    """
    title = clean_title(title)
    if not title:
        raise CorpusError("The document needs a title (a non-empty 'title').")
    body = clean_text(text)
    if not body.strip():
        raise CorpusError(f"The document {title!r} has no text to index.")
    if len(body) > MAX_DOCUMENT_CHARS:
        raise DocumentTooLarge(
            f"The document {title!r} has {len(body):,} characters of text; the limit is "
            f"{MAX_DOCUMENT_CHARS:,}. Split it into smaller documents."
        )
    doc_id = document_id or new_id("doc")
    pieces = textlib.chunk(body)
    sha = hashlib.sha256(body.encode()).hexdigest()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO documents(id, tenant_id, title, url, media_type, origin,"
            " content_sha256, size_chars, chunk_count) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
            " ON CONFLICT (id) DO NOTHING RETURNING *",
            doc_id,
            tenant_id,
            title,
            url,
            media_type,
            origin,
            sha,
            len(body),
            len(pieces),
        )
        if row is None:
            existing = await conn.fetchrow("SELECT * FROM documents WHERE id=$1", doc_id)
            assert existing is not None
            return _document(existing)
        await conn.executemany(
            "INSERT INTO chunks(id, document_id, tenant_id, ordinal, title, text)"
            " VALUES ($1,$2,$3,$4,$5,$6)",
            [(f"{doc_id}-c{i:04d}", doc_id, tenant_id, i, title, p) for i, p in enumerate(pieces)],
        )
        # Wakes the embedding job once this commits (the chunks are its truth, not the note).
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, tenant_id)
    return _document(row)


def clean_title(title: str) -> str:
    return textlib.normalize_space(title)[:300]


def clean_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\x00", "")


async def list_documents(
    pool: asyncpg.Pool, tenant_id: str, *, limit: int = 100, offset: int = 0
) -> tuple[list[Document], int]:
    """A page of the tenant's documents (newest first) and the total count."""
    rows = await pool.fetch(
        "SELECT * FROM documents WHERE tenant_id=$1 ORDER BY created_at DESC, id DESC"
        " LIMIT $2 OFFSET $3",
        tenant_id,
        limit,
        offset,
    )
    total = await pool.fetchval("SELECT count(*) FROM documents WHERE tenant_id=$1", tenant_id)
    return [_document(r) for r in rows], int(total)


async def get_document(pool: asyncpg.Pool, tenant_id: str, document_id: str) -> Document | None:
    row = await pool.fetchrow(
        "SELECT * FROM documents WHERE id=$1 AND tenant_id=$2", document_id, tenant_id
    )
    return None if row is None else _document(row)


async def delete_document(pool: asyncpg.Pool, tenant_id: str, document_id: str) -> bool:
    """Delete a document and its chunks; False if the tenant has no such document."""
    status = await pool.execute(
        "DELETE FROM documents WHERE id=$1 AND tenant_id=$2", document_id, tenant_id
    )
    return status.endswith(" 1")


_SEARCH = """
SELECT top.*, ts_headline('english', top.text, top.q,
         'MaxFragments=2, MinWords=8, MaxWords=30, StartSel=**, StopSel=**') AS headline
FROM (
    SELECT DISTINCT ON (ranked.digest) ranked.*
    FROM (
        SELECT c.id, c.document_id, c.text, d.title, d.url, md5(c.text) AS digest, q.q,
               ts_rank_cd(c.tsv, q.q, 1) AS rank
        FROM chunks c
        JOIN documents d ON d.id = c.document_id,
             websearch_to_tsquery('english', $2) AS q(q)
        WHERE c.tenant_id = $1 AND c.tsv @@ q.q
        ORDER BY rank DESC, c.id
        LIMIT $3 * 3
    ) AS ranked
    ORDER BY ranked.digest, ranked.rank DESC, ranked.id
) AS top
ORDER BY top.rank DESC, top.id
LIMIT $3
"""


async def search(pool: asyncpg.Pool, tenant_id: str, query: str, *, limit: int = 5) -> list[Hit]:
    """The tenant's best passages for a web-search style query (`a b`, `"a b"`, `a or b`).

    Ranked by cover density (terms close together count more) normalized by passage length;
    passages with identical text (documents that repeat each other) count once.
    """
    if not query.strip():
        return []
    rows = await pool.fetch(_SEARCH, tenant_id, query, limit)
    return [Hit.from_row(r) for r in rows]


async def term_frequencies(
    pool: asyncpg.Pool, tenant_id: str, terms: list[str]
) -> tuple[dict[str, int], int]:
    """How many of the tenant's chunks match each term, and how many chunks there are."""
    rows = await pool.fetch(
        "SELECT t, (SELECT count(*) FROM chunks WHERE tenant_id=$1"
        "   AND tsv @@ plainto_tsquery('english', t)) AS n"
        " FROM unnest($2::text[]) AS t",
        tenant_id,
        terms,
    )
    total = await pool.fetchval("SELECT count(*) FROM chunks WHERE tenant_id=$1", tenant_id)
    return {r["t"]: int(r["n"]) for r in rows}, int(total)


def default_corpus() -> list[tuple[str, str, str]]:
    """(topic, title, text) for each Python documentation topic shipped with Python."""
    from pydoc_data import topics

    out = []
    for topic, body in sorted(topics.topics.items()):
        first = body.strip().splitlines()[0] if body.strip() else topic
        title = first.replace('"', "").strip() or topic
        out.append((topic, title, body))
    return out


def default_document_id(tenant_id: str, topic: str) -> str:
    digest = hashlib.sha256(f"{tenant_id}:pydoc:{topic}".encode()).hexdigest()[:20]
    return f"doc_py_{digest}"


async def seed_default_corpus(pool: asyncpg.Pool, tenant_id: str) -> int:
    """Load the Python documentation topics for a tenant, one document per topic (idempotent).

    Returns how many documents were added now (0 when the corpus was already there).
    """
    docs = default_corpus()
    ids = [default_document_id(tenant_id, topic) for topic, _, _ in docs]
    have = {r["id"] for r in await pool.fetch("SELECT id FROM documents WHERE id = ANY($1)", ids)}
    added = 0
    for (_topic, title, body), doc_id in zip(docs, ids, strict=True):
        if doc_id in have:
            continue
        await add_document(
            pool,
            tenant_id,
            title=title,
            text=body,
            origin="default",
            document_id=doc_id,
        )
        added += 1
    if added:
        log.info("seeded %d default documents for tenant %s", added, tenant_id)
    # Their embeddings come from the shipped cache: no forward pass for the default corpus.
    # (Imported here: the gateway stores documents and needs no numpy for that.)
    from runloom.corpus import embed, vectors

    await vectors.embed_pending(pool, embed.shared(), tenant_id=tenant_id, wait=True)
    return added
