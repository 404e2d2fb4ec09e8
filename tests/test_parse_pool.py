"""Parsing is supervised: a parse that never ends or kills its process fails that feed alone,
named as such, and the collect goes on and ends. Real worker processes (spawned, as in a
collect), and real feedparser on a hostile feed served over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from digest.collect import FeedOutcome
from digest.errors import FeedError
from digest.models import ParsedFeed
from digest.parse import AUTHOR_MATCH_LIMIT, parse_feed
from digest.parse_pool import Parsers
from tests import worker_targets
from tests.conftest import LESSWRONG, FeedServer, utc
from tests.test_collect_http import Collector

FEED = (LESSWRONG / "feed-1.xml").read_bytes()
RSS = "application/rss+xml"
# Generous: a fixture feed parses in milliseconds; the deadline only has to be passed by a
# parse that never ends.
DEADLINE = 10.0


@pytest.fixture
def released() -> Iterator[None]:
    worker_targets.RELEASE.clear()
    yield
    worker_targets.RELEASE.set()  # a parse left hanging in a thread ends with the test


def parse_all(parsers: Parsers, *rounds: list[str]) -> dict[str, ParsedFeed | FeedError]:
    """Each round's feeds parsed at once, one round after another; then `close`."""

    async def one(url: str) -> ParsedFeed | FeedError:
        try:
            return await parsers.parse(FEED, url, RSS, None)
        except FeedError as exc:
            return exc

    async def every() -> dict[str, ParsedFeed | FeedError]:
        results: dict[str, ParsedFeed | FeedError] = {}
        try:
            for urls in rounds:
                # A hang guard only: with the deadline working a round takes about DEADLINE.
                got = await asyncio.wait_for(asyncio.gather(*map(one, urls)), 20 * DEADLINE)
                results.update(zip(urls, got, strict=True))
        finally:
            parsers.close()
        return results

    return asyncio.run(every())


def spawned_workers() -> dict[int, psutil.Process]:
    found = {}
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # gone meanwhile
            if "spawn_main" in " ".join(p.cmdline()):
                found[p.pid] = p
    return found


def urls(*names: str) -> list[str]:
    return [f"http://127.0.0.1/{name}.xml" for name in names]


@pytest.mark.parametrize("workers", [2, 0], ids=["processes", "threads"])
def test_a_parse_that_never_ends_fails_its_feed_and_the_others_are_parsed(
    workers: int, released: None
) -> None:
    before = spawned_workers()
    parsers = Parsers(workers, DEADLINE, target=worker_targets.hang_or_die)
    # The second round comes after the stuck parse was given up on (and, in processes, its
    # pool stopped and replaced).
    results = parse_all(parsers, urls("a", "b", "hang", "c", "d", "e"), urls("f", "g", "h"))

    stuck = results.pop("http://127.0.0.1/hang.xml")
    assert isinstance(stuck, FeedError) and stuck.kind == "parse-timeout"
    assert str(stuck) == (
        f"parsing did not finish within {DEADLINE:g}s and was abandoned (collect.parse_timeout)"
    )
    for url, result in results.items():
        assert result == parse_feed(FEED, url, RSS), url
    # No worker is left behind, stuck or not.
    left = [p for pid, p in spawned_workers().items() if pid not in before]
    _, alive = psutil.wait_procs(left, timeout=60)
    assert not alive


def test_a_worker_that_dies_fails_only_the_feed_that_killed_it() -> None:
    parsers = Parsers(2, DEADLINE, target=worker_targets.hang_or_die)
    results = parse_all(parsers, urls("a", "b", "die", "c", "d", "e", "f"), urls("g", "h"))

    dead = results.pop("http://127.0.0.1/die.xml")
    assert isinstance(dead, FeedError) and dead.kind == "parser-crash"
    assert "died" in str(dead) and "the only feed" in str(dead)
    # Its death broke the pool under the feeds parsed beside it: they were parsed again.
    for url, result in results.items():
        assert result == parse_feed(FEED, url, RSS), url


def one_item_feed(item: str) -> bytes:
    """An RSS feed with one post, linked at http://127.0.0.1/post; `item` is the rest of it."""
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>One post</title>'
        "<link>http://127.0.0.1/</link><item><title>A post</title>"
        f"<link>http://127.0.0.1/post</link>{item}</item></channel></rss>"
    ).encode()


