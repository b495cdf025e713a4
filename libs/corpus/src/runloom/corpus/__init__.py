"""The document corpus: per-tenant documents, chunked, searchable with Postgres full-text search.

Shared by the gateway (the documents API) and the orchestrator (research): `store` holds the
tables' operations and search, `text` the tokenizer, sentence splitter and chunker.
"""
