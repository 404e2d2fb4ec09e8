"""Plain data shared by the pure steps (clean, summarize, rank, render)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any


def content_hash(content: str) -> str:
    """What identifies a post's content: a change in it means a new summary."""
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One item of a feed as the parser saw it; `key` is its identity within the feed."""

    key: str
    url: str
    title: str
    author: str
    published: datetime | None
    content: str
    # Made by the parser (in a worker process), so the process that stores entries need not.
    content_hash: str = ""

    def __reduce__(self) -> tuple[type[ParsedEntry], tuple[Any, ...]]:
        # Entries come back from the parser processes pickled. As the class and a tuple of its
        # fields they cost half what a slotted dataclass's default (a state dict through
        # Python-level __getstate__/__setstate__) does, on both sides.
        return (ParsedEntry, _entry_fields(self))


_entry_fields = attrgetter(*(f.name for f in fields(ParsedEntry)))


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    title: str
    entries: list[ParsedEntry]
    # One hash per item of the document in order, when it was asked for and could be made:
    # given back to the parser next time, unchanged items are not read again.
    item_hashes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """An entry that may go into one subscriber's digest."""

    entry_id: int
    feed: str
    feed_title: str
    url: str
    title: str
    author: str
    published: datetime | None
    first_seen: datetime
    content: str
    summary: str
    feed_weight: float = 1.0
    reading_minutes: int = 0


@dataclass(frozen=True, slots=True)
class Profile:
    """What ranking needs to know about one subscriber."""

    interests: tuple[str, ...] = ()
    mute: tuple[str, ...] = ()
    feed_weights: Mapping[str, float] = field(default_factory=dict)
    max_items: int = 20
    per_feed_cap: int = 10
    explain: bool = False


@dataclass(frozen=True, slots=True)
class RankedItem:
    candidate: Candidate
    score: float
    reasons: tuple[str, ...] = ()
    also_in: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Selection:
    """A subscriber's digest content, best first.

    `featured` are shown in full, `more` by title only; `merged` are entry ids folded into
    another item as duplicates (they count as delivered with it).
    """

    featured: list[RankedItem]
    more: list[RankedItem]
    merged: list[int] = field(default_factory=list)

    @property
    def entry_ids(self) -> list[int]:
        return [i.candidate.entry_id for i in (*self.featured, *self.more)] + list(self.merged)


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    email: str
    period: str
    error: str | None = None
    temporary: bool = False
    suspended: bool = False


@dataclass(slots=True)
class DeliveryReport:
    """What delivering the outbox did, per digest."""

    outcomes: list[DeliveryOutcome] = field(default_factory=list)
    fatal: str | None = None  # the channel stopped us; the rest stays pending
    deferred: int = 0  # digests not attempted because the channel stopped

    @property
    def sent(self) -> int:
        return sum(1 for o in self.outcomes if o.error is None)
