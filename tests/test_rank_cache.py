"""The per-process post cache (digest.rank_cache) changes speed, never results."""

from __future__ import annotations

import gc
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

import digest.rank as rank_module
from digest import dedup, rank_cache
from digest.models import Candidate, Profile, Selection
from digest.rank import rank, select
from digest.textindex import chunks, opening_span, visible_span, visible_text

from .test_rank import fixture_posts

NOW = datetime(2026, 6, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def lexical_only() -> Iterator[None]:
    rank_module.set_semantic(False)
    rank_module.clear_post_cache()
    yield
    rank_module.clear_post_cache()
    rank_module.set_semantic(None)


def candidates() -> list[Candidate]:
    """The fixture posts, plus copies of some from a second feed (merged by dedup)."""
    out = []
    for i, p in enumerate(fixture_posts()):
        when = datetime.fromisoformat(p["published"])
        out.append(
            Candidate(
                entry_id=i,
                feed=f"feed{i % 3}",
                feed_title=f"Feed {i % 3}",
                url=p["url"],
                title=p["title"],
                author="",
                published=when,
                first_seen=when,
                content=p["content"],
                summary="",
            )
        )
    for c in out[:5]:
        out.append(replace(c, entry_id=c.entry_id + 100, feed="mirror", url=c.url + "?utm_x=1"))
    return out


def snapshot(sel: Selection) -> tuple[object, ...]:
    def item(it: object) -> tuple[object, ...]:
        assert isinstance(it, rank_module.RankedItem)
        return (it.candidate.entry_id, repr(it.score), it.reasons, it.also_in)

    return (
        tuple(item(i) for i in sel.featured),
        tuple(item(i) for i in sel.more),
        tuple(sel.merged),
    )


PROFILES = [
    Profile(interests=("interpretability", "AI control"), mute=("open thread",), per_feed_cap=2),
    Profile(interests=("AI policy", "rationality", "writing"), max_items=5),
    Profile(interests=()),
]


def test_warm_cache_gives_the_same_output_as_a_cold_one() -> None:
    cands = candidates()
    cold = []
    for profile in PROFILES:
        rank_module.clear_post_cache()
        cold.append(snapshot(select(profile, cands, NOW)))
    assert len(rank_module._POSTS) > 0
    # Warm: every post cached by the calls before, for each profile, twice, in any order.
    for _ in range(2):
        for profile, expected in reversed(list(zip(PROFILES, cold, strict=True))):
            assert snapshot(select(profile, cands, NOW)) == expected
    # A subset and a reordering of the same (cached) posts gives what a cold call gives.
    part = cands[::-2]
    warm_part = snapshot(select(PROFILES[0], part, NOW))
    rank_module.clear_post_cache()
    assert snapshot(select(PROFILES[0], part, NOW)) == warm_part


def test_dict_apis_give_the_same_output_warm_and_cold() -> None:
    posts = fixture_posts()
    entries = [dict(p, entry_id=p["id"], feed="f") for p in posts]
    cold_rank = rank(["interpretability", "scheming"], posts)
    cold_group = dedup.group(entries)
    assert len(dedup._RECORDS) == len(posts)
    assert rank(["interpretability", "scheming"], posts) == cold_rank
    assert dedup.group(entries) == cold_group
    assert rank(["AI policy"], posts) == rank(["AI policy"], posts)


def two_notes(content: str) -> tuple[Candidate, Candidate]:
    """Post 1 of a blog with `content`, and a second post of the same blog."""
    a = Candidate(
        entry_id=1,
        feed="blog",
        feed_title="Blog",
        url="https://blog.example/posts/1",
        title="Weekly notes",
        author="",
        published=NOW - timedelta(hours=1),
        first_seen=NOW,
        content=content,
        summary="",
    )
    return a, replace(a, entry_id=2, url="https://blog.example/posts/2", title="Other notes")


def test_an_edited_post_is_not_served_stale() -> None:
    profile = Profile(interests=("corrigibility",))
    a, b = two_notes("<p>Gardening tips for the spring season and some recipes.</p>")
    before = select(profile, [a, b], NOW)
    assert all(not it.reasons for it in before.featured)
    # Same entry id, url, title and date; only the content changed.
    edited = replace(a, content="<p>Corrigibility and the shutdown problem, revisited.</p>")
    after = select(profile, [edited, b], NOW)
    assert after.featured[0].candidate.entry_id == 1
    assert after.featured[0].reasons == ("matches: corrigibility",)
    rank_module.clear_post_cache()
    assert snapshot(select(profile, [edited, b], NOW)) == snapshot(after)
    # Summary and title edits count too.
    retitled = replace(a, title="Corrigibility notes")
    assert select(profile, [retitled, b], NOW).featured[0].reasons == ("matches: corrigibility",)
    summarised = replace(a, summary="On corrigibility.")
    assert select(profile, [summarised, b], NOW).featured[0].reasons


def test_edited_dict_post_is_not_served_stale_by_rank_or_group() -> None:
    base = {"id": "p", "title": "Notes", "url": "https://x.example/p", "feed": "f"}
    other = {"id": "q", "title": "More", "url": "https://x.example/q", "feed": "f"}
    text = " ".join(f"word{i}" for i in range(40))
    posts = [
        dict(base, published="2026-06-01T00:00:00+00:00", content="<p>unrelated</p>"),
        dict(other, published="2026-06-01T00:00:00+00:00", content=f"<p>{text}</p>"),
    ]
    assert rank(["corrigibility"], posts)[0] == "q"  # no match: the longer post first
    posts[0] = dict(posts[0], content="<p>corrigibility corrigibility</p>")
    assert rank(["corrigibility"], posts)[0] == "p"
    entries = [
        {"entry_id": 1, "url": "https://a.example/1", "title": "A", "content": f"<p>{text}</p>"},
        {"entry_id": 2, "url": "https://b.example/2", "title": "B", "content": f"<p>{text}</p>"},
    ]
    assert dedup.group(entries) == ["g0", "g0"]  # same text: one post
    entries[1] = dict(entries[1], content="<p>" + " ".join(f"other{i}" for i in range(40)))
    assert dedup.group(entries) == ["g0", "g1"]


def test_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    cache: rank_cache.LRUCache[int, str] = rank_cache.LRUCache(maxsize=3)
    for i in range(5):
        cache.put(i, str(i))
    assert len(cache) == 3
    assert cache.get(0) is None and cache.get(1) is None
    assert cache.get(2) == "2"  # now the most recently used
    cache.put(5, "5")
    assert cache.get(3) is None and cache.get(2) == "2"
    assert rank_module._POSTS.maxsize == rank_cache.POST_CACHE_SIZE > 0
    assert dedup._RECORDS.maxsize == rank_cache.POST_CACHE_SIZE


def test_post_cache_stays_bounded_in_select(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_module._POSTS, "maxsize", 4)
    cands = candidates()
    expected = snapshot(select(PROFILES[0], cands, NOW))
    assert len(rank_module._POSTS) == 4
    # With a cache too small for the digest (every lookup a miss), the same output.
    assert snapshot(select(PROFILES[0], cands, NOW)) == expected
    assert len(rank_module._POSTS) == 4


def test_select_restores_the_garbage_collector_state() -> None:
    cands = candidates()
    assert gc.isenabled()
    select(PROFILES[0], cands, NOW)
    assert gc.isenabled()
    gc.disable()
    try:
        select(PROFILES[0], cands, NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()


# Pieces of HTML that exercise what `visible_span` and `opening_span` treat specially.
HTML_PIECES = [
    "Published on May 5, 2026",
    "<br/>",
    "<br>",
    " ",
    "\n",
    "<p>",
    "</p>",
    "words and more words ",
    "&amp;",
    "<script>",
    "</script>",
    "<style>",
    "</style >",
    '<a href="https://x.example/p#comments">Discuss</a>',
    "<",
    ">",
    "br",
]


def html_filler(rng: random.Random, pieces: list[str]) -> Callable[[int], str]:
    def fill(n: int) -> str:
        out = ""
        while len(out) < n:
            out += rng.choice(pieces)
        return out[:n]

    return fill


def test_visible_span_covers_everything_the_visible_text_depends_on() -> None:
    """Any content of the same length that starts with the span gives the same visible text
    (what lets the post caches compare openings instead of hashing whole contents)."""
    rng = random.Random(0)
    fill = html_filler(rng, HTML_PIECES)
    for _ in range(3000):
        budget = rng.choice([30, 100, 400])
        raw = fill(rng.choice([20, 80, 300, 900]))
        text, used = visible_span(raw, budget)
        assert text == visible_text(raw, budget)
        assert 0 <= used <= len(raw)
        for _ in range(3):
            other = raw[:used] + fill(len(raw) - used)
            assert visible_text(other, budget) == text, (raw, other)


def test_opening_span_is_the_start_of_the_visible_text_and_covers_what_it_depends_on() -> None:
    """`opening_span` reads a window of the HTML when its words are there: they are the
    visible text's first words all the same, and any content of the same length that starts
    with its span has them."""
    rng = random.Random(1)
    # Entities cut by a window, and whitespace that entities may or may not span.
    pieces = [
        *HTML_PIECES,
        *("&nbsp;", "&nbspx;", "&#32;", "&#28;", "&#281;", "&#x41;", "&amp", "&notin;"),
        *("x\ry", "\t", "\f", "\xa0", "\u2003"),
    ]
    fill = html_filler(rng, pieces)
    windowed = 0
    for _ in range(6000):
        budget = rng.choice([100, 400])
        n_words = rng.choice([1, 3, 8, 30])
        raw = fill(rng.randint(0, 900))
        got, used = opening_span(raw, n_words, budget)
        assert got == chunks(visible_text(raw, budget), n_words), (raw, n_words, budget)
        assert 0 <= used <= len(raw)
        windowed += used < visible_span(raw, budget)[1]
        for _ in range(3):
            other = raw[:used] + fill(len(raw) - used)
            assert opening_span(other, n_words, budget)[0] == got, (raw, other)
    assert windowed > 150  # the window was enough, often


def test_an_edit_past_a_long_skipped_block_is_not_served_stale() -> None:
    profile = Profile(interests=("corrigibility",))
    script = "<script>" + "x = 1;" * 1000 + "</script>"
    a, b = two_notes(
        "<p>Intro.</p>" + script + "<p>Gardening tips for spring.</p>" + "<p>.</p>" * 400
    )

    def score_of_1(sel: Selection) -> float:
        return next(it.score for it in (*sel.featured, *sel.more) if it.candidate.entry_id == 1)

    before = score_of_1(select(profile, [a, b], NOW))
    # Same length, same opening up to past the script; the words after it changed.
    edited = replace(a, content=a.content.replace("Gardening tips for", "Corrigibility now,"))
    assert len(edited.content) == len(a.content)
    after = snapshot(select(profile, [edited, b], NOW))
    rank_module.clear_post_cache()
    assert snapshot(select(profile, [edited, b], NOW)) == after
    assert score_of_1(select(profile, [edited, b], NOW)) > before
    # An edit past everything the features depend on reuses the cached features.
    key = rank_cache.post_key(a.url, a.title, a.summary, a.published, a.content)
    cached = rank_module._POSTS.lookup(key, edited.content)
    assert cached is not None
    assert rank_module._POSTS.lookup(key, a.content) is None
    tail_edit = replace(edited, content=edited.content[:-8] + "<p>!</p>")
    assert rank_module._POSTS.lookup(key, tail_edit.content) is cached
    assert snapshot(select(profile, [tail_edit, b], NOW)) == after
