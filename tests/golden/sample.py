"""Fixed digests for the golden files, the visual checks and bench/render.py.

`golden_view` is written by hand to exercise the layout (long words, an ampersand, non-ASCII,
a post without a link); `fixture_view` is made from the LessWrong fixture feeds, with real
summaries, for realistic sizes."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from digest import summarize
from digest.parse import parse_feed
from digest.render import DigestView, ItemView
from digest.sanitize import clean_paragraphs, clean_text

LESSWRONG = Path(__file__).resolve().parent.parent / "fixtures" / "lesswrong"


def _item(n: int, title: str, feed: str, author: str, minutes: int, summary: str) -> ItemView:
    return ItemView(
        title=title,
        url=f"https://{feed.lower().replace(' ', '')}.example.org/posts/{n}",
        feed=feed,
        author=author,
        published=f"Thu 4 Jun 2026, 0{n % 10}:15",
        reading_minutes=minutes,
        summary=summary,
    )


def golden_view(group_by: str = "rank") -> DigestView:
    items = [
        _item(
            1,
            "Interpretability results that survived replication",
            "Alignment Forum",
            "Ada Lovelace",
            12,
            "Three of five headline results held up when rerun on fresh models. The two that "
            "failed both relied on probes trained on the evaluation set.\n\nThe authors publish "
            "their harness so others can rerun the checks.",
        ),
        _item(
            2,
            "Forecasting & calibration: a year of weekly questions",
            "LessWrong",
            "Grace Hopper",
            7,
            "Weekly forecasts over a year were well calibrated below 80% and overconfident "
            "above it; the fix that worked was writing down the base rate first.",
        ),
        _item(
            3,
            "Supercalifragilisticexpialidocious-and-other-very-long-unbreakable-words-"
            "that-must-wrap-on-a-phone",
            "Ops Notes",
            "",
            2,
            "A stress test for narrow screens: https://example.org/a/very/long/path/that/goes/"
            "on/and/on/without/any/spaces/at/all/to/break/it",
        ),
        _item(
            4,
            "Zürich notes: café-style reading groups, naïve questions welcome",
            "LessWrong",
            "Émilie du Châtelet",
            4,
            "Small groups that meet weekly read one paper each and keep a shared list of "
            "questions nobody could answer.",
        ),
        replace(
            _item(
                5,
                "A post whose link was not http(s)",
                "Ops Notes",
                "Anonymous",
                1,
                "Its link was javascript:, so the title is shown without one.",
            ),
            url="javascript:alert(1)",
        ),
        _item(
            6,
            "AI control: monitoring untrusted models with trusted ones",
            "Alignment Forum",
            "Alan Turing",
            15,
            "A trusted but weaker model reviews every action of a stronger one; the protocol "
            "catches most attacks at a small cost in usefulness.",
        ),
    ]
    more = [
        _item(7, "Open thread, June 2026", "LessWrong", "", 1, ""),
        _item(8, "Meetup: Berlin reading group", "LessWrong", "", 1, ""),
        _item(9, "Release notes 4.2", "Ops Notes", "", 1, ""),
    ]
    return DigestView(
        name="Morning Reading",
        period="daily",
        recipient="ada@example.org",
        window_start="Wed 3 Jun 2026",
        window_end="Thu 4 Jun 2026",
        items=items,
        more=more,
        group_by=group_by,
        unsubscribe_url="https://digest.example.org/unsubscribe?email=ada@example.org",
        unsubscribe_mailto="mailto:digest@example.org?subject=unsubscribe",
    )


def fixture_items() -> list[ItemView]:
    """The LessWrong fixture posts (both snapshots, each post once) with their real summaries."""
    seen: set[str] = set()
    items: list[ItemView] = []
    for name in ("feed-2.xml", "feed-1.xml"):
        feed = parse_feed((LESSWRONG / name).read_bytes(), f"file://{name}")
        for entry in feed.entries:
            if entry.key in seen:
                continue
            seen.add(entry.key)
            when = entry.published or datetime(2026, 6, 4, tzinfo=UTC)
            items.append(
                ItemView(
                    title=clean_text(entry.title),
                    url=entry.url,
                    feed="LessWrong",
                    author=clean_text(entry.author),
                    published=f"{when:%a} {when.day} {when:%b %Y}, {when:%H:%M}",
                    reading_minutes=summarize.reading_minutes(entry.content),
                    summary=clean_paragraphs(summarize.summarize(entry.title, entry.content)),
                )
            )
    return items


def fixture_view(featured: int = 20, more: int = 0) -> DigestView:
    """`featured` + `more` posts, cycling through the fixture posts over four feed names."""
    base = fixture_items()
    feeds = itertools.cycle(["LessWrong", "Alignment Forum", "EA Forum", "Astral Codex"])
    pool = [
        replace(item, feed=next(feeds), url=f"{item.url}?n={n}")
        for n, item in zip(range(featured + more), itertools.cycle(base), strict=False)
    ]
    return DigestView(
        name="Morning Reading",
        period="daily",
        recipient="ada@example.org",
        window_start="Wed 3 Jun 2026",
        window_end="Thu 4 Jun 2026",
        items=pool[:featured],
        more=pool[featured:],
        unsubscribe_url="https://digest.example.org/unsubscribe?email=ada@example.org",
        unsubscribe_mailto="mailto:digest@example.org?subject=unsubscribe",
    )
