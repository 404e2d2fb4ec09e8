"""Collecting: fetch every feed concurrently, parse, store entries first seen now.
One bad feed is an outcome, not an exception."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from digest.config import FeedSettings, Settings
from digest.errors import (
    FeedError,
)
from digest.fetch import Client, FetchResult, fetch_url, make_client, read_file
from digest.models import ParsedEntry
from digest.parse import parse_feed
from digest.plan import summary_key
from digest.store import (
    FeedState,
    Store,
    content_hash,
)
from digest.summarize import reading_minutes, summarize


@dataclass(frozen=True, slots=True)
class FeedOutcome:
    name: str
    new: int = 0
    error: str | None = None
    not_modified: bool = False


async def collect(
    settings: Settings, store: Store, feed_rows: dict[str, FeedState], now: datetime
) -> list[FeedOutcome]:
    limit = asyncio.Semaphore(settings.collect.concurrency)
    # Parsing and summarizing are pure Python and hold the GIL: threads add nothing, worker
    # processes add a core each. A handful of feeds is not worth starting them.
    workers = settings.collect.processes or os.cpu_count() or 1
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(settings.feeds) > 4 else None
    try:
        async with make_client(settings.collect.user_agent, settings.collect.concurrency) as client:

            async def one(feed: FeedSettings) -> FeedOutcome:
                # The whole pipeline for a feed runs under the limit, so at most `concurrency`
                # feeds' bytes and parsed entries are in memory at once, however many feeds.
                async with limit:
                    state = feed_rows[feed.name]
                    return await _collect_one(settings, store, feed, state, client, now, pool)

            return list(await asyncio.gather(*(one(f) for f in settings.feeds)))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


async def _collect_one(
    settings: Settings,
    store: Store,
    feed: FeedSettings,
    state: FeedState,
    client: Client,
    now: datetime,
    pool: Executor | None,
) -> FeedOutcome:
    loop = asyncio.get_running_loop()
    try:
        fetched = await _fetch(settings, feed, state, client)
        if fetched.data is None:
            store.record_fetch(state.id, now, error=None, keep_validators=True)
            return FeedOutcome(feed.name, not_modified=True)
        location = settings.feed_location(feed)
        parsed = await loop.run_in_executor(
            pool, parse_feed, fetched.data, location, fetched.content_type
        )
    except FeedError as exc:
        store.record_fetch(state.id, now, error=str(exc))
        return FeedOutcome(feed.name, error=f"{settings.feed_location(feed)}: {exc}")
    wanted = {e.key: summary_key(content_hash(e.content)) for e in parsed.entries}
    stale = store.stale_summaries(state.id, wanted)
    summaries = (
        await loop.run_in_executor(pool, _summaries, parsed.entries, stale, wanted) if stale else {}
    )
    new = store.add_entries(state.id, parsed.entries, now, summaries)
    store.record_fetch(
        state.id,
        now,
        error=None,
        etag=fetched.etag,
        last_modified=fetched.last_modified,
        title=feed.title or parsed.title or feed.name,
    )
    return FeedOutcome(feed.name, new=new)


def _summaries(
    entries: Sequence[ParsedEntry], stale: set[str], wanted: Mapping[str, str]
) -> dict[str, tuple[str, str, int]]:
    """Each new or changed post is summarized once, when it arrives."""
    return {
        e.key: (summarize(e.title, e.content), wanted[e.key], reading_minutes(e.content))
        for e in entries
        if e.key in stale
    }


async def _fetch(
    settings: Settings, feed: FeedSettings, state: FeedState, client: Client
) -> FetchResult:
    location = settings.feed_location(feed)
    if feed.is_local or feed.url.startswith("file://"):
        return await asyncio.to_thread(read_file, location, settings.collect.max_bytes)
    return await fetch_url(
        client,
        location,
        etag=state.etag,
        last_modified=state.last_modified,
        timeout=settings.collect.timeout,
        max_bytes=settings.collect.max_bytes,
    )
