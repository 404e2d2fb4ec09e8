"""Collecting: fetch every due feed concurrently, parse in worker processes, store entries first
seen now. One bad feed is an outcome, not an exception; what the HTTP answer says about the feed
(moved, gone, slow down) is remembered for the next collect."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import chain, zip_longest
from urllib.parse import urlsplit

from digest.config import FeedSettings, Settings
from digest.discover import feed_links, looks_like_html
from digest.errors import FeedError, FeedGone
from digest.fetch import Fetcher, FetchResult, read_file
from digest.models import ParsedEntry
from digest.parse_pool import Parsers
from digest.store import FeedState, FetchRecord, Store

# A feed counts as persistently broken only after this many failed attempts in a row, however
# long it has been failing (one failure a day ago is a blip, not a pattern).
BROKEN_AFTER_ATTEMPTS = 3
GC_GEN0_THRESHOLD = 100_000


@dataclass(frozen=True, slots=True)
class FeedOutcome:
    """What one collect did with one feed.

    `error` and `kind` say why it failed this time; `failures` and `failing_since` count the
    streak, and `persistent` says the streak is long enough to call the feed broken. `skipped`
    says why it was not fetched at all (gone, or waiting out a backoff or Retry-After). `note`
    is something the operator should act on although nothing failed (moved, discovered)."""

    name: str
    new: int = 0
    error: str | None = None
    kind: str | None = None
    not_modified: bool = False
    skipped: str | None = None
    note: str | None = None
    url: str = ""
    failures: int = 0
    failing_since: datetime | None = None
    persistent: bool = False
    next_attempt: datetime | None = None

    @property
    def fetched(self) -> bool:
        return self.error is None and self.skipped is None

    def problem(self) -> str | None:
        """The line a run's summary gives this feed, if it failed."""
        if self.error is None:
            return None
        where = f"feed {self.name} ({self.url})" if self.url else f"feed {self.name}"
        if self.kind == "gone":
            return f"{where} is gone ({self.error}): no longer fetched; remove it from the config"
        later = f"; next try after {_when(self.next_attempt)}" if self.next_attempt else ""
        if self.persistent and self.failing_since is not None:
            return (
                f"{where} is persistently broken: failing since {_when(self.failing_since)},"
                f" {self.failures} attempts; last: {self.error}{later}"
            )
        return f"{where}: {self.error}{later}"


Progress = Callable[[FeedOutcome], None]


async def collect(
    settings: Settings,
    store: Store,
    feed_rows: dict[str, FeedState],
    now: datetime,
    progress: Progress | None = None,
) -> list[FeedOutcome]:
    """Collect every configured feed that is due; outcomes in config order."""
    # A collect allocates a great many short-lived objects (requests, entries, rows) and few
    # cycles: a cyclic GC pass every 700 allocations, the default, was 5% of the main process's
    # CPU in a 1,000-feed collect. Rarer passes for as long as it runs.
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], GC_GEN0_THRESHOLD), *thresholds[1:])
    try:
        return await _collect(settings, store, feed_rows, now, progress)
    finally:
        gc.set_threshold(*thresholds)


async def _collect(
    settings: Settings,
    store: Store,
    feed_rows: dict[str, FeedState],
    now: datetime,
    progress: Progress | None,
) -> list[FeedOutcome]:
    options = settings.collect
    limit = asyncio.Semaphore(options.concurrency)
    due = [f for f in settings.feeds if _skip_reason(feed_rows[f.name], now) is None]
    # Parsing is pure Python and holds the GIL: threads add nothing, worker processes add a
    # core each. A handful of feeds is not worth starting them.
    workers = options.processes or os.cpu_count() or 1
    parsers = Parsers(workers if workers > 1 and len(due) > 4 else 0, options.parse_timeout)
    outcomes: dict[str, FeedOutcome] = {}
    try:
        async with Fetcher(
            user_agent=options.user_agent,
            concurrency=options.concurrency,
            per_host=options.per_host,
            timeout=options.timeout,
            max_bytes=options.max_bytes,
            max_redirects=options.max_redirects,
            block_private=options.block_private_addresses,
        ) as fetcher:
            writer = _BatchWriter(store, now, expected=len(due))

            async def one(feed: FeedSettings) -> None:
                state = feed_rows[feed.name]
                skipped = _skip_reason(state, now)
                if skipped is not None:
                    outcome = FeedOutcome(feed.name, skipped=skipped, url=state.location)
                else:
                    outcome = await _collect_one(
                        settings, writer, state, feed.title, fetcher, now, parsers, limit
                    )
                outcomes[feed.name] = outcome
                if progress is not None:
                    progress(outcome)

            try:
                await asyncio.gather(*(one(f) for f in _interleaved_by_host(settings.feeds)))
            finally:
                writer.close()
    finally:
        parsers.close()
    return [outcomes[f.name] for f in settings.feeds]


