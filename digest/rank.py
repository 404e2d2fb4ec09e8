"""Order one subscriber's candidates, best first (first version: recency and feed weight)."""

from __future__ import annotations

import math
from datetime import datetime

from digest.models import Candidate, Profile, RankedItem, Selection

HALF_LIFE_HOURS = 48.0


def _score(c: Candidate, profile: Profile, now: datetime) -> float:
    weight = profile.feed_weights.get(c.feed, c.feed_weight)
    when = c.published or c.first_seen
    age_hours = max(0.0, (now - when).total_seconds() / 3600.0)
    return weight * math.pow(0.5, age_hours / HALF_LIFE_HOURS)


def select(profile: Profile, candidates: list[Candidate], now: datetime) -> Selection:
    """Split candidates into the featured top (at most `max_items`, capped per feed) and the rest."""
    ranked = sorted(
        (RankedItem(c, _score(c, profile, now)) for c in candidates),
        key=lambda r: (-r.score, r.candidate.entry_id),
    )
    featured: list[RankedItem] = []
    more: list[RankedItem] = []
    per_feed: dict[str, int] = {}
    for item in ranked:
        feed = item.candidate.feed
        if len(featured) < profile.max_items and per_feed.get(feed, 0) < profile.per_feed_cap:
            featured.append(item)
            per_feed[feed] = per_feed.get(feed, 0) + 1
        else:
            more.append(item)
    return Selection(featured=featured, more=more)
