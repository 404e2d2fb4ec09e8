"""Cross-feed de-duplication: one post through several feeds is one post; look-alikes are not."""

from __future__ import annotations

from typing import Any

import pytest

from digest.dedup import canonical_url, group, normalize_title

BODY = (
    "<p>Misaligned artificial agents might resist shutdown. One proposed solution is training "
    "agents to lack preferences between different-length trajectories. We use a new reward to "
    "train deep RL agents and to fine-tune language models, and find that the trained models "
    "generalize to unseen contexts at test time. We also test the models in a setting where "
    "they can pay costs to influence when shutdown happens.</p>"
)
OTHER_BODY = (
    "<p>Running an air purifier on a battery could be really useful in an emergency that "
    "combined a biological threat with a power outage. A 12V unit attached to a LiFePO4 "
    "battery gives clean air for over a week, and costs less than you might expect. Here is "
    "the setup I built and what I measured with it over a month of testing.</p>"
)
SAME_TOPIC_BODY = (
    "<p>Corrigibility asks whether an agent will let us correct or switch it off. In this post "
    "I argue that utility indifference proposals fail for reasons unrelated to trajectory "
    "lengths, and sketch a decision-theoretic alternative based on incomplete preferences, "
    "with a toy model and some open problems for anyone interested.</p>"
)


def entry(n: int, url: str, title: str, published: str, content: str = BODY) -> dict[str, Any]:
    return {
        "entry_id": n,
        "feed": f"feed{n}",
        "url": url,
        "title": title,
        "published": published,
        "content": content,
    }


LW = "https://www.lesswrong.com/posts/jLhaKutzwF6a2dG99/towards-shutdownable-agents"
TITLE = "Towards Shutdownable Agents"
WHEN = "2026-06-03T14:24:00+00:00"


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    labels = group([a, b])
    return labels[0] == labels[1]


@pytest.mark.parametrize(
    "url",
    [
        LW + "?utm_source=rss&utm_medium=email&utm_campaign=x",
        LW + "/?fbclid=IwAR0&gclid=abc#comments",
        LW.replace("https://www.", "http://") + "?ref=hn&mc_cid=1&mc_eid=2",
    ],
)
def test_tracking_parameters_scheme_and_fragments_do_not_split_a_post(url: str) -> None:
    assert canonical_url(url) == canonical_url(LW)
    assert same(entry(0, LW, TITLE, WHEN), entry(1, url, TITLE, WHEN, "<p>Comments</p>"))


@pytest.mark.parametrize(
    "mirror",
    [
        "https://www.alignmentforum.org/posts/jLhaKutzwF6a2dG99/other-slug",
        "https://alignmentforum.org/posts/jLhaKutzwF6a2dG99",
        "https://www.greaterwrong.com/posts/jLhaKutzwF6a2dG99/towards-shutdownable-agents",
        "https://www.lesswrong.com/s/abcSequence1/p/jLhaKutzwF6a2dG99",
    ],
)
def test_mirror_domains_share_post_ids(mirror: str) -> None:
    assert canonical_url(mirror) == "lesswrong.com/posts/jLhaKutzwF6a2dG99"
    # The AF copy carries a decorated title, a later date and re-wrapped HTML: still one post.
    af = entry(1, mirror, "[AF] " + TITLE, "2026-06-03T18:00:00+00:00", f"<div>{BODY}</div>")
    assert same(entry(0, LW, TITLE, WHEN), af)


def test_meaningful_query_parameters_are_kept() -> None:
    assert canonical_url("https://example.com/view?id=1") != canonical_url(
        "https://example.com/view?id=2"
    )
    assert canonical_url("https://example.com/") == ""  # a home page names no post


@pytest.mark.parametrize(
    "decorated",
    [
        "[AF] Towards Shutdownable Agents",
        "Towards Shutdownable Agents (crosspost)",
        "[Linkpost] Towards Shutdownable Agents",
        "Crosspost: Towards Shutdownable Agents",
        "Towards Shutdownable Agents [cross-posted from my blog]",
    ],
)
def test_title_decorations_are_removed(decorated: str) -> None:
    assert normalize_title(decorated) == normalize_title(TITLE)


