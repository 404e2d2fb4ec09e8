"""The parser's shortcuts change its speed, never its result.

A changed feed's unchanged items are not read again: the parser is given the hashes of the
items it read last time and reads only the others. What it returns for those must be exactly
what reading the whole feed returns for them, and the store must end up as if every item had
been read. And feedparser's slow spots get a faster equivalent (a complete Windows-1252 table,
memoized URI joins, quick copies of content parameters, the HTML of CDATA sections handed over
as ASCII, a line break after the XML declaration): parsing with them gives what parsing without
them gives."""

from __future__ import annotations

import asyncio
import contextlib
import copy
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
    """feedparser with its own table, URI joins and author matching back, and given the
    document's bytes as they came, for as long as the block runs."""
    from feedparser import html as feedparser_html
    from feedparser import mixin as feedparser_mixin

    import digest.parse

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
    our_copy = feedparser_mixin.copy
    feedparser_mixin.copy = copy
    as_ascii = digest.parse._html_cdata_as_ascii
    line_break = digest.parse._prolog_line_break
    digest.parse._html_cdata_as_ascii = lambda data, content_type: data
    digest.parse._prolog_line_break = lambda data: data
    try:
        yield
    finally:
        for name, value in ours.items():
            setattr(feedparser_mixin, name, value)
        mixin._sync_author_detail = our_sync
        digest.parse._html_cdata_as_ascii = as_ascii
        digest.parse._prolog_line_break = line_break
        feedparser_mixin.copy = our_copy


def assert_parsed_as_shipped(documents: list[tuple[str, bytes]]) -> None:
    """Each (file name, bytes) parses, with the shortcuts, to what feedparser as shipped makes
    of it: the same entries, or the same error."""

    def parse_all() -> list[str]:
        results = []
        for name, data in documents:
            try:
                results.append(repr(parse_feed(data, f"http://127.0.0.1/{name}", RSS)))
            except FeedError as exc:
                results.append(f"error: {exc}")
        return results

    with feedparser_as_shipped():
        shipped = parse_all()
    assert parse_all() == shipped


def test_parsing_with_the_shortcuts_gives_what_feedparser_as_shipped_gives(
    tmp_path: Path,
) -> None:
    from digest.parse import (
        AUTHOR_MATCH_BOUNDED,
        CONTENT_PARAMS_COPIED_QUICKLY,
        CP1252_TABLE_COMPLETED,
        URI_JOINS_MEMOIZED,
    )

    assert CP1252_TABLE_COMPLETED and URI_JOINS_MEMOIZED and AUTHOR_MATCH_BOUNDED
    assert CONTENT_PARAMS_COPIED_QUICKLY
    files = corpus_and_lesswrong(tmp_path)
    assert_parsed_as_shipped([(file.name, file.read_bytes()) for file in files])
    # xml:base in the corpus: the joins were exercised, not skipped.
    assert sum("xml_base" in f.name or "/base/" in f.as_posix() for f in files) > 50


# Non-ASCII text of the kinds feeds carry: Latin accents, typographic quotes and dashes, a
# non-breaking space, a Windows-1252 code point, and an emoji (outside the BMP).
ACCENTED = "Caf\u00e9 \u201cquoted\u201d \u2014 it\u2019s\u00a0na\u00efve \x85 \U0001f600"


OPENERS = ("<description>", "<content:encoded>", '<content type="html">', '<summary type="html">')


def corpus_html(tmp_path: Path) -> list[str]:
    """The HTML of every entry of feedparser's corpus (hostile markup from its sanitizer tests
    included), as feedparser reads it with its sanitizer off."""
    import feedparser

    snippets: list[str] = []
    for file in corpus_and_lesswrong(tmp_path):
        parsed = feedparser.parse(
            file.read_bytes(), sanitize_html=False, resolve_relative_uris=False
        )
        for entry in parsed.get("entries") or []:
            for value in [
                entry.get("summary"),
                *(c.get("value") for c in entry.get("content") or []),
            ]:
                if isinstance(value, str) and value.strip() and "]]>" not in value:
                    snippets.append(value)
    return sorted(set(snippets))


def rss_with_cdata(html: str, opener: str) -> bytes:
    element = opener.strip("<>").split()[0]
    if " " in opener:  # Atom's <content type="html">, <summary type="html">
        return (
            '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>T</title><id>urn:f</id><entry><title><![CDATA[{ACCENTED}]]></title>"
            f'<id>urn:e</id><link href="http://127.0.0.1/p"/>{opener}<![CDATA[{html}]]>'
            f"</{element}></entry></feed>"
        ).encode()
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"'
        ' xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>T</title>'
        f"<link>http://127.0.0.1/</link><item><title><![CDATA[{ACCENTED}]]></title>"
        f"<link>http://127.0.0.1/p</link>{opener}<![CDATA[{html}]]></{element}></item>"
        "</channel></rss>"
    ).encode()


def test_html_cdata_handed_over_as_ascii_parses_as_the_original(tmp_path: Path) -> None:
    # Every corpus entry's HTML, with non-ASCII text around it, and again with every "e" made
    # an "é" (in text, tag and attribute names, entity names, URLs alike), in the CDATA of an
    # RSS description and content:encoded, an Atom html content and summary: parsed with the
    # shortcut, the entries are exactly those parsed from the document as it came.
    import digest.parse

    snippets = corpus_html(tmp_path)
    assert len(snippets) > 300
    documents = [
        rss_with_cdata(html, opener)
        for snippet in snippets
        for html in (f"{ACCENTED} {snippet} {ACCENTED}", snippet.replace("e", "\u00e9"))
        for opener in OPENERS
    ]
    rewritten = 0
    for data in documents:
        handed_over = digest.parse._html_cdata_as_ascii(data, RSS)
        rewritten += handed_over != data
        fast = parse_feed(data, "http://127.0.0.1/f.xml", RSS)
        with feedparser_as_shipped():
            shipped = parse_feed(data, "http://127.0.0.1/f.xml", RSS)
        assert fast == shipped, data
    # The shortcut was taken for most documents (not those with a <script>, <style>, ...).
    assert rewritten > 0.8 * len(documents)


