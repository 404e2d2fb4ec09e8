"""Ranking: what a subscriber sees at the top of a digest, and that nothing goes missing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import digest.rank as rank_module
from bench.rank import load_posts
from digest.models import Candidate, Profile, Selection
from digest.rank import rank, select
from digest.textindex import OPENING_WORDS

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 6, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def lexical_only() -> Iterator[None]:
    """These tests pin the lexical ranking, installed extras or not (see test_rank_semantic)."""
    rank_module.set_semantic(False)
    yield
    rank_module.set_semantic(None)


def fixture_posts() -> list[dict[str, Any]]:
    """The 19 distinct LessWrong fixture posts as `rank` takes them (the bench's own loader)."""
    return load_posts()


def cand(
    entry_id: int,
    title: str,
    text: str = "",
    *,
    feed: str = "blog",
    url: str | None = None,
    hours_old: float = 1.0,
    weight: float = 1.0,
    summary: str = "",
) -> Candidate:
    when = NOW - timedelta(hours=hours_old)
    return Candidate(
        entry_id=entry_id,
        feed=feed,
        feed_title=feed.title(),
        url=url or f"https://{feed}.example/posts/{entry_id}",
        title=title,
        author="",
        published=when,
        first_seen=when,
        content=f"<p>{text}</p>",
        summary=summary,
        feed_weight=weight,
    )


def ids(items: list) -> list[int]:  # type: ignore[type-arg]
    return [i.candidate.entry_id for i in items]


def accounted(sel: Selection) -> list[int]:
    return sorted(sel.entry_ids)


FILLER = [
    "A recipe for sourdough bread with a long cold fermentation and a very hot oven.",
    "Notes from a week of hiking in the Alps, with maps and gear lists.",
    "Why my garden tomatoes split after heavy rain, and what to do about it.",
    "A review of three mechanical keyboards for programmers who type all day.",
    "How the city council decided on the new cycling lanes downtown.",
]


def test_interest_moves_relevant_post_to_top() -> None:
    """An older post matching the subscriber's interest beats newer unrelated posts."""
    cands = [cand(i, f"Post {i}", FILLER[i], hours_old=1) for i in range(5)]
    cands.append(
        cand(
            9,
            "Sparse autoencoders find interpretable features",
            "We study interpretability of language models using sparse autoencoders.",
            hours_old=40,
        )
    )
    sel = select(Profile(interests=("interpretability",)), cands, NOW)
    assert ids(sel.featured)[0] == 9
    # Without interests the same digest is newest first: the old post is not on top.
    plain = select(Profile(), cands, NOW)
    assert ids(plain.featured)[0] != 9


def test_relevance_reads_the_opening_words_only() -> None:
    """The body counts through its OPENING_WORDS-th word: an interest named only after that
    adds nothing, named as the opening's last word it does."""

    def post(entry_id: int, tail: str) -> Candidate:
        filler = " ".join(f"w{entry_id}x{k}" for k in range(OPENING_WORDS - 1))
        return cand(entry_id, f"Notes {entry_id}", f"{filler} {tail}")

    cands = [
        post(1, "interpretability"),
        post(2, "plain interpretability"),
        post(3, "plain gardening"),
    ]
    sel = select(Profile(interests=("interpretability",)), cands, NOW)
    score = {i.candidate.entry_id: i.score for i in (*sel.featured, *sel.more)}
    assert score[1] > score[2] == score[3]


def test_rank_on_fixtures_puts_labelled_best_post_first() -> None:
    """The stable benchmark API: for each labelled profile the top post is labelled 2 or 3."""
    posts = fixture_posts()
    spec = json.loads((FIXTURES / "ranking" / "relevance.json").read_text())
    for prof in spec["profiles"]:
        order = rank(prof["interests"], posts)
        assert sorted(order) == sorted(p["id"] for p in posts)  # every id, once
        assert prof["labels"].get(order[0], 0) >= 2, prof["name"]


def test_rank_is_pure_and_deterministic() -> None:
    posts = fixture_posts()
    assert rank(["AI control"], posts) == rank(["AI control"], list(posts))
    assert rank([], []) == []


def test_reasons_name_the_matching_interest() -> None:
    """With explain on, the template shows e.g. "matches: forecasting"."""
    cands = [
        cand(1, "Forecasting the 2030 election", "Our forecasting model and its forecasts."),
        cand(2, "Bread", FILLER[0]),
    ]
    sel = select(Profile(interests=("forecasting", "AI control"), explain=True), cands, NOW)
    top = sel.featured[0]
    assert top.candidate.entry_id == 1
    assert "matches: forecasting" in top.reasons
    bread = next(i for i in (*sel.featured, *sel.more) if i.candidate.entry_id == 2)
    assert not any(r.startswith("matches") for r in bread.reasons)


def test_related_terms_give_a_related_reason() -> None:
    """A post on monitoring untrusted models relates to "AI control" without the phrase."""
    cands = [
        cand(1, "Trusted monitoring of an untrusted model", "Monitors catch sabotage attempts."),
        cand(2, "Bread", FILLER[0]),
    ]
    sel = select(Profile(interests=("AI control",)), cands, NOW)
    assert ids(sel.featured)[0] == 1
    assert any(r.startswith("related to: AI control") for r in sel.featured[0].reasons)


def test_mute_pushes_out_of_featured_but_keeps_in_more() -> None:
    """A muted post is never featured, even when it matches best, and is never dropped."""
    cands = [
        cand(1, "Crypto and interpretability", "Interpretability of crypto trading bots."),
        cand(2, "Interpretability of vision models", "Interpretability work on vision."),
        cand(3, "Bread", FILLER[0]),
    ]
    profile = Profile(interests=("interpretability",), mute=("crypto",), max_items=5)
    sel = select(profile, cands, NOW)
    assert 1 not in ids(sel.featured)
    assert 1 in ids(sel.more)
    muted = next(i for i in sel.more if i.candidate.entry_id == 1)
    assert "muted: crypto" in muted.reasons
    assert accounted(sel) == [1, 2, 3]


def test_per_feed_cap_limits_featured_items_from_one_feed() -> None:
    """A prolific feed cannot take more than per_feed_cap featured slots."""
    cands = [cand(i, f"Big feed post {i}", FILLER[i % 5], feed="big") for i in range(8)]
    cands += [
        cand(100 + i, f"Small feed post {i}", FILLER[i], feed="small", hours_old=30)
        for i in range(2)
    ]
    sel = select(Profile(max_items=5, per_feed_cap=3), cands, NOW)
    feeds = [i.candidate.feed for i in sel.featured]
    assert feeds.count("big") == 3
    assert feeds.count("small") == 2
    assert accounted(sel) == sorted(c.entry_id for c in cands)


def test_mmr_spreads_topics_in_the_featured_part() -> None:
    """Three near-identical takes on one topic don't fill the top three when another
    interest has a good post: diversity brings it up (MMR), but the best post stays first."""
    same = "Forecasting forecasting forecasts: base rates, calibration and prediction markets."
    cands = [cand(i, f"Forecasting roundup part {i}", same, feed=f"f{i}") for i in range(1, 4)]
    cands.append(cand(9, "Notes on AI control", "AI control protocols and monitoring.", feed="g"))
    profile = Profile(interests=("forecasting", "AI control"), max_items=4)
    sel = select(profile, cands, NOW)
    top = ids(sel.featured)
    assert top[0] in (1, 2, 3, 9)
    assert 9 in top[:2]


def test_subscriber_feed_weight_multiplies_feed_weight() -> None:
    """profile.feed_weights multiply the feed's own weight: 0 sinks a feed to the bottom."""
    cands = [
        cand(1, "A", FILLER[0], feed="loud", weight=2.0),
        cand(2, "B", FILLER[1], feed="quiet", hours_old=10),
    ]
    assert ids(select(Profile(), cands, NOW).featured)[0] == 1
    muted_feed = Profile(feed_weights={"loud": 0.0})
    assert ids(select(muted_feed, cands, NOW).featured)[0] == 2
    halved = select(Profile(feed_weights={"loud": 0.5}), cands, NOW)
    loud = next(i for i in halved.featured if i.candidate.entry_id == 1)
    plain = next(i for i in select(Profile(), cands, NOW).featured if i.candidate.entry_id == 1)
    assert loud.score == pytest.approx(plain.score * 0.5, rel=1e-6)


def test_duplicates_across_feeds_become_one_item_with_also_in() -> None:
    """A crosspost reached via two feeds shows once; the other feed is named; its id is merged."""
    text = " ".join(FILLER) + " " + " ".join(reversed(FILLER))
    lw = cand(
        1,
        "On tomatoes",
        text,
        feed="lesswrong",
        url="https://www.lesswrong.com/posts/abcdEFGH1234/x",
    )
    af = cand(
        2,
        "[AF] On tomatoes",
        text,
        feed="alignmentforum",
        url="https://alignmentforum.org/posts/abcdEFGH1234/y",
    )
    other = cand(3, "Bread", FILLER[0], feed="kitchen")
    sel = select(Profile(), [lw, af, other], NOW)
    shown = [*sel.featured, *sel.more]
    assert len(shown) == 2
    item = next(i for i in shown if i.candidate.entry_id in (1, 2))
    assert item.also_in == (("Alignmentforum",) if item.candidate.entry_id == 1 else ("Lesswrong",))
    assert sel.merged == [2 if item.candidate.entry_id == 1 else 1]
    assert accounted(sel) == [1, 2, 3]


def test_every_candidate_is_accounted_for_exactly_once() -> None:
    """featured + more + merged cover every entry once, on a realistic mixed digest."""
    posts = fixture_posts()
    cands = []
    for n, p in enumerate(posts):
        when = datetime.fromisoformat(p["published"])
        for k, feed in enumerate(("lesswrong", "greaterwrong")):
            if k == 1 and n % 3:
                continue  # every third post also arrives through a mirror
            cands.append(
                Candidate(
                    entry_id=len(cands),
                    feed=feed,
                    feed_title=feed,
                    url=p["url"].replace("www.lesswrong.com", "www.greaterwrong.com")
                    if k
                    else p["url"],
                    title=p["title"],
                    author="",
                    published=when,
                    first_seen=when,
                    content=p["content"],
                    summary="",
                )
            )
    profile = Profile(
        interests=("AI control", "interpretability"),
        mute=("executive order",),
        max_items=5,
        per_feed_cap=3,
    )
    sel = select(profile, cands, NOW)
    # Every shown item's own entry is the lesswrong one, so the per-feed cap of 3 binds.
    assert [i.candidate.feed for i in sel.featured] == ["lesswrong"] * 3
    assert accounted(sel) == list(range(len(cands)))
    assert len(sel.merged) == 7  # posts 0, 3, ..., 18
    assert [i.score for i in sel.more] == sorted((i.score for i in sel.more), reverse=True)


def test_empty_and_zero_slots() -> None:
    assert select(Profile(), [], NOW) == Selection(featured=[], more=[])
    cands = [cand(1, "A", FILLER[0]), cand(2, "B", FILLER[1])]
    sel = select(Profile(max_items=0), cands, NOW)
    assert sel.featured == [] and ids(sel.more) == [1, 2]


def _stem_reference(word: str) -> str:
    """The stemmer as specified: the first suffix of the list that fits, tried in order."""
    from digest.textindex import _SUFFIXES

    out = word
    if len(word) > 4 and not word.isdigit() and not word.endswith(("ss", "us", "is")):
        for suffix, repl in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) + len(repl) >= 4:
                out = word[: len(word) - len(suffix)] + repl
                break
        if out.endswith(("able", "ible")) and len(out) > 7:
            out = out[:-4]
        if out.endswith("e") and len(out) > 4:
            out = out[:-1]
    return out


