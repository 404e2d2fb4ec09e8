"""A large batch of posts is summarized in worker processes exactly as in one process, and a
worker that dies costs its page the pool, not the run. Real spawned workers, a real SQLite store."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from digest.models import ParsedEntry, content_hash
from digest.parse import parse_feed
from digest.store import Store
from digest.summaries import POOL_MIN, _summarize_batch, features_key, summarize_pending
from tests import worker_targets
from tests.conftest import LESSWRONG, utc

NOW = utc("2026-06-04T06:00:00")


def store_with_posts(path: Path, count: int) -> Store:
    """`count` distinct posts (the fixture posts under new keys and titles), none summarized."""
    posts = [
        *parse_feed((LESSWRONG / "feed-1.xml").read_bytes(), "http://127.0.0.1/1.xml").entries,
        *parse_feed((LESSWRONG / "feed-2.xml").read_bytes(), "http://127.0.0.1/2.xml").entries,
    ]
    entries = []
    for n in range(count):
        post = posts[n % len(posts)]
        content = f"<p>Copy {n}.</p>{post.content}"
        entries.append(
            ParsedEntry(
                key=f"{post.key}-{n}",
                url=f"{post.url}?copy={n}",
                title=f"{post.title} ({n})",
                author=post.author,
                published=NOW - timedelta(hours=n),
                content=content,
                content_hash=content_hash(content),
            )
        )
    store = Store(f"sqlite:///{path}")
    store.migrate()
    feed = store.sync_feeds([("lw", "http://127.0.0.1/1.xml")])["lw"]
    store.add_entries(feed.id, entries, NOW)
    return store


def stored(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT id, summary, summary_key, reading_minutes, rank_features, features_key"
            " FROM entries ORDER BY id"
        ).fetchall()


def expected(store: Store) -> list[tuple[object, ...]]:
    """What summarizing every post in this process gives."""
    pending = store.unsummarized(NOW - timedelta(days=45), features_key(""), 0, 10_000)
    return sorted(_summarize_batch(pending))


def test_a_large_batch_is_summarized_in_workers_as_in_one_process(tmp_path: Path) -> None:
    count = POOL_MIN + 30
    store = store_with_posts(tmp_path / "d.db", count)
    try:
        want = expected(store)
        assert asyncio.run(summarize_pending(store, NOW, processes=2)) == count
    finally:
        store.close()
    assert stored(tmp_path / "d.db") == want


def test_a_dying_summarizing_worker_costs_the_page_its_pool_not_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    count = POOL_MIN + 30
    store = store_with_posts(tmp_path / "d.db", count)
    try:
        want = expected(store)
        with caplog.at_level(logging.WARNING, logger="digest.summaries"):
            made = asyncio.run(
                summarize_pending(
                    store, NOW, processes=2, batch=worker_targets.summarize_or_die_in_a_worker
                )
            )
    finally:
        store.close()
    assert made == count
    assert stored(tmp_path / "d.db") == want
    assert "a summarizing worker process died" in caplog.text