@pytest.mark.parametrize(
    ("case", "data", "content_type"),
    [
        (
            "declared Latin-1",
            rss_with_cdata(f"<p>{ACCENTED[:25]}</p>", "<description>")
            .replace(b"utf-8", b"iso-8859-1")
            .decode("utf-8")
            .encode("latin-1", "replace"),
            RSS,
        ),
        (
            "text/xml without charset (US-ASCII)",
            rss_with_cdata(ACCENTED, "<description>"),
            "text/xml",
        ),
        ("a Latin-1 charset", rss_with_cdata(ACCENTED, "<description>"), f"{RSS}; charset=latin-1"),
        ("a title's CDATA", rss_with_cdata("plain", "<description>"), RSS),
        (
            "a <style> in the HTML",
            rss_with_cdata(f"<style>{ACCENTED}</style>", "<description>"),
            RSS,
        ),
        ("an <xmp> in the HTML", rss_with_cdata(f"<XMP>{ACCENTED}</XMP>", "<description>"), RSS),
        (
            "a UTF-16 document",
            rss_with_cdata(ACCENTED, "<description>").decode().encode("utf-16"),
            RSS,
        ),
    ],
)
def test_html_cdata_is_left_as_it_came_where_references_would_change_it(
    case: str, data: bytes, content_type: str
) -> None:
    # Where a character reference would not read back as the character (another encoding, a
    # text field, an HTML element whose text is raw), the document is handed over untouched.
    import digest.parse

    assert digest.parse._html_cdata_as_ascii(data, content_type) == data, case


def one_line_prolog(data: bytes) -> bytes | None:
    """`data` with its first element on the line of its XML declaration: the line break after
    the declaration taken out, or a UTF-8 declaration put in front of a document with none
    (UTF-8 already, to XML). None for a document that would then hold an `encoding=` on its
    first line after the declaration (feedparser would take that one: see `_prolog_line_break`)
    and for one in UTF-16 or UTF-32."""
    if data.startswith(b"<?xml"):
        end = data.find(b"?>") + 2
        if data[end : end + 1] not in (b"\n", b"\r"):
            return None
        head, rest = data[:end], data[end:].lstrip(b"\r\n")
    elif data.startswith(b"<") and b"\x00" not in data[:4]:
        head, rest = b'<?xml version="1.0" encoding="utf-8"?>', data
    else:
        return None
    return None if b"encoding=" in rest.split(b"\n", 1)[0] else head + rest


def test_one_line_feeds_parse_as_feedparser_parses_them(tmp_path: Path) -> None:
    # Corpus feeds (and the fixtures) with their first element on the line of the XML
    # declaration: with the line break put in for feedparser, the result (entries, or the error
    # and the line it is on) is what feedparser makes of the document as it came.
    import digest.parse

    variants = []
    for file in corpus_and_lesswrong(tmp_path):
        variant = one_line_prolog(file.read_bytes())
        if variant is not None:
            variants.append((file.name, variant))
    assert len(variants) > 1000
    assert_parsed_as_shipped(variants)
    assert all(digest.parse._prolog_line_break(data) != data for _, data in variants)


def test_an_xml_error_is_reported_on_the_line_it_is_on_in_the_feed_as_fetched() -> None:
    data = b'<?xml version="1.0"?><notes><note>\n<to>Tove</to>\n<from>Jani</to>\n</note></notes>'
    with pytest.raises(FeedError, match="XML error at line 3: mismatched tag"):
        parse_feed(data, "http://127.0.0.1/f.xml", RSS)
    with feedparser_as_shipped(), pytest.raises(FeedError, match="XML error at line 3:"):
        parse_feed(data, "http://127.0.0.1/f.xml", RSS)


def test_a_one_line_feed_is_read_by_its_declared_encoding_only() -> None:
    # feedparser looks for the encoding on the whole first line and takes the last
    # `encoding="..."` there: in a one-line feed, a post may say one. Only the declaration's
    # counts.
    data = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
        "<item><title>Caf\u00e9</title><link>http://127.0.0.1/1</link><description>"
        '<![CDATA[<p>Write <code>&lt;?xml encoding="latin-1"?&gt;</code></p>]]></description>'
        "</item></channel></rss>"
    ).encode()
    assert parse_feed(data, "http://127.0.0.1/f.xml", RSS).entries[0].title == "Caf\u00e9"


def test_quick_copies_of_content_parameters_are_what_deepcopy_makes() -> None:
    from feedparser import mixin as feedparser_mixin
    from feedparser.util import FeedParserDict

    params = FeedParserDict(type="text/html", language=None, base="http://127.0.0.1/", base64=0)
    quick = feedparser_mixin.copy.deepcopy(params)
    assert quick is not params and type(quick) is FeedParserDict
    assert quick == copy.deepcopy(params) and list(quick) == list(params)
    # Keys are set as deepcopy sets them, through FeedParserDict's key map ("url" is "href").
    mapped = FeedParserDict()
    dict.__setitem__(mapped, "url", "x")
    assert feedparser_mixin.copy.deepcopy(mapped) == copy.deepcopy(mapped) == {"href": "x"}
    # Anything holding a container is deep-copied for real.
    nested = FeedParserDict(type="text/html", values=["a"])
    deep = feedparser_mixin.copy.deepcopy(nested)
    assert deep == nested and deep["values"] is not nested["values"]
