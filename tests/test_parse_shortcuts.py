"""The parser's shortcuts change its speed, never its result.

A changed feed's unchanged items are not read again: the parser is given the hashes of the
items it read last time and reads only the others. What it returns for those must be exactly
what reading the whole feed returns for them, and the store must end up as if every item had
been read. And two of feedparser's slow spots get a faster equivalent (a complete Windows-1252
table, memoized URI joins): parsing with them gives what parsing without them gives."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import digest.parse_pool
from digest.config import load_config
from digest.errors import FeedError
from digest.models import ParsedEntry
from digest.parse import parse_feed
from digest.run import collect_step
from digest.store import Store
from tests.conftest import FIXTURES, LESSWRONG, FeedServer, utc, write_config

T0 = utc("2026-06-04T06:00:00")
CORPUS = FIXTURES / "feedparser-corpus" / "corpus.tar.gz"
RSS = "application/rss+xml"


def corpus_and_lesswrong(into: Path) -> list[Path]:
    with tarfile.open(CORPUS) as archive:
        archive.extractall(into, filter="data")
    return sorted(p for p in into.rglob("*") if p.is_file()) + sorted(LESSWRONG.glob("*.xml"))


def test_each_item_read_alone_gives_what_reading_the_whole_feed_gives(tmp_path: Path) -> None:
    # For every feed of feedparser's corpus (odd encodings, xml:base, namespaces, CDATA, Atom,
    # RSS 1.0, ill-formed XML) and the LessWrong fixtures: read each item on its own (all the
    # others known), plus whatever is read with every item known; together that must be the
    # whole feed's entries.
    files = corpus_and_lesswrong(tmp_path)
    scanned = 0
    for file in files:
        data, url = file.read_bytes(), f"http://127.0.0.1/{file.name}"
        try:
            whole = parse_feed(data, url, RSS)
        except FeedError:
            continue
        first = parse_feed(data, url, RSS, known_items=frozenset())
        assert first.entries == whole.entries, file
        hashes = first.item_hashes
        if hashes is None:  # not well-formed: always read whole
            continue
        scanned += 1
        pieces: list[ParsedEntry] = list(parse_feed(data, url, RSS, frozenset(hashes)).entries)
        for i in range(len(hashes)):
            others = frozenset(hashes[:i] + hashes[i + 1 :])
            pieces += parse_feed(data, url, RSS, others).entries
        assert sorted(map(repr, pieces)) == sorted(map(repr, whole.entries)), file
    assert scanned > 1500


def test_an_item_hash_covers_the_feed_url_and_the_links_before_the_items() -> None:
    data = (LESSWRONG / "feed-1.xml").read_bytes()
    here = parse_feed(data, "https://a.example/feed", RSS, frozenset()).item_hashes
    assert here is not None and len(set(here)) == 10
    elsewhere = parse_feed(data, "https://b.example/feed", RSS, frozenset()).item_hashes
    relinked = data.replace(
        b"<link>https://www.lesswrong.com</link>", b"<link>https://lw.example</link>", 1
    )
    moved_site = parse_feed(relinked, "https://a.example/feed", RSS, frozenset()).item_hashes
    assert elsewhere is not None and moved_site is not None
    assert not set(here) & set(elsewhere) and not set(here) & set(moved_site)


def test_an_empty_item_element_makes_the_feed_read_whole() -> None:
    data = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
    <item a="x>y"/><item><title>one</title><guid>1</guid></item></channel></rss>"""
    assert parse_feed(data, "https://a.example/f", RSS, frozenset()).item_hashes is None


ITEM = re.compile(rb"<item>.*?</item>", re.S)


def items_of(feed: bytes) -> list[bytes]:
    return ITEM.findall(feed)