def hostile_author_feed(length: int) -> bytes:
    """A feed whose one item has an author line that makes feedparser's e-mail search
    backtrack: quadratic in `length` (16 kB took about a second here)."""
    author = "a@" + "a." * (length // 2) + "!"
    return one_item_feed(
        f"<author>{author}</author><description>&lt;p&gt;Text.&lt;/p&gt;</description>"
    )


def collect_beside_five_feeds(
    feed_server: FeedServer, tmp_path: Path, body: bytes, parse_timeout: float
) -> dict[str, FeedOutcome]:
    """Collect the feed `body` (named "odd") and five fixture feeds: enough feeds for worker
    processes, as in a real collect. Outcomes by feed name."""
    feed_server.routes["/odd.xml"] = body
    feeds = [("odd", feed_server.url("/odd.xml"))]
    for n in range(5):
        feed_server.routes[f"/f{n}.xml"] = FEED
        feeds.append((f"f{n}", feed_server.url(f"/f{n}.xml")))
    c = Collector(tmp_path, feeds, collect=f"parse_timeout = {parse_timeout}\nprocesses = 2")
    try:
        return {o.name: o for o in c.collect(utc("2026-06-04T06:00:00"))}
    finally:
        c.store.close()


def test_a_hostile_author_line_does_not_stall_the_parse(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    # 400 kB: unbounded, the e-mail search alone would take minutes (625 times the 16 kB
    # second). The deadline makes a regression fail in 30 s instead of stalling the run.
    outcomes = collect_beside_five_feeds(
        feed_server, tmp_path, hostile_author_feed(400_000), parse_timeout=30
    )
    assert {name: o.error for name, o in outcomes.items()} == dict.fromkeys(outcomes)
    assert outcomes["odd"].new == 1
    with sqlite3.connect(tmp_path / "d.db") as db:
        (author,) = db.execute(
            "SELECT author FROM entries WHERE url = 'http://127.0.0.1/post'"
        ).fetchone()
    assert author.startswith("a@a.a.") and len(author) == AUTHOR_MATCH_LIMIT


def test_an_author_line_is_cut_only_past_the_bound() -> None:
    from digest.parse import AUTHOR_MATCH_BOUNDED

    assert AUTHOR_MATCH_BOUNDED
    long = parse_feed(hostile_author_feed(100_000), "http://127.0.0.1/h.xml", RSS)
    assert long.entries[0].author == ("a@" + "a." * AUTHOR_MATCH_LIMIT)[:AUTHOR_MATCH_LIMIT]
    # A real author line, address and all, is read as feedparser reads it.
    feed = one_item_feed("<author>Jane Doe (jane@example.org)</author>")
    assert parse_feed(feed, "http://127.0.0.1/h.xml", RSS).entries[0].author == (
        "Jane Doe (jane@example.org)"
    )


def test_a_feed_whose_html_takes_minutes_to_sanitize_fails_alone_and_the_collect_ends(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    # nh3 (html5ever) takes time quadratic in the nesting depth: 80,000 nested <div>s took 11 s
    # here, so these 250,000 (2.75 MB, under the size cap) would take about two minutes. No
    # size cap short of refusing ordinary feeds prevents that; the parse deadline contains it.
    nested = "<div>" * 250_000 + "deep" + "</div>" * 250_000
    outcomes = collect_beside_five_feeds(
        feed_server,
        tmp_path,
        one_item_feed(f"<description><![CDATA[{nested}]]></description>"),
        parse_timeout=5,
    )
    odd = outcomes.pop("odd")
    assert odd.kind == "parse-timeout"
    assert "parsing did not finish within 5s and was abandoned" in (odd.problem() or "")
    assert all(o.error is None and o.new == 10 for o in outcomes.values()), outcomes


def test_closing_while_a_parse_is_stuck_stops_its_worker_instead_of_waiting(
    released: None, tmp_path: Path
) -> None:
    # A collect torn down (an error elsewhere, a signal to the daemon) cancels its waits; the
    # stuck parse goes on in its worker, and closing must not wait for it.
    before = spawned_workers()
    parsers = Parsers(2, 3600, target=worker_targets.hang_or_die)
    started = tmp_path / "started"

    async def cancelled_mid_parse() -> None:
        url = f"http://127.0.0.1/hang.xml?started={started}"
        waiting = asyncio.ensure_future(parsers.parse(FEED, url, RSS, None))
        for _ in range(12_000):  # until a worker is in the parse (a hang guard: 120 s)
            if started.exists():
                break
            await asyncio.sleep(0.01)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting

    asyncio.run(cancelled_mid_parse())
    closing = threading.Thread(target=parsers.close, daemon=True)
    closing.start()
    closing.join(120)  # a hang guard only: closing takes a moment
    assert not closing.is_alive(), "close() waited for a parse that never ends"
    left = [p for pid, p in spawned_workers().items() if pid not in before]
    _, alive = psutil.wait_procs(left, timeout=60)
    assert not alive
