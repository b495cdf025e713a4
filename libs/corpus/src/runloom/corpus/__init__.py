"""The document corpus: per-tenant documents, chunked, searchable with Postgres full-text search.

Shared by the gateway (the documents API) and the orchestrator (research): `store` holds the
tables' operations and search, `text` the tokenizer, sentence splitter and chunker. The
embedding modules (`embed`, `vectors`, `hybrid`: search by meaning) load numpy and are imported
by name where embeddings are made, so that storing a document does not load them.
"""

from runloom.corpus.store import (
    CHANNEL,
    MAX_DOCUMENT_CHARS,
    CorpusError,
    Document,
    DocumentTooLarge,
    Hit,
    add_document,
    delete_document,
    get_document,
    list_documents,
    search,
    seed_default_corpus,
)
from runloom.corpus.text import chunk, count_tokens, sentences, tokens

__all__ = [
    "CHANNEL",
    "MAX_DOCUMENT_CHARS",
    "CorpusError",
    "Document",
    "DocumentTooLarge",
    "Hit",
    "add_document",
    "chunk",
    "count_tokens",
    "delete_document",
    "get_document",
    "list_documents",
    "search",
    "seed_default_corpus",
    "sentences",
    "tokens",
]
