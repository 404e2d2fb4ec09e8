"""Feed bytes to ParsedFeed. The only module that imports feedparser."""

from __future__ import annotations

import calendar
import copy
import functools
import hashlib
import html
import io
import re
import time
import xml.parsers.expat
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
from feedparser import mixin as feedparser_mixin
from feedparser import util as feedparser_util

from digest.errors import FeedError
from digest.models import ParsedEntry, ParsedFeed, content_hash
from digest.sanitize import html_to_text, sanitize_stored

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# Identity entries for code points below this (Latin, Greek, Cyrillic, punctuation, symbols).
_TRANSLATE_IDENTITY_BELOW = 0x3000


def _complete_cp1252_table() -> bool:
    """Make feedparser's text clean-up cheaper without changing its result.

    feedparser maps the 32 Windows-1252 code points of every element's text with
    `str.translate` and a dict holding only those 32. For text that is not pure ASCII, CPython
    then looks up every other character, missing, and so raises and clears a LookupError per
    character: a sixth of the parse time of an ordinary English blog feed. The same mapping
    with identity entries added translates the same way without the misses. Only done when the
    table is what we expect; returns whether it was."""
    table = getattr(feedparser_mixin, "_cp1252", None)
    if not isinstance(table, dict) or not 0 < len(table) <= 64:
        return False
    if not all(isinstance(k, int) and 0x80 <= k < 0xA0 for k in table):
        return False
    complete: dict[int, int | str] = {i: i for i in range(_TRANSLATE_IDENTITY_BELOW)}
    complete.update(table)
    feedparser_mixin._cp1252 = complete
    return True


def _memoized(join: Callable[..., str]) -> Callable[..., str]:
    cached = functools.lru_cache(maxsize=4096)(join)

    @functools.wraps(join)
    def memoized(*args: Any, **kwargs: Any) -> str:
        try:
            return cached(*args, **kwargs)
        except TypeError:  # an unhashable argument: never seen from feedparser, but possible
            return join(*args, **kwargs)

    return memoized  # functools.wraps keeps the original as `__wrapped__`


def _memoize_uri_joins() -> bool:
    """feedparser joins the current base URI with itself (or with an xml:base) at every start
    tag, through urllib's urljoin: about 130 joins per feed of 20 items, a sixth of its parse
    time, nearly all with the same two strings. Both functions are pure (strings in, a string
    out), so a cache in front of them changes nothing but the time. Only done when both are
    there as expected; returns whether they were."""
    names = ("make_safe_absolute_uri", "_urljoin")
    found: list[Callable[..., str]] = []
    for name in names:
        join = getattr(feedparser_mixin, name, None)
        if not callable(join) or hasattr(join, "__wrapped__"):
            return False
        found.append(join)
    for name, join in zip(names, found, strict=True):
        setattr(feedparser_mixin, name, _memoized(join))
    return True


# Longer than any real author line ("Name (address)", several names): see `_bound_author_match`.
AUTHOR_MATCH_LIMIT = 512


def _bound_author_match() -> bool:
    """Keep a hostile author line from stalling the parse.

    For an author without structured parts, feedparser looks for an e-mail address in the text
    with a regular expression whose nested repetition backtracks quadratically when no match is
    found: a 16 kB author takes a second, and one author of a few MB (under the size cap)
    would hold a parser for hours. feedparser 6.0.14 still does this (upstream issue 562). An
    author line past `AUTHOR_MATCH_LIMIT` characters is cut to that length before the search;
    shorter ones, every real one, are read exactly as before. Only done when the method is
    there as expected; returns whether it was."""
    mixin = getattr(feedparser_mixin, "_FeedParserMixin", None)
    sync = getattr(mixin, "_sync_author_detail", None)
    if mixin is None or not callable(sync) or hasattr(sync, "__wrapped__"):
        return False

    @functools.wraps(sync)
    def bounded(self: Any, key: str = "author") -> None:
        context = self._get_context()
        value = context.get(key)
        if isinstance(value, str) and len(value) > AUTHOR_MATCH_LIMIT:
            context[key] = value[:AUTHOR_MATCH_LIMIT]
        sync(self, key)

    mixin._sync_author_detail = bounded
    return True


# What a content element's parameters hold (type, language, base URI, base64 flag, src).
_ATOMIC = (str, bool, int, type(None))


