# ruff: noqa: RUF001
# Non-ASCII punctuation and non-Latin text are used on purpose.
"""A post's opening, made into a short plain-text summary for the digest.

How a summary is made:
1. The HTML is parsed into blocks (paragraphs, headings, list items, quotes, code, tables);
   styles, scripts, MathJax/MathML/SVG, images, captions and tables of contents are dropped.
2. Feed furniture ("Published on ...", "Discuss", "Continue reading", "The post ... appeared
   first on ...") is removed wherever it is.
3. If the author wrote a summary near the top (TL;DR, Summary, Abstract, Key takeaways, ...,
   as a heading, a label-only line, a bold label or an inline "TL;DR:"), it is the summary,
   label removed and bullets joined as sentences.
4. Otherwise the first real paragraph is taken, skipping opening boilerplate (program notes,
   acknowledgements, crosspost notes, epistemic status, series pointers, calls to action,
   bylines, link lines, pointers, notes to editors) and a verbless run-in title or caption
   title ("The shutdown problem. ..."). It stands alone when it has about 40 words, does not
   open on a question or hypothetical, and the post does not state its claim ("in this post",
   "we show", "I argue") only further on. Otherwise sentences of the opening are scored for
   position, for stating the claim, for centrality to the opening and for sharing words with
   the title, and the best are taken in the post's order (transcript turns left out).
5. The result is cut to whole sentences of about 40 to 90 words; a sentence is cut, with an
   ellipsis, only when the first one alone is too long.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from digest.sentences import count_words, cut_words, split_sentences
from digest.summarize_html import Block, blocks_of
from digest.summarize_rules import (
    boilerplate_kind,
    ends_sentence,
    is_anaphoric,
    is_furniture,
    is_label,
    is_link_line,
    is_run_in_title,
    is_teaser,
    is_toc_heading,
    speaker,
    states_claim,
    summary_label,
)
from digest.textindex import visible_text

__all__ = ["SUMMARIZER_VERSION", "WORDS_PER_MINUTE", "reading_minutes", "summarize"]

SUMMARIZER_VERSION = "3"
WORDS_PER_MINUTE = 230
MIN_WORDS = 40
MAX_WORDS = 90


# How far down an author summary may start and still count as "near the top".
_SUMMARY_WINDOW_BLOCKS = 12
_SUMMARY_WINDOW_WORDS = 400
# How much of the post after the first paragraph may lend sentences to a thin summary.
_FOLLOW_WINDOW_BLOCKS = 10
_FOLLOW_WINDOW_WORDS = 500
# A paragraph shorter than this is a line, not the post's opening.
_MIN_PARAGRAPH_WORDS = 8

_FOOTNOTE = re.compile(r"\s*\[(?:\d{1,3}|[a-z]|\d{1,2}:\d{2}(?::\d{2})?)\]|\s*\^\d{1,3}\b")
_UNSAFE = re.compile(r"[{}<]|mjx-|\bpublished on\b", re.IGNORECASE)
_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    [
        "the",
        "and",
        "that",
        "this",
        "with",
        "from",
        "have",
        "has",
        "had",
        "were",
        "was",
        "are",
        "for",
        "not",
        "but",
        "you",
        "your",
        "they",
        "them",
        "their",
        "there",
        "these",
        "those",
        "which",
        "what",
        "when",
        "where",
        "will",
        "would",
        "could",
        "should",
        "about",
        "into",
        "than",
        "then",
        "also",
        "just",
        "more",
        "most",
        "some",
        "such",
        "only",
        "other",
        "very",
        "much",
        "many",
        "over",
        "can",
        "our",
        "its",
        "it's",
        "i'm",
        "we're",
        "one",
        "two",
        "been",
        "being",
        "does",
        "did",
        "doing",
        "because",
        "while",
        "after",
        "before",
        "here",
        "like",
        "make",
        "made",
        "well",
        "really",
        "even",
        "think",
        "thing",
        "things",
        "way",
        "ways",
        "still",
        "same",
        "each",
        "both",
        "any",
        "all",
        "who",
        "whom",
        "how",
        "why",
        "out",
        "off",
        "yes",
    ]
)


# A summary is made from the opening, so only this many words of a long post are parsed.
_OPENING_WORDS = 1500


def _body(content: str, max_words: int | None = None) -> list[Block]:
    """The post's blocks without feed furniture or tables of contents."""
    out: list[Block] = []
    skip_group = -1
    blocks = blocks_of(content, max_words)
    for index, block in enumerate(blocks):
        if block.kind == "li" and block.group == skip_group:
            continue
        if is_furniture(block.text):
            continue
        if block.kind == "heading" or is_label(block):
            nxt = blocks[index + 1] if index + 1 < len(blocks) else None
            if is_toc_heading(block.text) and nxt is not None and nxt.kind == "li":
                skip_group = nxt.group
                continue
        out.append(block)
    return out


