"""Bounded per-process caches of per-post text features shared by ranking and de-duplication.

In a run the same posts are ranked for every subscriber (`plan` calls `rank.select` once per
subscriber with overlapping candidates), so the profile-independent work on a post -- HTML
stripped, tokenized, fingerprinted, its scoring fields -- is done once per post per process
and then looked up. Entries are keyed by everything they are computed from (see `post_key`),
so an edited post gets a new key and is recomputed; the caches are LRU and bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Generic, TypeVar

# Per cache. A run's candidate set larger than this thrashes the LRU (no hits, same results).
POST_CACHE_SIZE = 4096

K = TypeVar("K")
V = TypeVar("V")

_ALL: list[LRUCache[object, object]] = []

PostKey = tuple[str, str, str, datetime | None, int, int]


def post_key(
    url: str, title: str, summary: str, published: datetime | None, content: str
) -> PostKey:
    """What a post's cached features are a pure function of.

    The short fields are kept as they are; the content (which may be large) by its length and
    `hash` -- salted per process, which is fine for a per-process cache.
    """
    return (url, title, summary, published, len(content), hash(content))


class LRUCache(Generic[K, V]):
    """A dict bounded to `maxsize` entries, least recently used dropped first."""

    def __init__(self, maxsize: int = POST_CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        _ALL.append(self)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        got = self._data.get(key)
        if got is not None:
            self._data.move_to_end(key)
        return got

    def put(self, key: K, value: V) -> None:
        data = self._data
        data[key] = value
        data.move_to_end(key)
        while len(data) > max(0, self.maxsize):
            data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


def clear_all() -> None:
    """Empty every post cache in this process (results do not change, only speed)."""
    for cache in _ALL:
        cache.clear()
