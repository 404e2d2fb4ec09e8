"""Feed text and HTML made safe for an email. Feed content is untrusted: whatever of it reaches
a digest passes through here. Pure functions, no I/O."""

from __future__ import annotations

import functools
import html
import re
import threading
from dataclasses import dataclass
from urllib.parse import urljoin

import nh3

# C0 and C1 controls (CR/LF would inject headers), line/paragraph separators (they break lines
# in some clients), bidi overrides and isolates (they make a title read backwards) and BOMs.
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]+")

ALLOWED_TAGS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "code",
        "em",
        "i",
        "li",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "strong",
        "sub",
        "sup",
        "u",
        "ul",
    }
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}}
IMAGE_ATTRIBUTES = {"src", "alt", "width", "height"}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
# Dropped with everything inside them, not just unwrapped: their text is never meant to be read.
DROPPED_WITH_CONTENT = frozenset({"script", "style", "template", "noscript", "title"})

# The widest an image may be drawn in the digest's content column.
MAX_IMAGE_WIDTH = 592
# Anything this small is a beacon or a spacer, not a picture.
MIN_IMAGE_SIDE = 16

_IMG_TAG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
# nh3 serializes attributes as name="value" with quotes escaped, so this reads its output exactly.
_ATTR = re.compile(r'([a-zA-Z-]+)="([^"]*)"')


# Pure and called for the same posts in thousands of digests per run: memoized.
@functools.lru_cache(maxsize=8192)
def clean_text(text: str) -> str:
    """One line of feed text (a title, an author, a feed name): no control characters,
    no bidi tricks, whitespace collapsed."""
    return " ".join(_UNSAFE_CHARS.sub(" ", text).split())


@functools.lru_cache(maxsize=8192)
def clean_paragraphs(text: str) -> str:
    """Plain text that may keep its paragraph breaks (a summary)."""
    paragraphs = re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "\n\n".join(p for p in (clean_text(p) for p in paragraphs) if p)


def sanitize_html(fragment: str, *, images: bool = False) -> str:
    """Feed HTML reduced to an allow-list of tags and attributes, links to http, https and
    mailto only. Images are dropped unless `images` is set, and then only https images with
    a size and alt text survive (no beacons, no spacers)."""
    attributes: dict[str, set[str]] = {k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()}
    tags = set(ALLOWED_TAGS)
    if images:
        tags.add("img")
        attributes["img"] = set(IMAGE_ATTRIBUTES)
    cleaned = nh3.clean(
        fragment,
        tags=tags,
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes=attributes,
        url_schemes=set(URL_SCHEMES),
        strip_comments=True,
        link_rel="noopener noreferrer",
    )
    if images:
        cleaned = _IMG_TAG.sub(lambda m: _image_tag(m.group(0)), cleaned)
    return cleaned


# What a stored post keeps. Wider than a digest's allow-list (structure, tables, images, and
# the class/id/aria-hidden hints the summarizer reads to skip furniture and math), but nothing
# that runs: no script, no event handlers, no styles, no forms, links to http(s)/mailto only.
STORED_TAGS = frozenset(nh3.ALLOWED_TAGS)
STORED_ATTRIBUTES: dict[str, set[str]] = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "*": {"class", "id", "title", "lang", "dir", "aria-hidden"},
}
# Dropped with what is inside: never prose, and their text is code, glyphs or form labels.
STORED_DROPPED_WITH_CONTENT = frozenset(
    {
        "script",
        "style",
        "template",
        "noscript",
        "title",
        "head",
        "svg",
        "math",
        "mjx-container",
        "iframe",
        "object",
        "embed",
        "applet",
        "form",
        "button",
        "select",
        "textarea",
        "canvas",
        "audio",
        "video",
    }
)


def sanitize_stored(fragment: str, base: str = "") -> str:
    """Feed HTML as it is stored: nothing that can run, relative links resolved against
    `base` (an absolute http(s) URL) or dropped when there is none."""
    _RELATIVE.base = base if base.startswith(("http://", "https://")) else ""
    try:
        return _stored_cleaner().clean(fragment)
    finally:
        _RELATIVE.base = ""


class _Base(threading.local):
    base = ""


# The base for the relative links of the fragment being cleaned. One cleaner serves every post
# (building one per call was half of nh3's time); the base it resolves against is set per call.
_RELATIVE = _Base()


def _resolve(url: str) -> str | None:
    base = _RELATIVE.base
    if not base:
        return None
    try:
        joined = urljoin(base, url)
    except ValueError:
        return None
    return joined if joined.startswith(("http://", "https://")) else None


@functools.cache
def _stored_cleaner() -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(STORED_TAGS),
        clean_content_tags=set(STORED_DROPPED_WITH_CONTENT),
        attributes=STORED_ATTRIBUTES,
        url_schemes=set(URL_SCHEMES),
        strip_comments=True,
        link_rel=None,
        url_relative=_resolve,
    )


def html_to_text(fragment: str) -> str:
    """The text of an HTML fragment (a title marked as HTML): tags and scripts gone."""
    return html.unescape(
        nh3.clean(fragment, tags=set(), clean_content_tags={"script", "style"}, strip_comments=True)
    )


@dataclass(frozen=True, slots=True)
class Image:
    src: str
    alt: str
    width: int
    height: int


def lead_image(fragment: str, *, limit: int = 10) -> Image | None:
    """The first picture of a post that may be shown: https, with width, height and alt,
    larger than a tracking pixel. Only the first `limit` <img> tags are looked at, each
    sanitized on its own, so a long post costs no more than a short one."""
    for count, match in enumerate(_IMG_TAG.finditer(fragment)):
        if count >= limit:
            break
        tag = sanitize_html(match.group(0), images=True)
        found = _IMG_TAG.search(tag)
        image = _acceptable(_attributes(found.group(0))) if found else None
        if image is not None:
            return image
    return None


def _attributes(tag: str) -> dict[str, str]:
    return {name.lower(): _unescape(value) for name, value in _ATTR.findall(tag)}


def _unescape(value: str) -> str:
    return (
        value.replace("&quot;", '"')
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
    )


def _acceptable(attrs: dict[str, str]) -> Image | None:
    src = attrs.get("src", "")
    alt = clean_text(attrs.get("alt", ""))
    width, height = _pixels(attrs.get("width")), _pixels(attrs.get("height"))
    if not src.startswith("https://") or not alt or width is None or height is None:
        return None
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        return None
    if width > MAX_IMAGE_WIDTH:
        height, width = round(height * MAX_IMAGE_WIDTH / width), MAX_IMAGE_WIDTH
    return Image(src=src, alt=alt, width=width, height=max(1, height))


def _image_tag(tag: str) -> str:
    image = _acceptable(_attributes(tag))
    if image is None:
        return ""
    return (
        f'<img src="{_escape(image.src)}" alt="{_escape(image.alt)}"'
        f' width="{image.width}" height="{image.height}">'
    )


def _escape(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def _pixels(value: str | None) -> int | None:
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d{1,5})\s*(?:px)?\s*", value)
    return int(match.group(1)) if match else None
