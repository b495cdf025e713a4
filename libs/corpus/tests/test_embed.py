"""The numpy forward pass of all-MiniLM-L6-v2 against published vectors, meaning, and the cache."""

from __future__ import annotations

import numpy as np
import pytest
from runloom.corpus import embed, vectors

# sentence-transformers' output for "hello world" (first five of 384 floats), as published in
# fastembed's test suite for this model (tests/test_text_onnx_embeddings.py).
HELLO_WORLD = np.array([-0.034478, 0.03102, 0.00673, 0.02611, -0.039362])


@pytest.fixture(scope="module")
def model() -> embed.Embedder:
    return embed.shared()


def test_matches_the_reference_vectors(model) -> None:
    v = model.embed(["hello world", "flag embedding"])
    assert v.shape == (2, embed.DIMENSIONS)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.allclose(v[0, :5], HELLO_WORLD, atol=5e-4), v[0, :5]
    # Batching and padding change nothing: alone or beside a longer text, the same vector.
    alone = model.embed(["hello world"])[0]
    assert float(alone @ v[0]) > 0.9999


def test_paraphrases_are_nearer_than_shared_words(model) -> None:
    q, para, words, other = model.embed(
        [
            "How do generators work?",
            "A function containing yield returns an iterator that produces values lazily.",
            "The division operator yields the quotient of its arguments.",
            "The bakery opens at seven in the morning.",
        ]
    )
    assert float(q @ para) > float(q @ words) > float(q @ other)


def test_long_texts_are_cut_at_the_models_length(model) -> None:
    v = model.embed(["word " * 2000, ""])
    assert v.shape == (2, embed.DIMENSIONS) and np.isfinite(v).all()


def test_shipped_cache_matches_the_model(model) -> None:
    texts = vectors.default_texts()
    cache = vectors.shipped_cache()
    assert len(cache) >= len(texts) > 1000, "regenerate: python -m runloom.corpus.vectors"
    sample = [texts[0], texts[len(texts) // 2], texts[-1]]
    fresh = model.embed(sample)
    for text, vec in zip(sample, fresh, strict=True):
        assert float(cache[vectors.digest(text)] @ vec) > 0.999
