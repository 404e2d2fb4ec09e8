"""Parsers for `tests/test_parse_pool.py` that really hang or really die, imported by name in
the spawned worker processes (as `digest.parse.parse_feed` is): the supervision under test
sees a worker that never answers, or one whose process is gone."""

from __future__ import annotations

import os
import threading
from collections.abc import Collection

from digest.models import ParsedFeed
from digest.parse import parse_feed

# Set by a test to let a parse that hangs in a thread (not a process) end.
RELEASE = threading.Event()


def hang_or_die(
    data: bytes, url: str, content_type: str | None = None, known: Collection[str] | None = None
) -> ParsedFeed:
    """`parse_feed`, except for a URL naming "hang" (never returns) or "die" (the process
    exits at once, as when killed for memory)."""
    if "hang" in url:
        RELEASE.wait()
        raise RuntimeError("released")
    if "die" in url:
        os._exit(70)
    return parse_feed(data, url, content_type, known)