def test_stemmer_takes_the_first_fitting_suffix_in_list_order() -> None:
    from digest.textindex import _SUFFIXES, stem

    heads = ["", "a", "ab", "abc", "abcd", "nation", "read", "x1", "12", "it'", "\u00e9t\u00e9"]
    tails = [s for s, _ in _SUFFIXES] + ["able", "ible", "e", "ss", "us", "is", "", "'s", "9"]
    checked = 0
    for head in heads:
        for tail in tails:
            for extra in ("", "s", "e", "able", "ings", "ly"):
                word = head + tail + extra
                assert stem(word) == _stem_reference(word), word
                checked += 1
    for word in ["monitoring", "monitors", "interpretability", "regulation", "12345", "is"]:
        assert stem(word) == _stem_reference(word), word
    assert checked > 1000


def test_chunk_terms_are_the_terms_of_the_chunks_words() -> None:
    from digest.textindex import STOPWORDS, stem, term_seq, words

    chunks = [
        "Model,",
        "(which",
        "the",
        "don\u2019t",
        "fine-tuning",
        "fine\u2010tuned",
        "\u201cInterpretability\u201d",
        "AI's",
        "2024.",
        "e.g.",
        "...",
        "[1]",
        "\u212aelvin",
        "na\u00efve",
        "and/or",
        "<b>",
        "x--y",
        "'tis",
        "models'",
        "A.I.",
    ]
    for chunk in chunks:
        expected = [stem(w) for w in words(chunk) if w not in STOPWORDS]
        assert term_seq([chunk]) == expected, chunk
