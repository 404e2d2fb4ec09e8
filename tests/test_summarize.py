# ruff: noqa: RUF001
# Non-ASCII punctuation and non-Latin text are used on purpose.
"""Behaviour of digest.summarize: cleaning, author summaries, boilerplate, length, languages."""

from __future__ import annotations

import re

import pytest

from digest.sentences import count_words, split_sentences
from digest.summarize import SUMMARIZER_VERSION, reading_minutes, summarize

FEED_WRAP = (
    "Published on June 4, 2026 3:51 AM GMT<br/><br/>{body}<br/><br/>"
    '<a href="https://www.lesswrong.com/posts/x/y#comments">Discuss</a>'
)
BODY = (
    "<p>Solar panels on apartment balconies have become cheap enough that a typical household "
    "can recover the cost within four years. The main obstacles are now rules set by landlords "
    "and building codes, not the price of the hardware.</p>"
    "<p>In this post I compare the rules in five cities and estimate how much electricity "
    "balcony panels could supply if they were allowed everywhere.</p>"
)


def wrap(body: str) -> str:
    return FEED_WRAP.format(body=body)


# -- public interface --------------------------------------------------------------------
def test_version_is_a_non_empty_string() -> None:
    assert isinstance(SUMMARIZER_VERSION, str) and SUMMARIZER_VERSION


@pytest.mark.parametrize("content", ["", "   ", "<p></p>", "<style>p{color:red}</style>", wrap("")])
def test_post_without_text_gives_empty_summary_and_zero_minutes(content: str) -> None:
    assert summarize("A title", content) == ""
    assert reading_minutes(content) == 0


def test_reading_minutes_is_words_over_230_and_at_least_one() -> None:
    assert reading_minutes("<p>Short.</p>") == 1
    assert reading_minutes("<p>" + "word " * 460 + "</p>") == 2
    assert reading_minutes("word " * 1150) == 5


def test_reading_minutes_ignores_css_and_feed_furniture() -> None:
    css = "<style>" + "mjx-c { padding: 0.5em; } " * 2000 + "</style>"
    assert reading_minutes(wrap("<p>" + "word " * 230 + "</p>" + css)) == 1


# -- cleaning ----------------------------------------------------------------------------
def test_feed_furniture_is_dropped() -> None:
    html = wrap(
        BODY + "<p>Continue reading →</p><p>The post Balconies appeared first on Sun Blog.</p>"
    )
    summary = summarize("Balcony solar", html)
    assert summary.startswith("Solar panels on apartment balconies")
    for furniture in ("Published on", "Discuss", "Continue reading", "appeared first"):
        assert furniture not in summary


def test_style_script_mathjax_images_and_captions_never_reach_the_summary() -> None:
    html = wrap(
        '<figure><img src="a.png" alt="A chart"><figcaption>Figure 1: Prices.</figcaption></figure>'
        "<p>Solar panels are cheap <style>mjx-container { line-height: 0; }</style>now, and "
        '<mjx-container class="MathJax"><mjx-math>x</mjx-math></mjx-container> the rules '
        "<script>alert(1)</script>matter more than the price of the hardware for most "
        "households that want them.</p>"
    )
    summary = summarize("t", html)
    assert summary.startswith("Solar panels are cheap now, and the rules matter more")
    assert not re.search(r"[<{]|mjx-|Figure 1|alert|A chart", summary)


def test_table_of_contents_and_heading_labels_are_skipped() -> None:
    html = wrap(
        "<h2>Table of Contents</h2><ol><li>Background.</li><li>Results.</li></ol>"
        "<h2>Background</h2>" + BODY
    )
    summary = summarize("t", html)
    assert summary.startswith("Solar panels on apartment balconies")
    assert "Background" not in summary and "Results." not in summary


# -- author summaries --------------------------------------------------------------------
TLDR_TEXT = "Balcony solar pays for itself in four years. Rules, not prices, now hold it back."


@pytest.mark.parametrize(
    "form",
    [
        f"<p>TL;DR: {TLDR_TEXT}</p>",
        f"<p>TLDR - {TLDR_TEXT}</p>",
        f"<p><strong>tl;dr</strong> {TLDR_TEXT}</p>",
        f"<p><b>Summary:</b> {TLDR_TEXT}</p>",
        f"<h2>TL;DR</h2><p>{TLDR_TEXT}</p>",
        f"<h3>Abstract</h3><p>{TLDR_TEXT}</p>",
        f"<p><strong>Key takeaways</strong></p><p>{TLDR_TEXT}</p>",
        "<h2>Summary</h2><ul><li>Balcony solar pays for itself in four years</li>"
        "<li>Rules, not prices, now hold it back</li></ul>",
        "<p>TL;DR:</p><ul><li>Balcony solar pays for itself in four years.</li>"
        "<li>Rules, not prices, now hold it back.</li></ul>",
    ],
)
def test_author_summary_in_any_common_form_becomes_the_summary(form: str) -> None:
    html = wrap("<p>Work done as part of the Solar Fellowship.</p>" + form + BODY)
    assert summarize("Balcony solar", html) == TLDR_TEXT


