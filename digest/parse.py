"""Feed bytes to ParsedFeed. The only module that imports feedparser."""

from __future__ import annotations

import calendar
import functools
import hashlib
import io
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser

from digest.errors import FeedError
from digest.models import ParsedEntry, ParsedFeed

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


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


def _content(entry: Any) -> str:
    # Full content beats the summary when a feed gives both.
    for item in entry.get("content") or []:
        value = item.get("value")
        if value:
            return str(value)
    return str(entry.get("summary") or entry.get("description") or "")


def parse_feed(data: bytes, url: str, content_type: str | None = None) -> ParsedFeed:
    """Parse fetched bytes. Raises FeedError when they hold no feed at all."""
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    # Bytes, never a string: feedparser treats a string as a URL or path to open.
    # Its own sanitizer is skipped: content is sanitized with nh3 when rendered.
    parsed = feedparser.parse(
        io.BytesIO(data),
        response_headers=headers,
        sanitize_html=False,
        resolve_relative_uris=True,
    )
    feed_info = parsed.get("feed") or {}
    entries = parsed.get("entries") or []
    if not entries and (parsed.get("bozo") or not parsed.get("version")):
        reason = parsed.get("bozo_exception") or "no RSS or Atom elements found"
        raise FeedError(f"not a readable RSS/Atom feed ({reason})")
    base = feed_info.get("link") or url
    out: list[ParsedEntry] = []
    for entry in entries:
        title = clean_line(str(entry.get("title") or ""))
        content = _content(entry)
        link = safe_url(str(entry.get("link") or ""), base)
        guid = clean_line(str(entry.get("id") or ""))
        if guid:
            key = guid
        elif link:
            key = link
        else:
            key = "sha256:" + hashlib.sha256(f"{title}\x00{content}".encode()).hexdigest()
        if not (title or content):
            continue
        out.append(
            ParsedEntry(
                key=key[:1000],
                url=link,
                title=title,
                author=clean_line(str(entry.get("author") or "")),
                published=_when(entry),
                content=content,
            )
        )
    return ParsedFeed(title=clean_line(str(feed_info.get("title") or "")), entries=out)
