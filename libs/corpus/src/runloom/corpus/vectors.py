"""Chunk embeddings in Postgres (pgvector): the idempotent embedding job and its cache.

A chunk is embedded once: `embed_pending` finds chunks with no row in `chunk_embeddings`,
embeds them (off the event loop) and inserts with ON CONFLICT DO NOTHING, so running it twice,
from two replicas or after a crash halfway, stores each embedding once. A chunk deleted
meanwhile is simply not inserted. The default corpus ships its embeddings
(`data/default-embeddings.npz`, keyed by a digest of the chunk text), so loading it costs no
forward pass; a chunk the file does not hold is embedded like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections import OrderedDict
from functools import lru_cache
from importlib import resources

import asyncpg
import numpy as np
from runloom.corpus.embed import MODEL_NAME, Embedder, Vectors
from runloom.corpus.store import CHANNEL

log = logging.getLogger(__name__)

EMBED_LOCK = 0x52454D42  # "REMB": one replica embeds at a time; the others skip the round
CACHE_FILE = "default-embeddings.npz"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def literal(vector: Vectors) -> str:
    """A vector as pgvector's text input (`[0.1,0.2,...]`)."""
    return "[" + ",".join(f"{x:.6g}" for x in vector.tolist()) + "]"


@lru_cache(maxsize=1)
def shipped_cache() -> dict[str, Vectors]:
    """The shipped embeddings of the default corpus's chunks, by text digest."""
    entry = resources.files("runloom.corpus") / "data" / CACHE_FILE
    try:
        with resources.as_file(entry) as path, np.load(path) as data:
            if str(data["model"]) != MODEL_NAME:
                return {}
            keys = [str(k) for k in data["keys"]]
            vectors = data["vectors"].astype(np.float32) * data["scales"][:, None]
    except FileNotFoundError:
        return {}
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return dict(zip(keys, vectors, strict=True))


_computed: OrderedDict[str, Vectors] = OrderedDict()
_computed_lock = threading.Lock()
_COMPUTED_MAX = 5000
"""Texts embedded by this process lately (about 1.5 KB each): a section's sentences are often
compared again by the next section or run."""


def vectors_for(texts: list[str], embedder: Embedder) -> Vectors:
    """Embeddings of `texts`: from the shipped cache or this process's recent ones, else new."""
    cache = shipped_cache()
    out = np.zeros((len(texts), embedder.dimensions), dtype=np.float32)
    missing = []
    for i, t in enumerate(texts):
        key = digest(t)
        hit = cache.get(key)
        if hit is None:
            with _computed_lock:
                hit = _computed.get(key)
        if hit is None:
            missing.append(i)
        else:
            out[i] = hit
    if missing:
        fresh = embedder.embed([texts[i] for i in missing])
        out[missing] = fresh
        with _computed_lock:
            for i, vec in zip(missing, fresh, strict=True):
                _computed[digest(texts[i])] = vec
            while len(_computed) > _COMPUTED_MAX:
                _computed.popitem(last=False)
    return out


async def embed_pending(
    pool: asyncpg.Pool,
    embedder: Embedder,
    *,
    tenant_id: str | None = None,
    batch: int = 32,
    wait: bool = False,
) -> int:
    """Embed the chunks that have no embedding yet (all tenants', or one's); returns how many.

    Only one caller embeds at a time (an advisory lock); with `wait` False another caller
    returns 0 at once, with `wait` True it waits its turn (then finds less or nothing to do).
    """
    done = 0
    async with pool.acquire() as lock_conn:
        if wait:
            await lock_conn.execute("SELECT pg_advisory_lock($1)", EMBED_LOCK)
        elif not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", EMBED_LOCK):
            return 0
        try:
            while True:
                rows = await pool.fetch(
                    "SELECT c.id, c.tenant_id, c.title, c.text FROM chunks c"
                    " WHERE NOT EXISTS (SELECT 1 FROM chunk_embeddings e WHERE e.chunk_id = c.id)"
                    "   AND ($1::text IS NULL OR c.tenant_id = $1)"
                    " ORDER BY c.id LIMIT $2",
                    tenant_id,
                    batch,
                )
                if not rows:
                    return done
                texts = [passage_text(r["title"], r["text"]) for r in rows]
                vectors = await asyncio.to_thread(vectors_for, texts, embedder)
                await pool.execute(
                    "INSERT INTO chunk_embeddings(chunk_id, tenant_id, model, embedding)"
                    " SELECT c.id, c.tenant_id, $3, v.e::vector"
                    " FROM unnest($1::text[], $2::text[]) AS v(id, e) JOIN chunks c ON c.id = v.id"
                    " ON CONFLICT (chunk_id) DO NOTHING",
                    [r["id"] for r in rows],
                    [literal(v) for v in vectors],
                    embedder.name,
                )
                done += len(rows)
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", EMBED_LOCK)


