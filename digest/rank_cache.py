"""Bounded per-process caches of per-post text features shared by ranking and de-duplication.

In a run the same posts are ranked for every subscriber (`plan` calls `rank.select` once per
subscriber with overlapping candidates), so the profile-independent work on a post -- HTML
stripped, tokenized, fingerprinted, its scoring fields -- is done once per post per process
and then looked up. Entries are keyed by everything they are computed from (see `post_key`),
and an entry is only used for a post whose content starts with the part of the content the
entry was computed from (see `PostCache`), so an edited post is recomputed; the caches are LRU
and bounded.

The first subscriber of a process need not compute them either: `rank.post_features` makes a
post's features once, as bytes the store keeps, and `rank.preload` puts them in the cache.
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

PostKey = tuple[str, str, str, datetime | None, int]


def post_key(
    url: str, title: str, summary: str, published: datetime | None, content: str
) -> PostKey:
    """Where a post's cached features are looked up: its short fields and its content's length.

    The content itself (which may be large, and is read from the store afresh for every
    subscriber) is not hashed: `PostCache` compares the part of it the features depend on.
    """
    return (url, title, summary, published, len(content))


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


class PostCache(LRUCache[PostKey, tuple[str, V]]):
    """Features computed from a post, under its `post_key`, with the leading part of its
    content they depend on (the "source", see `textindex.visible_span`)."""

    def lookup(self, key: PostKey, content: str) -> V | None:
        """The features stored under `key`, if they were computed from this content."""
        got = self.get(key)
        if got is not None and content.startswith(got[0]):
            return got[1]
        return None

    def store(self, key: PostKey, source: str, value: V) -> None:
        """Keep `value`, computed from a content starting with `source`."""
        self.put(key, (source, value))


def clear_all() -> None:
    """Empty every post cache in this process (results do not change, only speed)."""
    for cache in _ALL:
        cache.clear()