def test_retitled_crosspost_on_another_domain_with_rewrapped_html() -> None:
    """A crosspost on the author's blog: new URL, "— Blog" suffix, a note line, new markup."""
    blog = entry(
        1,
        "https://author.substack.example/p/towards-shutdownable-agents?utm_source=x",
        TITLE + " \u2014 The Author's Blog",
        "2026-06-02T20:00:00+00:00",
        "<p><em>Crossposted from LessWrong.</em></p>" + BODY.replace("<p>", "<div>\n<span>"),
    )
    assert same(entry(0, LW, TITLE, WHEN), blog)


def test_same_title_a_week_later_is_a_different_post() -> None:
    """Weekly threads share titles and boilerplate text: dates far apart veto the merge."""
    a = entry(0, "https://site.example/open-thread-1", "Open Thread", "2026-06-01T12:00:00+00:00")
    b = entry(1, "https://site.example/open-thread-2", "Open Thread", "2026-06-08T12:00:00+00:00")
    assert not same(a, b)


def test_numbered_series_with_shared_intro_are_different_posts() -> None:
    a = entry(0, "https://zvi.example/p/ai-171", "AI #171: False Flag", "2026-06-04T12:00:00+00:00")
    b = entry(1, "https://zvi.example/p/ai-172", "AI #172: True Flag", "2026-06-05T12:00:00+00:00")
    assert not same(a, b)


def test_same_topic_different_posts_are_not_merged() -> None:
    a = entry(0, LW, TITLE, WHEN)
    b = entry(
        1, "https://other.example/corrigibility", "Towards Corrigible Agents", WHEN, SAME_TOPIC_BODY
    )
    assert not same(a, b)


def test_same_title_same_day_but_different_text_is_not_merged() -> None:
    a = entry(0, "https://a.example/open", "Open Thread", WHEN)
    b = entry(1, "https://b.example/open", "Open Thread", WHEN, OTHER_BODY)
    assert not same(a, b)


def test_reply_quoting_the_opening_is_a_different_post() -> None:
    reply = entry(
        1,
        "https://www.lesswrong.com/posts/Zzzz1234abcd5678/re-towards",
        "Re: " + TITLE,
        "2026-06-04T10:00:00+00:00",
        f"<blockquote>{BODY}</blockquote>{SAME_TOPIC_BODY}",
    )
    assert not same(entry(0, LW, TITLE, WHEN), reply)


def test_two_lesswrong_ids_are_two_posts_even_with_same_title_and_text() -> None:
    a = entry(0, "https://www.lesswrong.com/posts/AAAAbbbbCCCC1111/x", "Open Thread", WHEN)
    b = entry(1, "https://www.lesswrong.com/posts/DDDDeeeeFFFF2222/x", "Open Thread", WHEN)
    assert not same(a, b)


def test_a_chain_of_look_alikes_cannot_glue_two_posts_together() -> None:
    """A copy close to each of two weekly threads must not join them into one group."""
    a = entry(0, "https://s.example/1", "Open Thread", "2026-06-01T12:00:00+00:00")
    mid = entry(1, "https://s.example/1?utm_source=x", "Open Thread", "2026-06-04T12:00:00+00:00")
    b = entry(2, "https://s.example/2", "Open Thread", "2026-06-07T12:00:00+00:00")
    labels = group([a, mid, b])
    assert labels[0] == labels[1]
    assert labels[2] != labels[0]


def test_group_labels_one_per_entry_and_handles_missing_fields() -> None:
    entries = [
        entry(0, LW, TITLE, WHEN),
        {"entry_id": 1, "feed": "x", "url": "", "title": "", "published": None, "content": ""},
        entry(2, "not a url at all", "Something else", "not a date", OTHER_BODY),
    ]
    labels = group(entries)
    assert len(labels) == 3 and len(set(labels)) == 3
    assert group([]) == []
