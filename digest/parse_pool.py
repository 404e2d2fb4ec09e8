"""Parsing off the event loop, supervised: a feed whose parse never ends, or kills the process
parsing it, fails alone instead of holding or breaking the whole collect.

feedparser is pure Python and holds the GIL, so a large collect parses in worker processes (a
core each); a handful of feeds parse in a thread. Either way each parse has a deadline. A
worker process past it is killed with its pool, and a fresh pool takes over; a thread cannot
be killed, so it is left behind (a daemon thread: it does not keep the process alive).

A worker that dies (killed for memory, a crash in C) breaks its whole pool, failing every
parse in flight there, most of them innocent. Each such feed is parsed again alone, in a
one-worker pool of its own: a second death there is that feed's own doing, and is its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Collection
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from digest.errors import FeedError
from digest.models import ParsedFeed
from digest.workers import import_module, parse_feed, spawn_pool

# `parse_feed`'s signature; tests give workers that hang or die.
ParseTarget = Callable[..., ParsedFeed]


class Parsers:
    """`parse` runs `target` (the parser) with a deadline, in `workers` processes, or in
    threads when `workers` is 0. `close` when done: it does not wait for a stuck parse."""

    def __init__(self, workers: int, deadline: float, target: ParseTarget | None = None) -> None:
        self._workers, self._deadline = workers, deadline
        self._target = target or parse_feed
        self._pool = _spawn(workers) if workers else None
        # Parses handed to the pool at once: enough to keep every worker busy, few enough that
        # a parse does not spend its deadline queued behind others.
        self._slots = asyncio.Semaphore(2 * max(workers, 1))
        self._alone: ProcessPoolExecutor | None = None
        self._alone_turn = asyncio.Lock()
        self._unfinished: set[Future[ParsedFeed]] = set()

    async def parse(
        self, data: bytes, url: str, content_type: str | None, known: Collection[str] | None
    ) -> ParsedFeed:
        args = (data, url, content_type, known)
        if self._pool is None:
            return await self._in_thread(args)
        async with self._slots:
            pool = self._pool
            try:
                return await self._in_pool(pool, args)
            except BrokenProcessPool:
                self._replace(pool)
        # The pool died under this parse or under another one: this feed again, alone.
        async with self._alone_turn:
            alone = self._alone = self._alone or _spawn(1)
            try:
                return await self._in_pool(alone, args)
            except BrokenProcessPool:
                self._replace(alone)
                raise FeedError(
                    "the parser process died reading this feed (twice: the second time it was"
                    " the only feed being parsed)",
                    kind="parser-crash",
                ) from None

    async def _in_pool(self, pool: ProcessPoolExecutor, args: tuple[Any, ...]) -> ParsedFeed:
        submitted = pool.submit(self._target, *args)
        # Until the worker is done with it: a cancelled wait does not stop the worker.
        self._unfinished.add(submitted)
        submitted.add_done_callback(self._unfinished.discard)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(submitted), self._deadline)
        except TimeoutError:
            self._replace(pool)
            raise self._too_slow() from None

    async def _in_thread(self, args: tuple[Any, ...]) -> ParsedFeed:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[ParsedFeed] = loop.create_future()

        def work() -> None:
            try:
                result = self._target(*args)
            except Exception as exc:
                settle = functools.partial(_set_exception, done, exc)
            else:
                settle = functools.partial(_set_result, done, result)
            # RuntimeError: the loop closed while this parse ran past its deadline.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

        threading.Thread(target=work, name="digest-parse", daemon=True).start()
        try:
            return await asyncio.wait_for(done, self._deadline)
        except TimeoutError:
            raise self._too_slow() from None

    def _too_slow(self) -> FeedError:
        return FeedError(
            f"parsing did not finish within {self._deadline:g}s and was abandoned"
            " (collect.parse_timeout)",
            kind="parse-timeout",
        )

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        """Stop `pool` (killing its workers, whatever they are doing) and start its successor,
        unless another parse did already. Parses still in `pool` fail as from a broken pool,
        and are tried again alone."""
        if pool is self._pool:
            self._pool = _spawn(self._workers)
        elif pool is self._alone:
            self._alone = None
        else:
            return
        _kill(pool)

    def close(self) -> None:
        # Parses still running when the collect ends were given up on (it was torn down, by
        # an error or a signal): nothing waits for them, and one may never end.
        stuck = any(not f.done() for f in list(self._unfinished))
        for pool in (self._pool, self._alone):
            if pool is None:
                continue
            if stuck:
                _kill(pool)
            else:
                pool.shutdown(wait=True)
        self._pool = self._alone = None


def _set_result(done: asyncio.Future[ParsedFeed], result: ParsedFeed) -> None:
    if not done.done():  # else given up on: the deadline passed
        done.set_result(result)


def _set_exception(done: asyncio.Future[ParsedFeed], error: Exception) -> None:
    if not done.done():
        done.set_exception(error)


def _spawn(workers: int) -> ProcessPoolExecutor:
    # Each worker imports the parser before the first feed arrives.
    return spawn_pool(workers, import_module, "digest.parse")


def _kill(pool: ProcessPoolExecutor) -> None:
    """Stop a pool without waiting for its workers: a stuck parse would never let them go.
    Parses queued there fail as from a broken pool (and are tried again), not cancelled."""
    # The executor's own processes (CPython 3.8 on; `kill_workers` only came in 3.14).
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False)
