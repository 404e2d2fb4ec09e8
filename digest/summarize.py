"""The opening of a post, cut to a short summary (first version)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

WORDS_PER_MINUTE = 230
SUMMARIZER_VERSION = "0"
_SKIP = {"style", "script", "head", "title", "svg", "math"}
_BLOCK = {
    "p",
    "div",
    "br",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "tr",
    "ul",
    "ol",
}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP or tag.startswith("mjx-"):
            self._skip += 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP or tag.startswith("mjx-"):
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def paragraphs(content: str) -> list[str]:
    parser = _Text()
    parser.feed(content)
    parser.close()
    lines = (re.sub(r"\s+", " ", line).strip() for line in "".join(parser.parts).split("\n"))
    return [
        line
        for line in lines
        if line and not re.match(r"^Published on ", line) and line.lower() != "discuss"
    ]


def reading_minutes(content: str) -> int:
    words = sum(len(p.split()) for p in paragraphs(content))
    return max(1, round(words / WORDS_PER_MINUTE)) if words else 0


def summarize(title: str, content: str, max_words: int = 60) -> str:
    """First sentences of the opening, up to about `max_words`, ending at a sentence end."""
    text = " ".join(paragraphs(content))
    tldr = re.search(r"\bTL;?DR\b[:.\s-]*(.+?)(?=(?<=[.!?])\s|$)", text, re.I)
    if tldr and text.lower().find("tl") < 400:
        return tldr.group(1).strip()
    out: list[str] = []
    count = 0
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", text):
        n = len(sentence.split())
        if out and count + n > max_words:
            break
        out.append(sentence)
        count += n
    summary = " ".join(out)
    words = summary.split()
    if len(words) > max_words * 1.5:
        summary = " ".join(words[:max_words]) + " …"
    return summary
