"""The summary evaluation set: LessWrong fixture posts plus references and synthetic cases.

Case kinds:
- "post": a fixture post without an author summary; reference written by hand.
- "tldr-kept": a post with an author TL;DR, as published; the summary should be the TL;DR.
- "tldr-removed": the same post with the TL;DR cut out; the TL;DR is the reference.
- "synthetic": a "post" case with three typical opening notes put before its first paragraph.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEEDS = [ROOT / "tests/fixtures/lesswrong/feed-1.xml", ROOT / "tests/fixtures/lesswrong/feed-2.xml"]
EVAL = ROOT / "tests/fixtures/summaries/eval.json"
NOTES_PER_SYNTHETIC_CASE = 3


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    title: str
    html: str
    reference: str
    boilerplate: tuple[str, ...]


def load_posts() -> dict[str, tuple[str, str]]:
    """guid -> (title, raw description HTML), styles and all, as the feed carries it."""
    posts: dict[str, tuple[str, str]] = {}
    for feed in FEEDS:
        for item in ET.parse(feed).getroot().iter("item"):
            guid = item.findtext("guid") or ""
            posts.setdefault(
                guid, (item.findtext("title") or "", item.findtext("description") or "")
            )
    return posts


def _note_prefix(html: str) -> str:
    """The visible start of a boilerplate snippet, for checking where a summary starts."""
    from digest.summarize_html import blocks_of

    blocks = blocks_of(html)
    return blocks[-1].text[:30] if blocks else ""


def _after_furniture(html: str, snippet: str) -> str:
    """`html` with `snippet` placed right after the feed's "Published on ...<br/><br/>"."""
    marker = "<br/><br/>"
    at = html.find(marker)
    at = at + len(marker) if 0 <= at < 120 else 0
    return html[:at] + snippet + html[at:]


def load_cases() -> list[Case]:
    data = json.loads(EVAL.read_text(encoding="utf-8"))
    posts = load_posts()
    generic = tuple(data["generic_boilerplate"])
    pool: list[str] = data["boilerplate_pool"]
    cases: list[Case] = []
    plain_index = 0
    for entry in data["posts"]:
        guid = entry["guid"]
        title, html = posts[guid]
        own = generic + tuple(entry["opening_boilerplate"])
        reference = entry["reference"]
        if "tldr" in entry:
            start = html.index(entry["tldr"]["start"])
            end = html.index(entry["tldr"]["end"], start) + len(entry["tldr"]["end"])
            cases.append(Case(f"{guid}/tldr-kept", "tldr-kept", title, html, reference, own))
            removed = html[:start] + html[end:]
            cases.append(
                Case(f"{guid}/tldr-removed", "tldr-removed", title, removed, reference, own)
            )
            continue
        cases.append(Case(f"{guid}/post", "post", title, html, reference, own))
        notes = [
            pool[(plain_index * NOTES_PER_SYNTHETIC_CASE + k) % len(pool)]
            for k in range(NOTES_PER_SYNTHETIC_CASE)
        ]
        plain_index += 1
        synthetic = _after_furniture(html, "".join(notes))
        marks = own + tuple(_note_prefix(n) for n in notes)
        cases.append(Case(f"{guid}/synthetic", "synthetic", title, synthetic, reference, marks))
    return cases


def starts_with_boilerplate(summary: str, case: Case) -> bool:
    head = summary.lstrip(" \"'\u201c\u2018([*_").lower()
    return any(mark and head.startswith(mark.lower().strip()) for mark in case.boilerplate)
