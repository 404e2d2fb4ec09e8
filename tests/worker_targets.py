"""Work for worker processes that really hangs or really dies, imported by name in the spawned
workers (as `digest.parse.parse_feed` is): the supervision under test sees a worker that never
answers, or one whose process is gone. See `tests/test_parse_pool.py` and
`tests/test_summaries_pool.py`."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from digest.models import ParsedFeed
from digest.parse import parse_feed
from digest.summaries import Pending, Summarized, _summarize_batch

# Set by a test to let a parse that hangs in a thread (not a process) end.
RELEASE = threading.Event()


def hang_or_die(
    data: bytes, url: str, content_type: str | None = None, known: Collection[str] | None = None
) -> ParsedFeed:
    """`parse_feed`, except for a URL naming "hang" (never returns; with a query
    ``started=<path>`` it first creates that file) or "die" (the process exits at once, as when
    killed for memory)."""
    if "hang" in url:
        for started in parse_qs(urlsplit(url).query).get("started", []):
            Path(started).touch()
        RELEASE.wait()
        raise RuntimeError("released")
    if "die" in url:
        os._exit(70)
    return parse_feed(data, url, content_type, known)


def summarize_or_die_in_a_worker(rows: Sequence[Pending]) -> list[Summarized]:
    """`_summarize_batch`, except that in a worker process (not the main one) it exits at once."""
    if multiprocessing.parent_process() is not None:
        os._exit(70)
    return _summarize_batch(rows)
