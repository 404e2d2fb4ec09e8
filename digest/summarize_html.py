# ruff: noqa: RUF001
# Non-ASCII punctuation and non-Latin text are used on purpose.
"""A post's HTML (or plain text) as a list of text blocks that know what they were.

The summarizer needs more than text: whether a line was a heading, a list item, a caption,
code, a table cell, or nothing but a link. The stdlib HTML parser is enough for that and
tolerates the broken markup feeds carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

# Content that is never prose: styles and scripts, MathJax/MathML/SVG renderings (their
# text is glyph soup), embedded media, forms, and page chrome that some feeds include.
_SKIP = frozenset(
    [
        "style",
        "script",
        "noscript",
        "template",
        "head",
        "title",
        "svg",
        "math",
        "iframe",
        "object",
        "embed",
        "video",
        "audio",
        "canvas",
        "figcaption",
        "button",
        "select",
        "option",
        "textarea",
        "form",
        "nav",
        "map",
    ]
)
_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
_HEADINGS = frozenset(["h1", "h2", "h3", "h4", "h5", "h6", "summary", "dt"])
_BLOCKS = frozenset(
    [
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "aside",
        "li",
        "dd",
        "blockquote",
        "pre",
        "table",
        "tr",
        "td",
        "th",
        "ul",
        "ol",
        "dl",
        "figure",
        "center",
        "details",
        "address",
        "caption",
        "hr",
        "br",
        "body",
        "html",
    ]
)
# Class or id names of containers that hold navigation, tables of contents, share buttons,
# footnotes and similar furniture rather than the post itself.
_FURNITURE_CLASS = re.compile(
    r"(?:^|[\s_-])(?:toc|table-of-contents|tableofcontents|share|sharing|social|related|"
    r"newsletter|subscribe|footnotes?|comments?|byline|author-bio|advert|ads?|sponsor|"
    r"caption|wp-caption-text|sr-only|visually-hidden|mjx-[\w-]*|MathJax\w*|katex-mathml)"
    r"(?:$|[\s_-])",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")
_TAGGED = re.compile(
    r"<(?:[a-zA-Z][\w:-]*|/[a-zA-Z][\w:-]*|!--)[^>]*>|&(?:#\d+|#x[\da-f]+|[a-z]+);", re.I
)


@dataclass(frozen=True, slots=True)
class Block:
    """One paragraph-like piece of a post.

    kind: "p", "heading", "li", "quote", "pre", "table".
    link_share: fraction of the text that sits inside links (1.0 for a bare link line).
    lead_bold: text of a bold or italic run the block opens with, e.g. a "TL;DR" label.
    group: blocks of one list share a group number, so bullets can be taken together.
    """

    kind: str
    text: str
    link_share: float = 0.0
    lead_bold: str = ""
    group: int = 0


class _BlockParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._parts: list[str] = []
        self._link_chars = 0
        self._in_link = 0
        self._skip: list[str] = []
        self._context: list[str] = []
        self._bold_depth = 0
        self._lead_bold: list[str] | None = None
        self._lead_done = False
        self._group = 0

    # -- structure -------------------------------------------------------------------
    def _kind(self) -> str:
        for tag in reversed(self._context):
            if tag in _HEADINGS:
                return "heading"
            if tag == "pre":
                return "pre"
            if tag in ("table", "tr", "td", "th", "caption"):
                return "table"
            if tag in ("li", "dd"):
                return "li"
            if tag == "blockquote":
                return "quote"
        return "p"

    def _flush(self) -> None:
        raw = "".join(self._parts)
        self._parts = []
        text = _SPACE.sub(" ", raw).strip()
        link_chars = self._link_chars
        self._link_chars = 0
        lead = _SPACE.sub(" ", "".join(self._lead_bold or [])).strip()
        self._lead_bold = None
        self._lead_done = False
        if not text:
            return
        share = min(1.0, link_chars / max(1, len(text.replace(" ", ""))))
        kind = self._kind()
        self.blocks.append(Block(kind, text, share, lead, self._group if kind == "li" else 0))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            if tag not in _VOID:
                self._skip.append(tag)
            return
        names = " ".join(v or "" for k, v in attrs if k in ("class", "id"))
        hidden = any(k == "aria-hidden" and v == "true" for k, v in attrs)
        if (
            tag in _SKIP
            or tag.startswith("mjx-")
            or hidden
            or (names and _FURNITURE_CLASS.search(names))
        ):
            if tag not in _VOID:
                self._skip.append(tag)
            return
        if tag in _BLOCKS or tag in _HEADINGS:
            self._flush()
            if tag in ("ul", "ol", "dl"):
                self._group += 1
            if tag not in _VOID:
                self._context.append(tag)
            return
        if tag == "a":
            self._in_link += 1
        elif tag in ("strong", "b", "em", "i"):
            if not self._lead_done and not "".join(self._parts).strip():
                self._lead_bold = []
            self._bold_depth += 1
        elif tag == "img":
            self._parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag in self._skip:
                while self._skip and self._skip.pop() != tag:
                    pass
            return
        if tag in _BLOCKS or tag in _HEADINGS:
            self._flush()
            if tag in self._context:
                while self._context and self._context.pop() != tag:
                    pass
            return
        if tag == "a":
            self._in_link = max(0, self._in_link - 1)
        elif tag in ("strong", "b", "em", "i"):
            self._bold_depth = max(0, self._bold_depth - 1)
            if self._bold_depth == 0 and self._lead_bold is not None:
                self._lead_done = True

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self._parts.append(data)
        if self._in_link:
            self._link_chars += len(data.replace(" ", "").replace("\n", ""))
        if self._lead_bold is not None and not self._lead_done and self._bold_depth:
            self._lead_bold.append(data)
        elif data.strip() and self._lead_bold is None:
            self._lead_done = True

    def close(self) -> None:
        super().close()
        self._flush()


_BULLET = re.compile(r"^\s*(?:[-*•‣◦▪–]|\d{1,3}[.)])\s+")
_BARE_URL = re.compile(r"^<?(?:https?://|www\.)\S+>?$", re.I)


def _plain_blocks(text: str) -> list[Block]:
    """Blocks of a plain-text post: blank lines separate paragraphs, bullets are items."""
    blocks: list[Block] = []
    group = 0
    for chunk in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [line for line in chunk.split("\n") if line.strip()]
        if not lines:
            continue
        if any(_BULLET.match(line) for line in lines):
            group += 1
            current: list[str] = []
            for line in lines:
                if _BULLET.match(line) and current:
                    blocks.append(_plain_block(" ".join(current), "li", group))
                    current = []
                current.append(_BULLET.sub("", line) if _BULLET.match(line) else line)
            if current:
                kind = "li" if _BULLET.match(lines[-1]) or len(current) < len(lines) else "p"
                blocks.append(_plain_block(" ".join(current), kind, group))
            continue
        if len(lines) > 1 and all(
            len(line.split()) <= 12 and not line.rstrip().endswith((".", "!", "?"))
            for line in lines
        ):
            # Short unpunctuated lines (a link list, a byline block) stay separate.
            blocks.extend(_plain_block(line, "p", 0) for line in lines)
            continue
        blocks.append(_plain_block(" ".join(lines), "p", 0))
    return blocks


def _plain_block(text: str, kind: str, group: int) -> Block:
    text = _SPACE.sub(" ", text).strip()
    heading = re.match(r"^#{1,6}\s+(.*)$", text)
    if heading:
        return Block("heading", heading.group(1).strip(" #"), 0.0, "", 0)
    words = text.split()
    link = sum(len(w) for w in words if _BARE_URL.match(w.strip("().,;")))
    share = link / max(1, len(text.replace(" ", "")))
    bold = re.match(r"^\*\*(.+?)\*\*|^__(.+?)__", text)
    lead = (bold.group(1) or bold.group(2)) if bold else ""
    if bold:
        text = (lead + text[bold.end() :]).strip()
    return Block(kind, text, share, lead, group if kind == "li" else 0)


_CHUNK = 8192


def blocks_of(content: str, max_words: int | None = None) -> list[Block]:
    """The post as blocks, in document order; HTML is parsed, plain text split by lines.

    With `max_words`, parsing stops soon after that many words, for callers that only need
    the opening of a long post.
    """
    if not content or not content.strip():
        return []
    if not _TAGGED.search(content):
        return _plain_blocks(content)
    parser = _BlockParser()
    try:
        for at in range(0, len(content), _CHUNK):
            parser.feed(content[at : at + _CHUNK])
            if (
                max_words is not None
                and sum(len(b.text.split()) for b in parser.blocks) > max_words
            ):
                break
        parser.close()
    except (AssertionError, ValueError):  # very old Pythons raised on some broken markup
        pass
    blocks = parser.blocks
    # A bare URL inside the text (not a link element) is a link line as well.
    return [
        Block(b.kind, b.text, 1.0, b.lead_bold, b.group) if _BARE_URL.match(b.text) else b
        for b in blocks
    ]