def passage_text(title: str, text: str) -> str:
    """What is embedded for a chunk: its document's title, then its text."""
    return f"{title}\n{text}"


async def pending_count(pool: asyncpg.Pool, tenant_id: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM chunks c WHERE c.tenant_id = $1 AND NOT EXISTS"
            " (SELECT 1 FROM chunk_embeddings e WHERE e.chunk_id = c.id)",
            tenant_id,
        )
    )


class EmbeddingWorker:
    """The background job embedding uploaded documents: woken by the corpus's NOTIFY when
    chunks are stored, and on a timer as a fallback (a missed notification delays, never loses,
    an embedding: the table is the truth, the notification only a wake-up)."""

    def __init__(self, pool: asyncpg.Pool, embedder: Embedder, *, interval_s: float = 30.0):
        self.pool = pool
        self.embedder = embedder
        self.interval_s = interval_s
        self._wake = asyncio.Event()

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def run(self) -> None:
        conn: asyncpg.Connection = await self.pool.acquire()
        try:
            await conn.add_listener(CHANNEL, self._notified)
            await asyncio.to_thread(self.embedder.load)
            while True:
                self._wake.clear()  # before the round: a note arriving during it is kept
                try:
                    n = await embed_pending(self.pool, self.embedder)
                    if n:
                        log.info("embedded %d corpus chunks", n)
                except (asyncpg.PostgresError, OSError) as exc:
                    log.warning("embedding job failed, retrying: %s", exc)
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
                except TimeoutError:
                    pass
        finally:
            with contextlib.suppress(Exception):
                await conn.remove_listener(CHANNEL, self._notified)
            await self.pool.release(conn)


def default_texts() -> list[str]:
    """What the shipped cache holds: each default chunk as embedded, and its prose sentences
    (the offline writer compares sentences with the sub-question)."""
    from runloom.corpus import store
    from runloom.corpus import text as textlib

    texts: dict[str, None] = {}
    for _topic, title, body in store.default_corpus():
        for piece in textlib.chunk(store.clean_text(body)):
            texts.setdefault(passage_text(store.clean_title(title), piece), None)
            for sentence in textlib.sentences(piece):
                if textlib.is_prose_sentence(sentence):
                    texts.setdefault(sentence, None)
    return list(texts)


def main() -> None:
    """`python -m runloom.corpus.vectors`: rewrite the shipped cache of default embeddings.

    Stored as int8 with one scale per vector (cosine error about 1e-3, a quarter of float32).
    """
    import time
    from pathlib import Path

    embedder = Embedder()
    texts = default_texts()
    kept = shipped_cache()  # entries of the current file are reused, only new texts computed
    todo = [t for t in texts if digest(t) not in kept]
    started = time.monotonic()
    fresh = dict(zip([digest(t) for t in todo], embedder.embed(todo), strict=True))
    took = max(time.monotonic() - started, 1e-9)
    vectors = np.stack([kept[k] if k in kept else fresh[k] for k in map(digest, texts)])
    scales = np.abs(vectors).max(axis=1) / 127.0
    quantized = np.round(vectors / scales[:, None]).astype(np.int8)
    path = Path(str(resources.files("runloom.corpus") / "data" / CACHE_FILE))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        model=np.str_(MODEL_NAME),
        keys=np.array([digest(t) for t in texts]),
        vectors=quantized,
        scales=scales.astype(np.float32),
    )
    print(f"{len(todo)} of {len(texts)} texts embedded in {took:.1f} s: {path}")


if __name__ == "__main__":
    main()
