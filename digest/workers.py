"""Worker processes for the CPU-bound steps (parsing, summarizing): started fresh, with only
what their work needs imported. Forked, each would be a copy of this process with everything
it has loaded (SQLAlchemy, httpx, pydantic, the config, threads' locks), and count it all again
in its memory."""

from __future__ import annotations

import importlib
import multiprocessing
import sys
import types
from collections.abc import Callable, Collection
from concurrent.futures import ProcessPoolExecutor

from digest.models import ParsedFeed


def spawn_pool(workers: int, warm_up: Callable[..., object], *args: object) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes, each started now with `warm_up(*args)`: a cheap
    function of the module the work is in, so each worker imports that module (and only it)
    before the first real task arrives."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    # A spawned worker imports this command's main module too (for functions pickled from it;
    # the work is never one), which would load the whole CLI into it again. Workers started
    # while __main__ is a blank module skip that. Spawning happens in `submit`, one worker per
    # task while none is idle: these tasks start them all now.
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        for _ in range(workers):
            pool.submit(warm_up, *args)
    finally:
        sys.modules["__main__"] = main
    return pool


def import_module(name: str) -> None:
    """Import `name`: a warm-up for `spawn_pool` (it sends nothing back)."""
    importlib.import_module(name)


def parse_feed(
    data: bytes, url: str, content_type: str | None = None, known: Collection[str] | None = None
) -> ParsedFeed:
    """`digest.parse.parse_feed`, its module imported on the first call: the process that hands
    the parses to workers never loads feedparser itself."""
    from digest.parse import parse_feed as parse

    return parse(data, url, content_type, known)
