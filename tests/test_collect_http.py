"""What HTTP answers mean for a feed, across collects: permanent and temporary redirects, 410,
Retry-After, backoff, servers that ignore validators, web pages instead of feeds, per-host
politeness and the private-address guard. Real HTTP on 127.0.0.1, a real SQLite store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import brotli
import pytest

import digest.parse_pool
from digest.collect import FeedOutcome
from digest.config import Settings, load_config
from digest.errors import FeedError
from digest.fetch import Fetcher, _GuardedBackend
from digest.run import collect_step
from digest.status import gather, render_status
from digest.store import Store
from tests.conftest import LESSWRONG, FeedServer, utc, write_config

FEED = (LESSWRONG / "feed-1.xml").read_bytes()
T0 = utc("2026-06-04T06:00:00")


class Collector:
    """One config and store; `collect(at)` runs `digest collect` as of a time."""

    def __init__(self, tmp_path: Path, feeds: list[tuple[str, str]], collect: str = "") -> None:
        config = write_config(
            tmp_path / "config.toml",
            database=f"sqlite:///{tmp_path / 'd.db'}",
            feeds=feeds,
            subscribers=[],
            folder="out",
            collect=collect,
        )
        self.settings: Settings = load_config(config)
        self.store = Store(self.settings.database_url)
        self.store.migrate()

    def collect(self, at: datetime) -> list[FeedOutcome]:
        return asyncio.run(collect_step(self.settings, self.store, at)).feeds

    def one(self, at: datetime) -> FeedOutcome:
        (outcome,) = self.collect(at)
        return outcome

    def status_lines(self, at: datetime) -> list[str]:
        return render_status(gather(self.settings, self.store, at))


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Any]:
    made: list[Collector] = []

    def make(feeds: list[tuple[str, str]], collect: str = "") -> Collector:
        made.append(Collector(tmp_path, feeds, collect))
        return made[-1]

    yield make
    for c in made:
        c.store.close()


def ok(body: bytes = FEED, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/rss+xml", **headers}, body


def redirect(status: int, to: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Location": to}, b""


@pytest.mark.parametrize("status", [301, 308])
def test_a_permanent_redirect_moves_the_feed_and_tells_the_operator(
    status: int, feed_server: FeedServer, collector: Any
) -> None:
    feed_server.scripted["/old.xml"] = [redirect(status, "/new.xml")]
    feed_server.scripted["/new.xml"] = [ok()]
    c = collector([("lw", feed_server.url("/old.xml"))])
    first = c.one(T0)
    assert first.new == 10 and first.error is None
    assert first.note and "moved permanently" in first.note
    assert feed_server.url("/new.xml") in first.note and "update the config" in first.note
    second = c.one(T0 + timedelta(hours=1))
    assert second.note is None, "said once, not on every collect"
    assert feed_server.hits["/old.xml"] == 1 and feed_server.hits["/new.xml"] == 2
    assert any("fetched from " + feed_server.url("/new.xml") in x for x in c.status_lines(T0))


@pytest.mark.parametrize("status", [302, 307])
def test_a_temporary_redirect_is_followed_but_not_remembered(
    status: int, feed_server: FeedServer, collector: Any
) -> None:
    feed_server.scripted["/feed.xml"] = [redirect(status, "/today.xml")]
    feed_server.scripted["/today.xml"] = [ok()]
    c = collector([("lw", feed_server.url("/feed.xml"))])
    assert c.one(T0).new == 10
    assert c.one(T0 + timedelta(hours=1)).note is None
    assert feed_server.hits["/feed.xml"] == 2


def test_a_permanent_hop_after_a_temporary_one_does_not_move_the_feed(
    feed_server: FeedServer, collector: Any
) -> None:
    feed_server.scripted["/a.xml"] = [redirect(302, "/b.xml")]
    feed_server.scripted["/b.xml"] = [redirect(301, "/c.xml")]
    feed_server.scripted["/c.xml"] = [ok()]
    c = collector([("lw", feed_server.url("/a.xml"))])
    assert c.one(T0).note is None
    c.one(T0 + timedelta(hours=1))
    assert feed_server.hits["/a.xml"] == 2


def test_a_redirect_loop_stops_at_the_limit(feed_server: FeedServer, collector: Any) -> None:
    feed_server.scripted["/loop.xml"] = [redirect(302, "/loop.xml")]
    c = collector([("lw", feed_server.url("/loop.xml"))], "max_redirects = 3")
    outcome = c.one(T0)
    assert outcome.error == "more than 3 redirects"
    assert feed_server.hits["/loop.xml"] == 4


def test_410_marks_the_feed_gone_and_it_is_not_fetched_again(
    feed_server: FeedServer, collector: Any, tmp_path: Path
) -> None:
    feed_server.scripted["/gone.xml"] = [(410, {}, b"")]
    c = collector([("lw", feed_server.url("/gone.xml")), ("ok", feed_server.url("/ok.xml"))])
    feed_server.scripted["/ok.xml"] = [ok()]
    gone, fine = c.collect(T0)
    assert gone.kind == "gone" and fine.new == 10
    assert gone.problem() is not None and "remove it from the config" in (gone.problem() or "")
    later, _ = c.collect(T0 + timedelta(days=30))
    assert later.skipped and "gone since 2026-06-04 06:00 UTC" in later.skipped
    assert later.error is None, "reported once, not every run"
    assert feed_server.hits["/gone.xml"] == 1
    assert any("gone since" in line for line in c.status_lines(T0 + timedelta(days=30)))


def test_changing_a_gone_feeds_url_in_the_config_starts_it_afresh(
    feed_server: FeedServer, collector: Any
) -> None:
    feed_server.scripted["/gone.xml"] = [(410, {}, b"")]
    feed_server.scripted["/back.xml"] = [ok()]
    c = collector([("lw", feed_server.url("/gone.xml"))])
    assert c.one(T0).kind == "gone"
    moved = collector([("lw", feed_server.url("/back.xml"))])
    assert moved.one(T0 + timedelta(hours=1)).new == 10


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(status: int, feed_server: FeedServer, collector: Any) -> None:
    feed_server.scripted["/busy.xml"] = [(status, {"Retry-After": "7200"}, b""), ok()]
    c = collector([("lw", feed_server.url("/busy.xml"))])
    first = c.one(T0)
    assert first.error and f"HTTP {status}" in first.error
    assert first.next_attempt == T0 + timedelta(hours=2)
    waiting = c.one(T0 + timedelta(hours=1))
    assert waiting.skipped and waiting.error is None
    assert feed_server.hits["/busy.xml"] == 1, "no request before Retry-After has passed"
    assert c.one(T0 + timedelta(hours=2, minutes=1)).new == 10


def test_failures_back_off_exponentially_up_to_the_cap(
    feed_server: FeedServer, collector: Any
) -> None:
    feed_server.scripted["/down.xml"] = [(500, {}, b"")]
    c = collector(
        [("lw", feed_server.url("/down.xml"))], "retry_base_minutes = 10\nretry_max_hours = 2"
    )
    now, waits = T0, []
    for _ in range(6):
        outcome = c.one(now)
        assert outcome.error == "HTTP 500 Internal Server Error"
        assert outcome.next_attempt is not None
        waits.append(outcome.next_attempt - now)
        # Just before the wait is over the feed is left alone; just after, it is tried again.
        assert c.one(outcome.next_attempt - timedelta(seconds=1)).skipped
        now = outcome.next_attempt
    assert [w.total_seconds() / 60 for w in waits] == [10, 20, 40, 80, 120, 120]
    assert feed_server.hits["/down.xml"] == 6


def test_a_feed_failing_for_a_day_is_reported_as_persistently_broken(
    feed_server: FeedServer, collector: Any
) -> None:
    feed_server.scripted["/down.xml"] = [(500, {}, b"")]
    c = collector([("lw", feed_server.url("/down.xml"))], "retry_max_hours = 6")
    now, outcome = T0, c.one(T0)
    assert not outcome.persistent, "one failure is a blip"
    while now - T0 < timedelta(hours=25):
        assert outcome.next_attempt is not None
        now = outcome.next_attempt
        outcome = c.one(now)
    assert outcome.persistent
    line = outcome.problem() or ""
    assert "persistently broken: failing since 2026-06-04 06:00 UTC" in line
    assert f"{outcome.failures} attempts" in line and "HTTP 500" in line
    feed_server.scripted["/down.xml"] = [ok()]
    assert outcome.next_attempt is not None
    back = c.one(outcome.next_attempt)
    assert back.error is None and back.new == 10
    again = c.one(outcome.next_attempt + timedelta(hours=1))
    assert again.failures == 0 and again.error is None


def test_a_server_ignoring_validators_is_not_reparsed_when_the_body_is_the_same(
    feed_server: FeedServer, collector: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No ETag, no Last-Modified: every request gets the whole body again.
    feed_server.scripted["/plain.xml"] = [ok()]
    parses: list[str] = []
    real = digest.parse_pool.parse_feed

    def counting(data: bytes, url: str, *args: Any) -> Any:
        parses.append(url)
        return real(data, url, *args)

    monkeypatch.setattr(digest.parse_pool, "parse_feed", counting)
    c = collector([("lw", feed_server.url("/plain.xml"))])
    assert c.one(T0).new == 10
    second = c.one(T0 + timedelta(hours=1))
    assert second.not_modified and len(parses) == 1
    feed_server.scripted["/plain.xml"] = [ok((LESSWRONG / "feed-2.xml").read_bytes())]
    assert c.one(T0 + timedelta(hours=2)).new == 9 and len(parses) == 2


PAGE = b"""<!DOCTYPE html><html><head><title>A blog</title>
<link rel="stylesheet" href="/s.css">
<link rel="alternate" type="application/atom+xml" title="Atom" href="/atom.xml">
<link rel="alternate" type="application/rss+xml" title="RSS" href="feed.xml">
</head><body><p>Hello</p></body></html>"""


def test_a_web_page_is_replaced_by_the_feed_it_announces(
    feed_server: FeedServer, collector: Any
) -> None:
    feed_server.scripted["/blog/"] = [(200, {"Content-Type": "text/html"}, PAGE)]
    feed_server.scripted["/blog/feed.xml"] = [ok()]
    c = collector([("blog", feed_server.url("/blog/"))])
    outcome = c.one(T0)
    assert outcome.new == 10 and outcome.error is None
    # RSS and Atom are both announced; RSS is listed first in our preference, in any order.
    assert outcome.note is not None
    assert f"using the feed it announces, {feed_server.url('/blog/feed.xml')}" in outcome.note
    c.one(T0 + timedelta(hours=1))
    assert feed_server.hits["/blog/"] == 1 and feed_server.hits["/blog/feed.xml"] == 2


def test_a_web_page_without_a_feed_is_named_as_such(
    feed_server: FeedServer, collector: Any
) -> None:
    feed_server.scripted["/page"] = [(200, {"Content-Type": "text/html"}, b"<html><p>hi</p>")]
    c = collector([("page", feed_server.url("/page"))])
    outcome = c.one(T0)
    assert outcome.kind == "not-a-feed"
    assert outcome.error and "an HTML page that announces no RSS/Atom feed" in outcome.error


def test_a_brotli_body_is_decoded_and_a_brotli_bomb_stops_at_the_cap(
    feed_server: FeedServer,
) -> None:
    feed_server.scripted["/br.xml"] = [ok(brotli.compress(FEED), **{"Content-Encoding": "br"})]
    bomb = brotli.compress(b"<" * 50_000_000, quality=5)
    feed_server.scripted["/bomb.xml"] = [ok(bomb, **{"Content-Encoding": "br"})]

    async def go() -> None:
        async with Fetcher(
            user_agent="t", concurrency=2, per_host=2, timeout=10, max_bytes=1_000_000
        ) as fetcher:
            got = await fetcher.get(feed_server.url("/br.xml"), etag=None, last_modified=None)
            assert got.data == FEED
            with pytest.raises(FeedError, match="larger than 1000000 bytes"):
                await fetcher.get(feed_server.url("/bomb.xml"), etag=None, last_modified=None)

    asyncio.run(go())
    assert "br" in feed_server.requests[0][1]["accept-encoding"]


# ---- politeness and the address guard ------------------------------------------------------


@pytest.fixture
def slow_server() -> Iterator[tuple[int, dict[str, int]]]:
    """Answers every path with the fixture feed after 50 ms, recording the most requests it
    ever had in flight at once per Host header."""
    peak: dict[str, int] = {}
    in_flight: dict[str, int] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            with lock:
                in_flight[host] = in_flight.get(host, 0) + 1
                peak[host] = max(peak.get(host, 0), in_flight[host])
            time.sleep(0.05)
            with lock:
                in_flight[host] -= 1
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(FEED)))
            self.end_headers()
            self.wfile.write(FEED)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], peak
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_no_host_gets_more_than_per_host_requests_at_once(
    slow_server: tuple[int, dict[str, int]], collector: Any
) -> None:
    port, peak = slow_server
    feeds = [(f"a{n}", f"http://127.0.0.1:{port}/{n}.xml") for n in range(12)]
    feeds += [(f"b{n}", f"http://localhost:{port}/{n}.xml") for n in range(12)]
    c = collector(feeds, "concurrency = 24\nper_host = 2\nprocesses = 1")
    outcomes = c.collect(T0)
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes if o.error]
    assert set(peak) == {"127.0.0.1", "localhost"}
    assert all(1 <= n <= 2 for n in peak.values()), peak


def test_the_guard_refuses_loopback_by_address_and_by_name(
    feed_server: FeedServer, collector: Any
) -> None:
    feed_server.scripted["/f.xml"] = [ok()]
    c = collector(
        [
            ("ip", feed_server.url("/f.xml")),
            ("name", f"http://localhost:{feed_server.port}/f.xml"),
        ],
        "block_private_addresses = true",
    )
    for outcome in c.collect(T0):
        assert outcome.kind == "refused-address"
        assert outcome.error and "not a public address" in outcome.error
    assert feed_server.hits.get("/f.xml", 0) == 0


def test_the_guard_checks_every_redirect(
    feed_server: FeedServer, collector: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend 127.0.0.1 is public so the first hop is allowed; 127.0.0.2 stays private.
    monkeypatch.setattr("digest.fetch.is_public", lambda address: address == "127.0.0.1")
    feed_server.scripted["/f.xml"] = [redirect(302, f"http://127.0.0.2:{feed_server.port}/x")]
    c = collector([("lw", feed_server.url("/f.xml"))], "block_private_addresses = true")
    outcome = c.one(T0)
    assert outcome.kind == "refused-address"
    assert outcome.error and "127.0.0.2" in outcome.error
    assert feed_server.hits["/f.xml"] == 1


def test_the_guard_checks_the_address_it_connects_to(feed_server: FeedServer) -> None:
    # The check inside the connection itself (what a DNS answer that changes between the
    # pre-check and the connect would meet).
    async def go() -> None:
        with pytest.raises(FeedError, match="not a public address"):
            await _GuardedBackend().connect_tcp("127.0.0.1", feed_server.port)

    asyncio.run(go())


def test_without_the_guard_loopback_feeds_are_fetched(
    feed_server: FeedServer, collector: Any
) -> None:
    feed_server.scripted["/f.xml"] = [ok()]
    c = collector([("lw", feed_server.url("/f.xml"))])
    assert c.one(T0).new == 10


def test_a_store_that_fails_mid_collect_stops_it_with_that_error_not_a_hang(
    feed_server: FeedServer, collector: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Writes happen in a thread of their own, a batch at a time; the batch's failure must
    # reach every feed waiting on it, and the collect must end with it.
    from digest.errors import StoreError

    def failing(self: Store, *args: Any) -> list[int]:
        raise StoreError("cannot write: disk full")

    monkeypatch.setattr(Store, "save_collected", failing)
    for n in range(12):
        feed_server.scripted[f"/f{n}.xml"] = [ok()]
    c = collector([(f"f{n}", feed_server.url(f"/f{n}.xml")) for n in range(12)])

    async def guarded() -> None:  # a hang guard only: the collect takes well under a second
        await asyncio.wait_for(collect_step(c.settings, c.store, T0), 120)

    with pytest.raises(StoreError, match="disk full"):
        asyncio.run(guarded())


def test_a_database_failure_while_saving_is_a_store_error_naming_it(
    feed_server: FeedServer, collector: Any, tmp_path: Path
) -> None:
    import sqlite3

    from digest.errors import StoreError

    feed_server.scripted["/f.xml"] = [ok()]
    c = collector([("lw", feed_server.url("/f.xml"))])
    with sqlite3.connect(tmp_path / "d.db") as db:  # the table the entries go to, gone
        db.execute("ALTER TABLE entries RENAME TO entries_elsewhere")
    with pytest.raises(
        StoreError, match=r"cannot save collected feeds to .*no such table: entries"
    ):
        c.collect(T0)


def test_the_collect_collects_garbage_rarely_and_restores_the_thresholds_after(
    feed_server: FeedServer, collector: Any
) -> None:
    import gc

    from digest.collect import GC_GEN0_THRESHOLD

    feed_server.scripted["/f.xml"] = [ok()]
    c = collector([("lw", feed_server.url("/f.xml"))])
    before = gc.get_threshold()
    seen: list[int] = []
    asyncio.run(
        collect_step(c.settings, c.store, T0, progress=lambda _: seen.append(gc.get_threshold()[0]))
    )
    assert seen == [max(before[0], GC_GEN0_THRESHOLD)]
    assert gc.get_threshold() == before