def test_collect_reads_only_new_and_changed_items_and_stores_the_same(
    feed_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = (LESSWRONG / "feed-1.xml").read_bytes()
    first_item, second_item = items_of(feed)[:2]
    newer = items_of((LESSWRONG / "feed-2.xml").read_bytes())[0]
    # The second version: a post added at the top, the second post edited, the rest as they
    # were, and the channel's build date changed (so the body's hash changed too).
    edited = second_item.replace(b"<br/><br/>", b"<br/><br/><p>Edited: a note.</p>", 1)
    assert edited != second_item
    changed = (
        feed.replace(first_item, newer + first_item, 1)
        .replace(second_item, edited, 1)
        .replace(b"<lastBuildDate>", b"<lastBuildDate>Fri, ", 1)
    )
    feed_server.scripted["/f.xml"] = [(200, {"Content-Type": RSS}, feed)]
    read: list[int] = []
    real = digest.parse_pool.parse_feed

    def counting(*args: Any) -> Any:
        parsed = real(*args)
        read.append(len(parsed.entries))
        return parsed

    monkeypatch.setattr(digest.parse_pool, "parse_feed", counting)
    database = tmp_path / "d.db"
    config = write_config(
        tmp_path / "config.toml",
        database=f"sqlite:///{database}",
        feeds=[("lw", feed_server.url("/f.xml"))],
        subscribers=[],
        folder="out",
    )
    settings = load_config(config)
    store = Store(settings.database_url)
    store.migrate()
    try:
        first = asyncio.run(collect_step(settings, store, T0)).feeds[0]
        assert first.new == 10 and read == [10]
        feed_server.scripted["/f.xml"] = [(200, {"Content-Type": RSS}, changed)]
        second = asyncio.run(collect_step(settings, store, utc("2026-06-04T07:00:00"))).feeds[0]
        assert second.new == 1 and read == [10, 2]
    finally:
        store.close()
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT key, content FROM entries ORDER BY id").fetchall()
    # What reading the whole second version would have stored, entry by entry.
    whole = parse_feed(changed, feed_server.url("/f.xml"), RSS).entries
    assert sorted(rows) == sorted((e.key, e.content) for e in whole)
    assert any("Edited: a note." in content for _, content in rows)


def test_the_completed_cp1252_table_translates_exactly_as_feedparsers_own() -> None:
    # digest.parse gives feedparser a complete copy of its Windows-1252 table (for speed);
    # feedparser only ever uses it with str.translate, so the same translation of every code
    # point is the same parse.
    from feedparser import html as feedparser_html
    from feedparser import mixin as feedparser_mixin

    from digest.parse import CP1252_TABLE_COMPLETED

    assert CP1252_TABLE_COMPLETED
    original = feedparser_html._cp1252
    completed = feedparser_mixin._cp1252
    assert completed is not original
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    assert every.translate(completed) == every.translate(original)
    assert "\x80\x93\x9f".translate(completed) == "\u20ac\u201c\u0178"  # € “ Ÿ


@contextlib.contextmanager
def feedparser_as_shipped() -> Iterator[None]:
    """feedparser with its own table, URI joins and author matching back, for as long as the
    block runs."""
    from feedparser import html as feedparser_html
    from feedparser import mixin as feedparser_mixin

    ours = {
        name: getattr(feedparser_mixin, name)
        for name in ("_cp1252", "make_safe_absolute_uri", "_urljoin")
    }
    mixin = feedparser_mixin._FeedParserMixin
    our_sync = mixin._sync_author_detail
    feedparser_mixin._cp1252 = feedparser_html._cp1252
    feedparser_mixin.make_safe_absolute_uri = ours["make_safe_absolute_uri"].__wrapped__
    feedparser_mixin._urljoin = ours["_urljoin"].__wrapped__
    mixin._sync_author_detail = our_sync.__wrapped__
    try:
        yield
    finally:
        for name, value in ours.items():
            setattr(feedparser_mixin, name, value)
        mixin._sync_author_detail = our_sync


def test_parsing_with_the_shortcuts_gives_what_feedparser_as_shipped_gives(
    tmp_path: Path,
) -> None:
    from digest.parse import AUTHOR_MATCH_BOUNDED, CP1252_TABLE_COMPLETED, URI_JOINS_MEMOIZED

    assert CP1252_TABLE_COMPLETED and URI_JOINS_MEMOIZED and AUTHOR_MATCH_BOUNDED
    files = corpus_and_lesswrong(tmp_path)

    def parse_all() -> list[str]:
        results = []
        for file in files:
            try:
                parsed = parse_feed(file.read_bytes(), f"http://127.0.0.1/{file.name}", RSS)
                results.append(repr(parsed))
            except FeedError as exc:
                results.append(f"error: {exc}")
        return results

    with feedparser_as_shipped():
        shipped = parse_all()
    assert parse_all() == shipped
    # xml:base in the corpus: the joins were exercised, not skipped.
    assert sum("xml_base" in f.name or "/base/" in f.as_posix() for f in files) > 50