def test_bullets_under_a_colon_item_become_clauses_of_one_sentence() -> None:
    html = wrap(
        "<h2>Summary</h2><ul><li>We compare two cities:</li><li>sunny Seville</li>"
        "<li>cloudy Hamburg</li><li>Panels pay off in both.</li></ul>" + BODY
    )
    assert summarize("t", html) == (
        "We compare two cities: sunny Seville; cloudy Hamburg. Panels pay off in both."
    )


def test_summary_label_far_down_the_post_is_not_an_author_summary() -> None:
    filler = "".join(f"<p>{BODY}</p>" for _ in range(8))
    html = wrap(BODY + filler + "<h2>Summary</h2><p>A late conclusion, not a TL;DR.</p>")
    assert summarize("t", html).startswith("Solar panels on apartment balconies")


def test_plain_text_tldr() -> None:
    text = f"TL;DR: {TLDR_TEXT}\n\nSolar panels are cheap now. Rules matter more."
    assert summarize("t", text) == TLDR_TEXT


# -- opening boilerplate -----------------------------------------------------------------
@pytest.mark.parametrize(
    "note",
    [
        "<p>Work done as part of the MATS 9.0 program, mentored by A. Person.</p>",
        "<p>This research was conducted during my internship at Example Labs.</p>",
        "<p>Thanks to Ada, Ben and Chloé for comments on earlier drafts.</p>",
        "<p>I'm very grateful to the reviewers for their patience.</p>",
        "<p><em>Crossposted from my blog.</em></p>",
        "<p>This essay originally appeared in Works in Progress.</p>",
        "<p>Epistemic status: fairly confident about the numbers, unsure about the policy.</p>",
        "<p>[Content warning: discussion of illness.]</p>",
        "<p>This is part 3 of a sequence on energy policy.</p>",
        "<p>This is the second post in my series about balcony solar.</p>",
        "<p>In my previous post I looked at rooftop panels.</p>",
        "<p>Subscribe to get new posts in your inbox.</p>",
        "<p>We're hiring! Apply to join our team by July 1.</p>",
        "<p>By Jane Doe and John Smith (Example University)</p>",
        '<p>Paper: <a href="https://arxiv.org/abs/1">https://arxiv.org/abs/1</a></p>',
        '<p><a href="https://x.org/p">Paper</a> | <a href="https://x.org/c">Code</a></p>',
        "<p>https://example.org/data.csv</p>",
        "<p>Note to editors: photos are available on request.</p>",
        "<p>Editor's note: this piece has been updated.</p>",
        "<p>Update (June 6): fixed a typo in the table.</p>",
        "<p>All mistakes are my own.</p>",
    ],
)
def test_summary_never_starts_with_opening_boilerplate(note: str) -> None:
    summary = summarize("Balcony solar", wrap(note + note.replace("<p>", "<p> ") + BODY))
    assert summary.startswith("Solar panels on apartment balconies"), summary


def test_boilerplate_sentence_opening_a_real_paragraph_is_dropped_but_the_rest_kept() -> None:
    html = wrap(
        "<p>Last post was about rooftop panels. Here I argue that balcony panels are the "
        "cheaper route for renters, because they need no permit in most cities and can move "
        "with the tenant.</p>"
    )
    assert summarize("t", html).startswith("Here I argue that balcony panels")


def test_ordinary_sentences_that_look_a_little_like_boilerplate_are_kept() -> None:
    html = wrap(
        "<p>Last week we were expecting an executive order on solar tariffs, and by Friday it "
        "had been signed. The order is supported by evidence from three pilot programs and "
        "changes how panels are taxed.</p>"
    )
    assert summarize("t", html).startswith("Last week we were expecting")