def _clean(sentence: str) -> str:
    """A sentence without footnote markers, timestamps or stray spacing."""
    text = _FOOTNOTE.sub("", sentence)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text) if not re.search(r"\s[!?]$", sentence) else text
    return re.sub(r"\s+", " ", text).strip()


def _as_sentence(text: str) -> str:
    """A bullet or label-less fragment made to read as a sentence."""
    text = text.strip()
    if text and not ends_sentence(text) and not text.endswith(":"):
        text = text.rstrip(",;—–-") + "."
    return text


def _usable(sentence: str) -> bool:
    return bool(sentence) and not _UNSAFE.search(sentence) and not is_furniture(sentence)


def _fit(sentences: Sequence[str]) -> str:
    """Whole sentences, in order, up to MAX_WORDS; the first one is cut if it alone is over."""
    chosen: list[str] = []
    used = 0
    for sentence in sentences:
        n = count_words(sentence)
        if used + n > MAX_WORDS:
            if not chosen:
                return cut_words(sentence, MAX_WORDS)
            break
        chosen.append(sentence)
        used += n
    # A summary that ends by announcing a list or quote ("as follows:") reads as cut off.
    while len(chosen) > 1 and chosen[-1].endswith((":", "：")):
        chosen.pop()
    return _finish(" ".join(chosen))


def _finish(text: str) -> str:
    text = text.strip()
    if text.endswith(("...", "…")) and not text.endswith("...."):
        # An ellipsis means "cut here"; an uncut summary ending on one would mislead.
        text = text.rstrip(".… ") + "."
    if text.endswith((":", "：")):
        text = text[:-1].rstrip() + "."
    return _UNSAFE.sub(lambda m: {"{": "(", "}": ")", "<": "‹"}.get(m.group(0), ""), text).strip()


# -- author summaries -------------------------------------------------------------------
def _author_summary(body: Sequence[Block]) -> list[str] | None:
    words_before = 0
    for index, block in enumerate(body[:_SUMMARY_WINDOW_BLOCKS]):
        if words_before > _SUMMARY_WINDOW_WORDS:
            return None
        found, rest = summary_label(block)
        if found:
            parts = [rest] if rest else []
            following = body[index + 1 :]
            if not rest or rest.endswith((":", "：")):
                parts.extend(_summary_continuation(following, bullets_only=bool(rest)))
            parts = _join_bullets(parts)
            sentences = [
                _clean(_as_sentence(s))
                for part in parts
                for s in (split_sentences(part) if part else [])
            ]
            sentences = [s for s in sentences if _usable(s)]
            if sentences:
                return sentences
        words_before += count_words(block.text)
    return None


def _summary_continuation(following: Sequence[Block], bullets_only: bool) -> list[str]:
    """The blocks that make up a labelled summary: one paragraph or one list."""
    parts: list[str] = []
    group = -1
    for block in following:
        if block.kind == "li":
            if group not in (-1, block.group):
                break
            group = block.group
            parts.append(block.text)
            continue
        if group != -1 or bullets_only or block.kind in ("heading", "pre", "table"):
            break
        if is_label(block) or boilerplate_kind(block.text) or is_link_line(block):
            break
        parts.append(block.text)
        # One paragraph, unless it only announces the list that follows ("We find:").
        if not block.text.endswith((":", "：")):
            break
    return parts


def _join_bullets(parts: Sequence[str]) -> list[str]:
    """Bullets as sentences: an item ending in a colon takes the lower-case items after it
    as its clauses ("two tasks: separating A; predicting B.")."""
    out: list[str] = []
    open_list = False
    for part in parts:
        part = part.strip()
        if out and out[-1].endswith((":", "：")):
            out[-1] = f"{out[-1]} {part}"
            open_list = True
        elif out and open_list and part[:1].islower():
            out[-1] = f"{out[-1].rstrip('.;,')}; {part}"
        else:
            out.append(part)
            open_list = False
    return [_as_sentence(p) for p in out]