def _interleaved_by_host(feeds: Sequence[FeedSettings]) -> list[FeedSettings]:
    """Feeds ordered host by host in turn, so the concurrency slots (taken in order) go to many
    hosts at once instead of queueing behind one host's politeness limit."""
    by_host: dict[str, list[FeedSettings]] = {}
    for feed in feeds:
        by_host.setdefault(urlsplit(feed.url).hostname or "", []).append(feed)
    rounds = zip_longest(*by_host.values())
    return [f for f in chain.from_iterable(rounds) if f is not None]


def _skip_reason(state: FeedState, now: datetime) -> str | None:
    if state.gone_at is not None:
        return f"gone since {_when(state.gone_at)} (HTTP 410)"
    if state.next_fetch_at is not None and state.next_fetch_at > now:
        return f"waiting until {_when(state.next_fetch_at)} after {state.failures} failure(s)"
    return None


class _BatchWriter:
    """Saves collected feeds a batch at a time: one transaction for up to `size` feeds, or for
    whatever finished within `delay` seconds. A commit per feed costs more than parsing a
    small feed; a batch keeps each feed's entries and state together all the same.

    Batches are written one after another by a thread of their own, so the event loop goes on
    fetching (and handing bodies to the parsers) while the database works."""

    def __init__(
        self, store: Store, now: datetime, *, expected: int, size: int = 64, delay: float = 0.25
    ) -> None:
        self._store, self._now, self._size, self._delay = store, now, size, delay
        # Feeds still to be saved: after the last one there is nothing to wait for.
        self._expected = expected
        self._batch: list[tuple[int, FetchRecord, Sequence[ParsedEntry], asyncio.Future[int]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="digest-store")
        # Feeds (their parsed entries) waiting to be written: at most a few batches.
        self._room = asyncio.Semaphore(2 * size)

    def close(self) -> None:
        # After a failure some feeds never reached `save`: no batch timer may fire after this.
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._thread.shutdown(wait=True)

    async def save(
        self, feed_id: int, record: FetchRecord, entries: Sequence[ParsedEntry] = ()
    ) -> int:
        async with self._room:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[int] = loop.create_future()
            self._batch.append((feed_id, record, entries, done))
            self._expected -= 1
            if len(self._batch) >= self._size or self._expected <= 0:
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self._delay, self._flush)
            return await done

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        written = asyncio.get_running_loop().run_in_executor(
            self._thread, self._store.save_collected, self._now, [(f, r, e) for f, r, e, _ in batch]
        )
        written.add_done_callback(lambda w: _settle(batch, w))


def _settle(
    batch: Sequence[tuple[int, FetchRecord, Sequence[ParsedEntry], asyncio.Future[int]]],
    written: asyncio.Future[list[int]],
) -> None:
    failed = written.exception()
    for i, (*_, done) in enumerate(batch):
        if done.done():  # cancelled: the collect is being torn down
            continue
        if failed is not None:
            done.set_exception(failed)
        else:
            done.set_result(written.result()[i])


@dataclass(frozen=True, slots=True)
class _Fetched:
    """A feed fetched (and parsed, if it changed), not yet stored."""

    record: FetchRecord
    entries: Sequence[ParsedEntry] = ()
    not_modified: bool = False
    note: str | None = None


async def _collect_one(
    settings: Settings,
    store: _BatchWriter,
    state: FeedState,
    title: str | None,
    fetcher: Fetcher,
    now: datetime,
    parsers: Parsers,
    limit: asyncio.Semaphore,
) -> FeedOutcome:
    try:
        # Fetching and parsing hold a concurrency slot; waiting for the batch's write does not
        # (the writer bounds how many feeds wait).
        async with limit:
            got = await _fetch_and_parse(settings, state, title, fetcher, parsers)
    except FeedError as exc:
        return await _failed(settings, store, state, now, exc)
    new = await store.save(state.id, got.record, got.entries)
    return FeedOutcome(
        state.name, new=new, not_modified=got.not_modified, note=got.note, url=state.location
    )