class _ContentParamsCopy:
    """Stands in for the `copy` module in feedparser's mixin, whose only use of it is
    `copy.deepcopy(self.contentparams)` for every element with content (20-odd per item): a
    small FeedParserDict of strings and flags, which deepcopy copies slowly (8 us) through
    pickling's protocol. Such a dict is copied key by key into a new FeedParserDict, as
    deepcopy does it, without the machinery; anything else goes to deepcopy."""

    def __init__(self, feedparser_dict: type[dict[str, Any]]) -> None:
        self._feedparser_dict = feedparser_dict

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if type(value) is self._feedparser_dict and all(type(v) in _ATOMIC for v in value.values()):
            copied = self._feedparser_dict()
            for key, item in value.items():
                copied[key] = item
            return copied
        return copy.deepcopy(value, memo)


def _copy_content_params_quickly() -> bool:
    """Make feedparser's copies of content parameters cheaper without changing them (see
    `_ContentParamsCopy`). Only done when the mixin uses the `copy` module as expected;
    returns whether it was."""
    feedparser_dict = getattr(feedparser_util, "FeedParserDict", None)
    if getattr(feedparser_mixin, "copy", None) is not copy or not isinstance(feedparser_dict, type):
        return False
    feedparser_mixin.copy = _ContentParamsCopy(feedparser_dict)
    return True