# -- length and endings ------------------------------------------------------------------
def test_first_paragraph_long_enough_is_used_alone_in_whole_sentences() -> None:
    first = (
        "Solar panels on apartment balconies have become cheap enough that a typical household "
        "can recover the cost within four years. The main obstacles are now rules set by "
        "landlords and building codes, not the price of the hardware, and those rules differ "
        "a great deal between cities."
    )
    assert count_words(first) >= 40
    rest = "<p>Germany alone registered 400,000 balcony systems last year, twice as many.</p>"
    assert summarize("t", wrap(f"<p>{first}</p>" + rest)) == first


def test_claim_stated_after_a_long_first_paragraph_joins_it() -> None:
    first = (
        "Solar panels on apartment balconies have become cheap enough that a typical household "
        "can recover the cost within four years. The main obstacles are now rules set by "
        "landlords and building codes, not the price of the hardware, and those rules differ "
        "a great deal between cities."
    )
    summary = summarize("t", wrap(f"<p>{first}</p>" + BODY))
    assert summary.startswith(first)
    assert summary.endswith("if they were allowed everywhere.")
    assert count_words(summary) <= 90


def test_teaser_opening_gives_way_to_the_sentences_that_state_the_post() -> None:
    html = wrap(
        "<p>Suppose your landlord has just said no to the solar panels you bought for your "
        "balcony, after you spent a whole weekend choosing them and reading reviews.</p>"
        "<p>My cat likes to sleep in the afternoon sun on that very balcony, all year long.</p>"
        "<p>In this post I argue that balcony solar needs a legal right to install, as Germany "
        "granted in 2024, because landlords otherwise refuse by default.</p>"
    )
    summary = summarize("Balcony solar needs a right to install", html)
    assert "In this post I argue that balcony solar needs a legal right" in summary
    assert "cat" not in summary


def test_verbless_run_in_title_or_caption_title_opening_a_paragraph_is_dropped() -> None:
    for title in ("The shutdown problem.", "Cost-performance frontier for low-cost monitors."):
        html = wrap(
            f"<p>{title} Misaligned agents might resist shutdown, and this concern has long "
            "been supported by theory. It is beginning to see support from experiments too, "
            "where frontier models resist shutdown in toy settings built for the purpose.</p>"
        )
        assert summarize("t", html).startswith("Misaligned agents might resist shutdown")


@pytest.mark.parametrize(
    "opening",
    [
        "Models hallucinate less than last year. ",
        "Modern language models undergo extensive fine-tuning for safety. ",
        "Germany registered 400,000 systems. ",
        "Prices keep falling. ",
    ],
)
def test_short_real_sentences_are_not_taken_for_run_in_titles(opening: str) -> None:
    # Known limit: a short sentence whose only verb is rare and bare ("Models hallucinate.")
    # is taken for a title.
    html = wrap(
        f"<p>{opening}The main obstacles are now the rules set by landlords and building codes, "
        "not the price of the hardware, and those rules differ a great deal between the "
        "cities of the country.</p>"
    )
    assert summarize("t", html).startswith(opening.strip())


def test_run_in_titles_are_judged_in_english_only() -> None:
    html = wrap(
        "<p>Balkonkraftwerke für alle. Seit dem 1. Januar gelten neue Regeln für Mieter, und "
        "das größte Hindernis sind heute die Vermieter, nicht der Preis der Technik.</p>"
    )
    assert summarize("t", html).startswith("Balkonkraftwerke für alle.")


def test_pointer_sentences_and_transcript_turns_do_not_fill_a_summary() -> None:
    html = wrap(
        "<p>Jane Doe was interviewed on a podcast about balcony solar and her city's rules.</p>"
        "<p>For the background, see here, here, and here.</p>"
        "<p>I'm posting the transcript below because the rules she describes apply in many "
        "other cities as well.</p>"
        "<p>Host Name: Welcome back to the show, today we talk about balcony solar.</p>"
        "<p>Jane Doe: Thanks, it is great to be here and talk about balcony solar.</p>"
        "<p>Host Name: So what are the rules for balcony solar in your city?</p>"
        "<p>Jane Doe: The rules for balcony solar are simple, you just register the panels.</p>"
    )
    summary = summarize("Jane Doe on balcony solar", html)
    assert summary.startswith("Jane Doe was interviewed")
    assert "see here" not in summary
    assert "Host Name:" not in summary and "Jane Doe:" not in summary


def test_thin_first_paragraph_is_filled_with_following_sentences_in_post_order() -> None:
    html = wrap(
        "<p>Balcony solar is booming across Europe this year.</p>"
        "<p>Germany registered 400,000 balcony solar systems last year, more than any other "
        "country. My cat likes to sleep in the afternoon. Prices for a two-panel balcony solar "
        "kit fell below 400 euros.</p>"
        "<p>Rules for balcony solar differ between cities and landlords, and those rules "
        "decide where balcony solar systems can grow next.</p>"
    )
    summary = summarize("Balcony solar", html)
    assert summary.startswith("Balcony solar is booming across Europe this year.")
    assert 40 <= count_words(summary) <= 90
    assert "cat" not in summary
    assert summary.index("Germany") < summary.index("Rules for")


