"""Feed discovery: when a configured URL is a web page, the feeds it announces with
`<link rel="alternate" type="application/rss+xml" href="...">`. Pure functions, no I/O."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

FEED_TYPES = (
    "application/rss+xml",
    "application/atom+xml",
    "application/feed+json",
    "application/rdf+xml",
    "application/xml",
    "text/xml",
)
# feedparser reads RSS and Atom, so those come first; JSON Feed and generic XML after.
_PREFERENCE = {t: i for i, t in enumerate(FEED_TYPES)}
_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL
)


def looks_like_html(data: bytes, content_type: str | None) -> bool:
    """A web page rather than a feed: said so by the server, or so it starts."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        return True
    return bool(_HTML_START.match(data[:2048].lstrip(b"\xef\xbb\xbf")))


class _LinkFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v or "").strip() for k, v in attrs}
        if tag == "base" and values.get("href") and self.base is None:
            self.base = values["href"]
        if tag != "link" or not values.get("href"):
            return
        rel = values.get("rel", "").lower().split()
        kind = values.get("type", "").split(";", 1)[0].strip().lower()
        if "alternate" in rel and kind in _PREFERENCE:
            self.links.append((kind, values["href"]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def feed_links(page: bytes, page_url: str) -> list[str]:
    """The absolute http(s) feed URLs a page announces, RSS and Atom first, in page order."""
    finder = _LinkFinder()
    # Only the head matters and pages can be large: links past the first 512 KB are ignored.
    finder.feed(page[:524_288].decode("utf-8", "replace"))
    finder.close()
    base = urljoin(page_url, finder.base) if finder.base else page_url
    ordered = sorted(enumerate(finder.links), key=lambda item: (_PREFERENCE[item[1][0]], item[0]))
    out: list[str] = []
    for _, (_, href) in ordered:
        url = urljoin(base, href)
        if urlsplit(url).scheme in ("http", "https") and url not in out:
            out.append(url)
    return out