# Elements feedparser always reads as HTML, as they open right before a CDATA section: RSS's
# description and content:encoded, Atom's content and summary of type html.
_HTML_CDATA_OPENERS = (
    b"<description><![CDATA[",
    b"<content:encoded><![CDATA[",
    b'<content type="html"><![CDATA[',
    b'<summary type="html"><![CDATA[',
)
# The start tags of HTML elements whose text is raw (character references in it are not
# decoded), lower-cased: searched in lower-cased text, faster than a case-blind search.
_RAW_TEXT_START = re.compile(
    rb"<(?:s(?:cript|tyle)|xmp|iframe|no(?:embed|frames|script)|plaintext)"
)
_XML_ENCODING = re.compile(rb"""\A\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']""")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([^\"';\s]+)", re.I)
_UTF8 = ("utf-8", "utf8")


def _declared_utf8(data: bytes, content_type: str | None) -> bool:
    """Whether feedparser reads `data` as UTF-8 because everything says so: no BOM but
    UTF-8's, an XML declaration naming UTF-8 or none, and a Content-Type with a UTF-8 charset
    or (not text/*, for which RFC 3023 means US-ASCII) none."""
    if data.startswith((b"\xfe\xff", b"\xff\xfe", b"\x00", b"\x4c\x6f\xa7\x94")):
        return False
    declared = _XML_ENCODING.match(data.removeprefix(b"\xef\xbb\xbf"), 0, 200)
    if declared and declared.group(1).decode("ascii", "replace").lower() not in _UTF8:
        return False
    if content_type:
        charset = _CHARSET.search(content_type)
        if charset:
            return charset.group(1).lower() in _UTF8
        if content_type.strip().lower().startswith("text/"):
            return False
    return True


def _html_cdata_as_ascii(data: bytes, content_type: str | None) -> bytes:
    """The document with every non-ASCII character of the HTML in its CDATA sections (those of
    RSS description and content:encoded, Atom html content and summary) written as a character
    reference (U+2019 as `&#8217;`).

    The same HTML, so the same entries once sanitized (the sanitizer decodes references); but
    feedparser maps the text of every element through `str.translate`, which is fast for ASCII
    text and costs tens of nanoseconds per character otherwise: for an ordinary English feed
    (typographic quotes in its posts) a sixth of its parse. Only where it provably changes
    nothing: a UTF-8 document (`_declared_utf8`), a CDATA section right inside one of those
    elements (HTML to feedparser; a title's CDATA is text, and keeps its characters),
    and no raw-text HTML element (script, style, ...) in the section, where references are
    not decoded."""
    if data.isascii() or not _declared_utf8(data, content_type):
        return data
    pieces: list[bytes] = []
    done = 0
    at = data.find(b"<![CDATA[")
    while at >= 0:
        start = at + 9
        end = data.find(b"]]>", start)
        if end < 0:
            break
        section = data[start:end]
        if (
            not section.isascii()
            and data.endswith(_HTML_CDATA_OPENERS, 0, start)
            and not _RAW_TEXT_START.search(section.lower())
        ):
            try:
                section = section.decode("utf-8").encode("ascii", "xmlcharrefreplace")
            except UnicodeDecodeError:
                return data  # not UTF-8 after all: feedparser decides how to read it
            pieces += (data[done:start], section)
            done = end
        at = data.find(b"<![CDATA[", end + 3)
    if not pieces:
        return data
    pieces.append(data[done:])
    return b"".join(pieces)


def _prolog_line_break(data: bytes) -> bytes:
    """The document with a line break after its XML declaration, when the first element follows
    it on the same line (a feed written on one line, as LessWrong's is).

    Whitespace there means nothing to XML; but feedparser looks for the declared encoding with a
    regular expression that runs to the end of the first line and back, a third of a
    millisecond for a one-line feed of 90 kB. (On that line it takes the last `encoding="..."`
    followed by a `?>`, which could be in a post's text: after the break, only the
    declaration's counts.)"""
    if not data.startswith(b"<?xml"):
        return data
    end = data.find(b"?>", 5, 300) + 2
    if end < 2 or data[end : end + 1] in (b"\n", b"\r", b""):
        return data
    return b"%b\n%b" % (data[:end], data[end:])


CP1252_TABLE_COMPLETED = _complete_cp1252_table()
URI_JOINS_MEMOIZED = _memoize_uri_joins()
AUTHOR_MATCH_BOUNDED = _bound_author_match()
CONTENT_PARAMS_COPIED_QUICKLY = _copy_content_params_quickly()


def clean_line(text: str) -> str:
    """One line of text: control characters (CR and LF included) become spaces."""
    return " ".join(_CONTROL.sub(" ", text).split())


# Pure and called for the same posts in thousands of digests per run: memoized.
@functools.lru_cache(maxsize=8192)
def safe_url(url: str, base: str = "") -> str:
    """An absolute http(s) URL, or '' for anything else (javascript:, data:, relative junk)."""
    url = clean_line(url)
    if not url:
        return ""
    if base.startswith(("http://", "https://")):
        url = urljoin(base, url)
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.hostname else ""


def _when(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed: time.struct_time | None = entry.get(key)
        if parsed:
            try:
                return datetime.fromtimestamp(calendar.timegm(parsed), tz=UTC)
            except (OverflowError, ValueError, OSError):
                continue
    return None


_HTML_TYPES = ("text/html", "application/xhtml+xml")


def _as_html(value: str, kind: str | None) -> str:
    """Feed text as HTML: markup stays markup; plain text is escaped, its blank lines kept as
    paragraph breaks."""
    if not kind or kind in _HTML_TYPES:
        return value
    paragraphs = re.split(r"\n\s*\n", value.strip())
    return "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs if p.strip())


def _content(entry: Any) -> str:
    # Full content beats the summary when a feed gives both.
    for item in entry.get("content") or []:
        value = item.get("value")
        if value:
            return _as_html(str(value), item.get("type"))
    detail = entry.get("summary_detail") or {}
    return _as_html(str(entry.get("summary") or entry.get("description") or ""), detail.get("type"))


def _text(entry: Any, key: str) -> str:
    """A one-line text field (title, author); markup in an HTML-typed field is reduced to text."""
    value = str(entry.get(key) or "")
    detail = entry.get(f"{key}_detail") or {}
    if detail.get("type") in _HTML_TYPES and "<" in value:
        value = html_to_text(value)
    return clean_line(value)


def _unreadable(data: bytes, problem: object, lines_added: int = 0) -> FeedError:
    """Why `data` is no feed. `problem` is from parsing it with `lines_added` line breaks added
    after the first line (see `_prolog_line_break`): its line numbers are told as in `data`."""
    start = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:40]
    if not start.startswith(b"<"):
        shown = start.decode("utf-8", "replace") or "nothing"
        return FeedError(
            f"not a feed: the body is not XML (it starts {shown!r})", kind="not-a-feed"
        )
    if problem is None:
        return FeedError("not a feed: no RSS or Atom elements found", kind="not-a-feed")
    line = getattr(problem, "getLineNumber", None)
    message = getattr(problem, "getMessage", None)
    if callable(line) and callable(message):
        number = line()
        if number > 1:
            number = max(1, number - lines_added)
        return FeedError(f"XML error at line {number}: {message()}", kind="xml")
    return FeedError(f"not a feed: {problem}", kind="not-a-feed")


# The elements that are a feed's posts in RSS 0.9x/2.0, RSS 1.0 and Atom.
_ITEM_NAMES = frozenset({"item", "entry"})
# Header links decide how an item's relative links resolve, so they are part of its identity.
_HEADER_LINKS = re.compile(rb"<(?:[\w.-]+:)?link\b[^>]*>(?:[^<]{0,2000}</(?:[\w.-]+:)?link>)?")


def _item_spans(data: bytes) -> tuple[bytes, list[tuple[int, int]]] | None:
    """What every item's reading depends on besides its own bytes (the root element's name and
    attributes, and the links before the first item), and the byte span of each top-level
    item/entry element; None when the document is not well-formed XML that expat reads (the
    caller then reads all of it)."""
    parser = xml.parsers.expat.ParserCreate()
    depth = 0
    item_depth = 0
    spans: list[tuple[int, int]] = []
    item_start = 0
    root = b""
    flawed = False

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, item_depth, item_start, root
        depth += 1
        if depth == 1:
            root = repr((name, sorted(attrs.items()))).encode()
        elif not item_depth and name.rpartition(":")[2] in _ITEM_NAMES:
            item_depth, item_start = depth, parser.CurrentByteIndex

    def end(name: str) -> None:
        nonlocal depth, item_depth, flawed
        if depth == item_depth:
            at = parser.CurrentByteIndex
            close = data.find(b">", at)
            # An empty `<item/>` has no end tag to find; such a rare feed is read whole.
            if not data.startswith(b"</", at) or close < 0:
                flawed = True
            spans.append((item_start, close + 1))
            item_depth = 0
        depth -= 1

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except Exception:  # ExpatError, an encoding expat lacks, a DTD it refuses: read it all
        return None
    if flawed:
        return None
    head = data[: spans[0][0]] if spans else data
    return root + b"".join(_HEADER_LINKS.findall(head)), spans


def _item_hash(context: bytes, item: bytes) -> str:
    return hashlib.blake2b(item, digest_size=8, key=context).hexdigest()


def parse_feed(
    data: bytes,
    url: str,
    content_type: str | None = None,
    known_items: Collection[str] | None = None,
) -> ParsedFeed:
    """Parse fetched bytes. Raises FeedError when they hold no feed at all.

    With `known_items` (hashes from an earlier parse's `ParsedFeed.item_hashes`), items whose
    raw bytes are unchanged since are not read again: their entries are not in the result,
    which then has only new and changed items. Reading an item is most of a parse, and a
    changed feed usually changed in one or two items of twenty."""
    item_hashes: tuple[str, ...] | None = None
    if known_items is not None:
        scanned = _item_spans(data)
        if scanned is not None:
            context, spans = scanned
            context = hashlib.blake2b(
                context + f"\x00{url}\x00{content_type}".encode(), digest_size=32
            ).digest()
            item_hashes = tuple(_item_hash(context, data[s:e]) for s, e in spans)
            if known_items:
                data = _without(data, spans, [h in known_items for h in item_hashes])
    feed = _parse(data, url, content_type)
    return ParsedFeed(feed.title, feed.entries, item_hashes)


def _without(data: bytes, spans: list[tuple[int, int]], drop: list[bool]) -> bytes:
    """The document without the spans marked to drop."""
    if not any(drop):
        return data
    pieces = []
    at = 0
    for (start, end), dropped in zip(spans, drop, strict=True):
        if dropped:
            pieces.append(data[at:start])
            at = end
    pieces.append(data[at:])
    return b"".join(pieces)


def _parse(data: bytes, url: str, content_type: str | None) -> ParsedFeed:
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    # Bytes, never a string: feedparser treats a string as a URL or path to open.
    # feedparser's sanitizer and link resolution are half its parse time; nh3 does both
    # below, faster and stricter (no forms, no tracking attributes, http(s)/mailto links only).
    readable = _html_cdata_as_ascii(data, content_type)
    given = _prolog_line_break(readable)
    parsed = feedparser.parse(
        io.BytesIO(given),
        response_headers=headers,
        sanitize_html=False,
        resolve_relative_uris=False,
    )
    feed_info = parsed.get("feed") or {}
    entries = parsed.get("entries") or []
    if not entries and not parsed.get("version"):
        # Recognised as a feed (RSS, Atom, CDF) means readable, even if empty or with warnings.
        raise _unreadable(data, parsed.get("bozo_exception"), len(given) - len(readable))
    base = safe_url(str(feed_info.get("link") or ""), url) or url
    out: list[ParsedEntry] = []
    for entry in entries:
        title = _text(entry, "title")
        link = safe_url(str(entry.get("link") or ""), base)
        content = sanitize_stored(_content(entry), link or base)
        guid = clean_line(str(entry.get("id") or ""))
        if guid:
            key = guid
        elif link:
            key = link
        else:
            key = "sha256:" + hashlib.sha256(f"{title}\x00{content}".encode()).hexdigest()
        if not (title or content.strip()):
            continue
        out.append(
            ParsedEntry(
                key=key[:1000],
                url=link,
                title=title,
                author=_text(entry, "author"),
                published=_when(entry),
                content=content,
                content_hash=content_hash(content),
            )
        )
    return ParsedFeed(title=clean_line(str(feed_info.get("title") or "")), entries=out)