def test_summaries_stay_within_90_words() -> None:
    long_paragraph = "<p>" + " ".join(f"Sentence number {i} is here." for i in range(60)) + "</p>"
    summary = summarize("t", wrap(long_paragraph))
    assert count_words(summary) <= 90
    assert summary.endswith(".") and not summary.endswith("…")


def test_ellipsis_only_when_a_sentence_is_cut_and_never_mid_word() -> None:
    one_sentence = "<p>" + " ".join(["supercalifragilistic"] * 150) + ".</p>"
    summary = summarize("t", wrap(one_sentence))
    assert summary.endswith("supercalifragilistic…")
    assert count_words(summary) == 90

    trailing = (
        "<p>Prices keep falling, rules keep changing, and renters keep waiting for a decision "
        "on balcony panels...</p>"
    )
    assert not summarize("t", wrap(trailing)).endswith(("…", "..."))


# -- sentence segmentation ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith moved to the U.S. in 2020. She left.", 2),
        ("Results follow Askell et al. 2021 closely. Others disagree.", 2),
        ("Use e.g. Python 3.12.1 or later. It works.", 2),
        ("Pi is about 3.14159 and e is 2.718. Both are irrational.", 2),
        ("See https://example.com/a.b?c=1&d=2.html for details. Then decide.", 2),
        ("Version v2.0.1 fixed it, i.e. the crash is gone. Good.", 2),
        ("J. R. R. Tolkien wrote it. Fig. 3 shows it. It sold well.", 3),
        ("What? Really! Yes.", 3),
    ],
)
def test_sentences_survive_abbreviations_decimals_versions_and_urls(
    text: str, expected: int
) -> None:
    assert len(split_sentences(text)) == expected, split_sentences(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Он пришёл домой. Там было тихо, т. е. никого не было! Почему?", 3),
        ("Am 3. Oktober kam er an, z.B. mit dem Zug. Dann ging er weiter.", 2),
        ("M. Dupont est arrivé. Pourquoi ? Personne ne sait !", 3),
        ("我今天去了商店。买了很多东西！你呢？", 3),
    ],
)
def test_non_english_sentence_ends(text: str, expected: int) -> None:
    assert len(split_sentences(text)) == expected, split_sentences(text)


@pytest.mark.parametrize(
    "body",
    [
        "<p>Солнечные панели на балконах стали дешёвыми. Т. е. семья окупает их за четыре года. "
        "Главное препятствие теперь — правила домовладельцев, а не цена оборудования. "
        "Мы сравнили правила в пяти городах России и Европы.</p>",
        "<p>Balkonkraftwerke sind billig geworden, z.B. kostet ein Set unter 400 Euro. "
        "Seit dem 1. Januar gelten neue Regeln. Das größte Hindernis sind heute Vermieter, "
        "nicht der Preis der Technik.</p>",
        "<p>Les panneaux solaires sur balcon sont devenus bon marché. Un ménage les rembourse "
        "en quatre ans ! Le principal obstacle reste les règles des propriétaires.</p>",
        "<p>阳台太阳能板已经变得很便宜。一个家庭四年就能收回成本。现在主要的障碍是房东和建筑规范，"
        "而不是硬件的价格。我们比较了五个城市的规定。</p>",
    ],
)
def test_non_english_posts_summarize_to_whole_sentences(body: str) -> None:
    summary = summarize("t", wrap(body))
    assert summary
    assert summary[-1] in ".!?。！？"
    assert count_words(summary) <= 90


def test_chinese_text_is_cut_by_characters_when_one_sentence_is_too_long() -> None:
    summary = summarize("t", "<p>" + "阳光" * 200 + "。</p>")
    assert summary.endswith("…")
    assert count_words(summary) <= 91


# -- plain text --------------------------------------------------------------------------
def test_plain_text_post_skips_link_lines_and_bylines() -> None:
    text = (
        "By Jane Doe\n\nCode: https://github.com/x/y\n\n"
        "Solar panels on apartment balconies have become cheap enough that a typical household "
        "can recover the cost within four years. The main obstacles are now rules set by "
        "landlords and building codes, not the price of the hardware."
    )
    assert summarize("t", text).startswith("Solar panels on apartment balconies")