async def _fetch_and_parse(
    settings: Settings,
    state: FeedState,
    title: str | None,
    fetcher: Fetcher,
    parsers: Parsers,
) -> _Fetched:
    url = state.location
    fetched = await _fetch(settings, state, fetcher)
    note = None
    record = FetchRecord(etag=fetched.etag, last_modified=fetched.last_modified)
    if fetched.moved_to and fetched.moved_to != url:
        record = _moved(record, fetched.moved_to, "moved")
        note = (
            f"feed {state.name} moved permanently (HTTP 301/308) to {fetched.moved_to}:"
            " fetching it there from now on; update the config"
        )
    if fetched.data is None:
        return _Fetched(replace(record, keep_validators=True), not_modified=True, note=note)
    if looks_like_html(fetched.data, fetched.content_type):
        fetched, found = await _discover(state, fetcher, fetched)
        record = _moved(
            FetchRecord(etag=fetched.etag, last_modified=fetched.last_modified),
            found,
            "discovered",
        )
        note = (
            f"feed {state.name}: {url} is a web page; using the feed it announces,"
            f" {found} (put that URL in the config)"
        )
    assert fetched.data is not None
    body_hash = hashlib.sha256(fetched.data).hexdigest()
    record = replace(record, body_hash=body_hash)
    if body_hash == state.body_hash and record.fetch_url is None:
        # The server ignored our validators but sent the same bytes: nothing to parse.
        return _Fetched(record, not_modified=True, note=note)
    # Items unchanged since the last parse are not read again (an item's hash covers the URL
    # it was fetched from, so after a move or discovery all are).
    known = frozenset((state.item_hashes or "").split())
    parsed = await parsers.parse(fetched.data, fetched.url or url, fetched.content_type, known)
    record = replace(
        record,
        title=title or parsed.title or state.name,
        item_hashes=" ".join(parsed.item_hashes or ()),
    )
    return _Fetched(record, parsed.entries, note=note)


async def _fetch(settings: Settings, state: FeedState, fetcher: Fetcher) -> FetchResult:
    if not state.location.startswith(("http://", "https://")):
        return await asyncio.to_thread(read_file, state.location, settings.collect.max_bytes)
    return await fetcher.get(state.location, etag=state.etag, last_modified=state.last_modified)


async def _discover(
    state: FeedState, fetcher: Fetcher, page: FetchResult
) -> tuple[FetchResult, str]:
    """The feed a web page announces, fetched; FeedError if it announces none that answers."""
    assert page.data is not None
    links = feed_links(page.data, page.url or state.location)
    if not links:
        raise FeedError(
            "not a feed: an HTML page that announces no RSS/Atom feed"
            ' (no <link rel="alternate" type="application/rss+xml">)',
            kind="not-a-feed",
        )
    found = await fetcher.get(links[0], etag=None, last_modified=None)
    if found.data is None or looks_like_html(found.data, found.content_type):
        raise FeedError(
            f"not a feed: an HTML page whose announced feed {links[0]} is not a feed either",
            kind="not-a-feed",
        )
    return found, found.moved_to or links[0]


async def _failed(
    settings: Settings, store: _BatchWriter, state: FeedState, now: datetime, exc: FeedError
) -> FeedOutcome:
    failures = state.failures + 1
    since = state.failing_since or now
    options = settings.collect
    gone = isinstance(exc, FeedGone)
    if gone:
        next_attempt = None
    elif exc.retry_after is not None:
        next_attempt = now + timedelta(seconds=exc.retry_after)
    else:
        delay = min(options.retry_base_minutes * 2 ** (failures - 1), options.retry_max_hours * 60)
        next_attempt = now + timedelta(minutes=delay)
    await store.save(
        state.id,
        FetchRecord(error=str(exc), error_kind=exc.kind, gone=gone, next_fetch_at=next_attempt),
    )
    persistent = failures >= BROKEN_AFTER_ATTEMPTS and now - since >= timedelta(
        hours=options.broken_after_hours
    )
    return FeedOutcome(
        state.name,
        error=str(exc),
        kind=exc.kind,
        url=state.location,
        failures=failures,
        failing_since=since,
        persistent=persistent,
        next_attempt=next_attempt,
    )


def _moved(record: FetchRecord, url: str, reason: str) -> FetchRecord:
    return replace(record, fetch_url=url, fetch_url_reason=reason)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "?"