# -- lead summaries ---------------------------------------------------------------------
def _is_real_paragraph(block: Block) -> bool:
    # Judged after its opening boilerplate sentences are gone: "Last post was about X. Here
    # I argue Y." is a real paragraph, "Thanks to A and B for comments." is not.
    return (
        block.kind in ("p", "quote")
        and count_words(block.text) >= _MIN_PARAGRAPH_WORDS
        and not is_label(block)
        and not is_link_line(block)
        and count_words(" ".join(_opening_sentences(block))) >= _MIN_PARAGRAPH_WORDS
    )


def _without_run_in(block: Block) -> str:
    """The block's text without a run-in heading: a bold one ("**Background.** Text...") or a
    short verbless title ("The shutdown problem. Text...", a figure caption's title)."""
    lead = block.lead_bold
    if (
        lead
        and len(lead.split()) <= 8
        and block.text.startswith(lead)
        and len(block.text) > len(lead)
    ):
        rest = block.text[len(lead) :]
        if lead.endswith((".", ":")) or rest.lstrip().startswith((".", ":", "—", "–")):
            return rest.lstrip(" .:—–")
    sentences = split_sentences(block.text)
    if len(sentences) > 1 and block.text.startswith(sentences[0]):
        rest = block.text[len(sentences[0]) :].lstrip()
        if is_run_in_title(sentences[0], rest):
            return rest
    return block.text


def _opening_sentences(block: Block) -> list[str]:
    """A paragraph's sentences, minus the boilerplate ones it opens with."""
    if boilerplate_kind(block.text) in ("note", "caption"):
        # A labelled note or caption runs to the end of its paragraph.
        return []
    sentences = [_clean(s) for s in split_sentences(_without_run_in(block))]
    if sentences and boilerplate_kind(sentences[0]) == "call_to_action":
        # "We're hiring! Apply by July 1." An appeal's paragraph is the appeal.
        return []
    while sentences and boilerplate_kind(sentences[0]):
        sentences.pop(0)
    return [s for s in sentences if _usable(s)]


def _terms(text: str) -> Counter[str]:
    return Counter(
        w
        for w in (m.group(0).lower() for m in _WORD.finditer(text))
        if len(w) > 2 and w not in _STOP
    )


class _Unit(NamedTuple):
    """A sentence that may go into a lead summary, with where it stands in the opening."""

    text: str
    paragraph: int  # 0 for the first real paragraph, then 1, 2, ... for each block after it
    place: int  # its place within that paragraph


def _following(blocks: Iterable[Block]) -> list[_Unit]:
    """Sentences of the blocks after the first paragraph that could go into a summary."""
    out: list[_Unit] = []
    words = 0
    paragraph = 0
    for count, block in enumerate(blocks):
        if count >= _FOLLOW_WINDOW_BLOCKS or words >= _FOLLOW_WINDOW_WORDS:
            break
        if block.kind not in ("p", "quote", "li") or is_label(block) or is_link_line(block):
            continue
        if boilerplate_kind(block.text):
            continue
        paragraph += 1
        place = 0
        for sentence in split_sentences(_without_run_in(block)):
            sentence = _clean(_as_sentence(sentence) if block.kind == "li" else sentence)
            if (
                _usable(sentence)
                and count_words(sentence) >= 5
                and not sentence.endswith((":", "："))
                and not boilerplate_kind(sentence)
            ):
                out.append(_Unit(sentence, paragraph, place))
                place += 1
        words += count_words(block.text)
    return out


def _without_transcript(units: list[_Unit]) -> list[_Unit]:
    """Units minus the turns of a transcript (a speaker label that comes back): the poster's
    own words say what the post is, an interview's lines do not."""
    turns = Counter(speaker(u.text) for u in units)
    recurring = {name for name, n in turns.items() if name and n >= 2}
    kept = [u for u in units if speaker(u.text) not in recurring]
    return kept or units


