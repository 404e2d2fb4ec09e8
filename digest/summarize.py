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
   bylines, link lines, notes to editors). When it is thin, the following sentences that are
   closest to the post's opening and title are added, in the post's order.
5. The result is cut to whole sentences of about 40 to 90 words; a sentence is cut, with an
   ellipsis, only when the first one alone is too long.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from digest.sentences import count_words, cut_words, split_sentences
from digest.summarize_html import Block, blocks_of
from digest.summarize_rules import (
    boilerplate_kind,
    ends_sentence,
    is_furniture,
    is_label,
    is_link_line,
    is_toc_heading,
    summary_label,
)

__all__ = ["SUMMARIZER_VERSION", "WORDS_PER_MINUTE", "reading_minutes", "summarize"]

SUMMARIZER_VERSION = "2"
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
    """The block's text without a bold run-in heading ("**Background.** Text...")."""
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


def _cosine(a: Counter[str], b: Counter[str]) -> float:
    dot = sum(v * b[k] for k, v in a.items() if k in b)
    if not dot:
        return 0.0
    norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
    return dot / norm


def _candidates(blocks: Iterable[Block]) -> list[str]:
    """Sentences after the first paragraph that could fill out a thin summary."""
    out: list[str] = []
    words = 0
    for count, block in enumerate(blocks):
        if count >= _FOLLOW_WINDOW_BLOCKS or words >= _FOLLOW_WINDOW_WORDS:
            break
        if block.kind not in ("p", "quote", "li") or is_label(block) or is_link_line(block):
            continue
        if boilerplate_kind(block.text):
            continue
        for sentence in split_sentences(_without_run_in(block)):
            sentence = _clean(_as_sentence(sentence) if block.kind == "li" else sentence)
            if (
                _usable(sentence)
                and count_words(sentence) >= 5
                and not sentence.endswith((":", "："))
                and not boilerplate_kind(sentence)
            ):
                out.append(sentence)
        words += count_words(block.text)
    return out


def _lead_summary(title: str, body: Sequence[Block]) -> str:
    start = next((i for i, b in enumerate(body) if _is_real_paragraph(b)), None)
    if start is None:
        # No paragraph worth the name: a list-only or one-line post.
        lines = [_clean(_as_sentence(b.text)) for b in body if b.kind != "heading"]
        return _fit([s for line in lines for s in split_sentences(line) if _usable(s)])
    lead = _opening_sentences(body[start])
    if lead and lead[-1].endswith((":", "：")) and len(lead) > 1:
        lead.pop()
    if count_words(" ".join(lead)) >= MIN_WORDS:
        return _fit(lead)
    pool = _candidates(body[start + 1 :])
    if not lead:
        lead, pool = pool[:1], pool[1:]
    chosen = _pick(title, lead, pool)
    return _fit(chosen)


def _pick(title: str, lead: list[str], pool: list[str]) -> list[str]:
    """`lead` plus the pool sentences most like the opening, in the post's order."""
    used = count_words(" ".join(lead))
    if used >= MIN_WORDS or not pool:
        return lead
    centre = _terms(" ".join([title, title, *lead, *pool]))
    scored = sorted(
        range(len(pool)),
        key=lambda i: -(_cosine(_terms(pool[i]), centre) + 0.25 / (1 + i)),
    )
    picked: set[int] = set()
    for i in scored:
        n = count_words(pool[i])
        if used + n > MAX_WORDS:
            continue
        picked.add(i)
        used += n
        if used >= MIN_WORDS:
            break
    return lead + [pool[i] for i in sorted(picked)]


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
    """Minutes to read the post at WORDS_PER_MINUTE; at least 1 for any text, 0 for none."""
    words = sum(count_words(b.text) for b in _body(content))
    if not words:
        return 0
    return max(1, round(words / WORDS_PER_MINUTE))
