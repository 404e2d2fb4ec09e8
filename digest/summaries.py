"""Summaries of stored posts, made once per post (and per summarizer version) before digests
are planned. Summarizing is pure Python and CPU-bound: a large batch goes to one worker process
per core. Collecting stays fetch, parse and store; this is the first step of planning."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from digest import rank
from digest.summarize import SUMMARIZER_VERSION, reading_minutes, summarize
from digest.workers import spawn_pool

if TYPE_CHECKING:  # workers import this module: not the store (and SQLAlchemy) with it
    from digest.store import Store

log = logging.getLogger(__name__)

# A post to summarize: (entry id, url, title, content, published, content hash) ...
Pending = tuple[int, str, str, str, datetime | None, str]
# ... and what is stored for it (see `Store.save_summaries`).
Summarized = tuple[int, str, str, int, bytes | None, str | None]
Batch = Callable[[Sequence[Pending]], list[Summarized]]

# Posts first seen longer ago than this are past any digest window; an older post that still
# reaches a digest (carried over) is summarized when it is planned.
HORIZON = timedelta(days=45)
PAGE = 2000
# Below this many posts, starting worker processes costs more than it saves.
POOL_MIN = 200
# Ranking reads a post's opening (its first ~120 words), not all of it: this many characters of
# its HTML, which is rarely shorter than that opening.
OPENING_CHARS = 12_000


def summary_key(content_hash: str) -> str:
    """What a cached summary is valid for: this content, this summarizer."""
    return f"{content_hash}:{SUMMARIZER_VERSION}"


def features_key(content_hash: str) -> str:
    """What stored ranking features are valid for: this content and summary, this ranker."""
    return f"{summary_key(content_hash)}:{rank.FEATURES_VERSION}"


async def summarize_pending(
    store: Store, now: datetime, processes: int = 0, batch: Batch | None = None
) -> int:
    """Summarize every recent post that has no summary for its current content. Returns how
    many were made. The event loop stays free while workers summarize.

    A worker that dies (killed for memory, most likely) costs its page the pool, not the run:
    that page is summarized in this process instead, and the next page gets a fresh pool.
    (`batch` is `_summarize_batch`; tests give one whose worker dies.)"""
    made = 0
    workers = processes or os.cpu_count() or 1
    work = batch or _summarize_batch
    pool: ProcessPoolExecutor | None = None
    try:
        after = 0
        suffix = features_key("")
        while page := store.unsummarized(now - HORIZON, suffix, after, PAGE):
            after = page[-1][0]
            if pool is None and workers > 1 and len(page) >= POOL_MIN:
                # `summary_key` is in this module: each worker imports it before the first page.
                pool = spawn_pool(workers, summary_key, "")
            done: list[Summarized] | None = None
            if pool is not None:
                loop = asyncio.get_running_loop()
                chunks = [page[i : i + 50] for i in range(0, len(page), 50)]
                try:
                    batches = [loop.run_in_executor(pool, work, c) for c in chunks]
                    done = [row for rows in await asyncio.gather(*batches) for row in rows]
                except BrokenProcessPool:
                    log.warning(
                        "a summarizing worker process died; summarizing %d posts in the main"
                        " process instead",
                        len(page),
                    )
                    pool.shutdown(wait=False)
                    pool = None
            if done is None:
                done = work(page)
            store.save_summaries(done)
            made += len(done)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return made


def _summarize_batch(rows: Sequence[Pending]) -> list[Summarized]:
    """Each post's summary and reading time, and its ranking features made from exactly what
    the planner will hand the ranker (the summary, and the HTML's opening)."""
    out: list[Summarized] = []
    for entry_id, url, title, content, published, digest in rows:
        summary = summarize(title, content)
        features = rank.post_features(url, title, summary, published, content[:OPENING_CHARS])
        out.append(
            (
                entry_id,
                summary,
                summary_key(digest),
                reading_minutes(content),
                features,
                features_key(digest),
            )
        )
    return out