def _lead_summary(title: str, body: Sequence[Block]) -> str:
    start = next((i for i, b in enumerate(body) if _is_real_paragraph(b)), None)
    if start is None:
        # No paragraph worth the name: a list-only or one-line post.
        lines = [_clean(_as_sentence(b.text)) for b in body if b.kind != "heading"]
        return _fit([s for line in lines for s in split_sentences(line) if _usable(s)])
    lead = _opening_sentences(body[start])
    if lead and lead[-1].endswith((":", "：")) and len(lead) > 1:
        lead.pop()
    teaser = bool(lead) and is_teaser(lead[0])
    rest = body[start + 1 : start + 1 + _FOLLOW_WINDOW_BLOCKS]
    # A first paragraph long enough stands alone, unless it only sets the scene (a question,
    # a hypothetical) or the post states its claim only further on. (The cheap test on whole
    # blocks spares most posts from splitting the blocks that follow.)
    if (
        count_words(" ".join(lead)) >= MIN_WORDS
        and not teaser
        and (any(map(states_claim, lead)) or not any(states_claim(b.text) for b in rest))
    ):
        return _fit(lead)
    following = _without_transcript(_following(body[start + 1 :]))
    if (
        count_words(" ".join(lead)) >= MIN_WORDS
        and not teaser
        and not any(states_claim(u.text) for u in following)
    ):
        return _fit(lead)
    units = [_Unit(s, 0, i) for i, s in enumerate(lead) if not s.endswith((":", "："))]
    units += following
    if not units:
        return _fit(lead)
    return _fit(_pick(title, units, keep_first=not teaser))


# Weights of the features that pick sentences for a lead summary (see _pick). They were set
# to round values by hand; the bench shows the quality is flat around them.
_W_POSITION = 1.0
_POSITION_DECAY = 0.5
_W_CLAIM = 0.5
_W_CENTRAL = 1.0
_W_TITLE = 0.5
_PENALTY_QUESTION = 0.3
_PENALTY_ANAPHORIC = 0.2
_TARGET_WORDS = 50


def _pick(title: str, units: Sequence[_Unit], keep_first: bool) -> list[str]:
    """The best sentences of the opening, in the post's order, to about _TARGET_WORDS.

    A sentence scores for coming early, for stating the post's claim ("we show", "in this
    post"), for sharing words with the whole opening (centrality) and with the title; it loses
    for being a question or for opening a paragraph by leaning on what came before.
    """
    unit_terms = [_terms(u.text) for u in units]
    centre = _terms(title)
    for terms in unit_terms:
        centre.update(terms)
    centre_norm = math.sqrt(sum(v * v for v in centre.values()))
    title_terms = set(_terms(title))
    scores: list[float] = []
    for index, (unit, terms) in enumerate(zip(units, unit_terms, strict=True)):
        score = _W_POSITION / (1 + _POSITION_DECAY * index)
        score += _W_CLAIM * states_claim(unit.text)
        dot = sum(v * centre[k] for k, v in terms.items())
        if dot:
            norm = math.sqrt(sum(v * v for v in terms.values()))
            score += _W_CENTRAL * dot / (norm * centre_norm)
        score += _W_TITLE * len(title_terms & set(terms)) / max(1, len(title_terms))
        if unit.text.endswith("?"):
            score -= _PENALTY_QUESTION
        if unit.place == 0 and unit.paragraph > 0 and is_anaphoric(unit.text):
            score -= _PENALTY_ANAPHORIC
        scores.append(score)
    picked: set[int] = set()
    used = 0
    if keep_first:
        picked.add(0)
        used = count_words(units[0].text)
    for i in sorted(range(len(units)), key=lambda i: -scores[i]):
        if used >= _TARGET_WORDS:
            break
        n = count_words(units[i].text)
        if i in picked or used + n > MAX_WORDS:
            continue
        picked.add(i)
        used += n
    return [units[i].text for i in sorted(picked)]


# -- public -----------------------------------------------------------------------------
def summarize(title: str, content: str) -> str:
    """A plain-text summary of a post (HTML or plain text); '' when the post has no text."""
    body = _body(content, _OPENING_WORDS)
    if not body:
        return ""
    authored = _author_summary(body)
    if authored:
        return _fit(authored)
    return _lead_summary(title, body)


def reading_minutes(content: str) -> int:
    """Minutes to read the post at WORDS_PER_MINUTE; at least 1 for any text, 0 for none.

    Counted on the visible text (tags, styles and scripts stripped by a regular expression):
    a whole post through the structural parser cost more than its summary, and a few words of
    feed furniture do not change the minutes."""
    words = count_words(visible_text(content, len(content) + 1))
    if not words:
        return 0
    return max(1, round(words / WORDS_PER_MINUTE))
