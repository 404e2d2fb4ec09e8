"""Small, fast text helpers shared by ranking and de-duplication.

Kept deliberately independent of `digest.summarize`: ranking needs only the visible words
of a post's opening, quickly, for hundreds of posts per digest.
"""

from __future__ import annotations

import html
import re
import zlib
from collections.abc import Callable
from itertools import chain
from typing import TypeVar

# How much of a post's HTML we look at, and how many words of its opening we keep. 120 words
# rank the labelled fixtures (bench/rank.py) as well as 150 did, for less work on a post seen
# the first time; at 110 and fewer a short post on another topic starts to top a profile.
HTML_BUDGET = 2000
OPENING_WORDS = 120

_SKIP_BLOCKS = ("style", "script", "noscript", "svg", "template")
_TAG = re.compile(r"<[^>]*>")
# LessWrong (and its mirrors) frame each item: "Published on <date><br/><br/>" ... "Discuss".
_PUBLISHED = re.compile(r"^\s*Published on [^<\n]{3,60}?(?:<br\s*/?>\s*)+", re.I)
_DISCUSS = re.compile(r"(?:<br\s*/?>\s*)*<a [^>]*#comments[^>]*>\s*Discuss\s*</a>\s*$", re.I)
_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*(?:['\u2019][a-z]+)?")

STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "s",
        "t",
        "don",
        "re",
        "ve",
        "ll",
        "d",
        "m",
        "via",
        "per",
        "we'd",
        "i'm",
        "it's",
    ]
)


_SKIP_OPEN = re.compile(r"<(" + "|".join(_SKIP_BLOCKS) + r")\b", re.I)
_SKIP_CLOSE = {name: re.compile(r"</" + name + r"\s*>", re.I) for name in _SKIP_BLOCKS}


# After its fixed words and at most 60 characters of date, the "Published on" pattern matches
# only <br> tags and spaces: it cannot read past the first character that is neither.
_PUBLISHED_REACH = len("Published on ") + 60
_SPACES = re.compile(r"\s*")
_NOT_BREAK = re.compile(r"[^<br/>\s]", re.I)


def _drop_blocks(raw: str, start: int, stop: int, budget: int) -> tuple[str, int]:
    """The first `budget` characters of raw[start:stop] outside <style>/<script>/... blocks,
    and up to which index of `raw` that depends on. (Indices, not a slice of `raw`: a post's
    HTML may be long, and only its start is read.)"""
    out: list[str] = []
    size = 0
    pos = start
    read = start
    while pos < stop and size < budget:
        window = min(stop, pos + budget - size)
        read = max(read, window)
        m = _SKIP_OPEN.search(raw, pos, window)
        if m is None:
            out.append(raw[pos:window])
            break
        out.append(raw[pos : m.start()])
        size += m.start() - pos
        end = _SKIP_CLOSE[m.group(1).lower()].search(raw, m.end(), stop)
        if end is None:
            read = stop  # searched to the end
            break
        pos = end.end()
        read = max(read, pos)
        out.append(" ")
    return "".join(out), read


def visible_text(raw: str, budget: int = HTML_BUDGET) -> str:
    """Visible text of the start of an HTML fragment, whitespace *not* collapsed.

    Drops <style>/<script> contents, the feed's "Published on ..." line and the trailing
    "Discuss" link. Only the first `budget` characters of HTML (outside skipped blocks) are
    read, and tags are removed with a regular expression: ranking needs the opening's words,
    not a faithful rendering. ``" ".join(visible_text(raw).split()) == html_to_text(raw)``.
    """
    return visible_span(raw, budget)[0]


def visible_span(raw: str, budget: int = HTML_BUDGET) -> tuple[str, int]:
    """`visible_text`, and how many leading characters of `raw` it depends on: any string of
    the same length that starts with those characters has the same visible text.

    Lets a cache of per-post features compare a post's opening instead of hashing all of it.
    """
    text, used, _ = _visible(raw, budget, budget)
    return text, used


# The opening's words are looked for in this many characters of HTML per word first (the
# fixtures' posts have about 6.5), and in all `budget` characters only when too few are found.
WINDOW_CHARS_PER_WORD = 10


def opening_span(
    raw: str, n_words: int = OPENING_WORDS, budget: int = HTML_BUDGET
) -> tuple[list[str], int]:
    """``chunks(visible_text(raw, budget), n_words)``, and how many leading characters of `raw`
    that depends on (as in `visible_span`).

    Most posts' first words are in a small part of the budget: tags are removed, entities
    decoded and the text split only there.
    """
    window = n_words * WINDOW_CHARS_PER_WORD
    if window < budget:
        text, used, whole = _visible(raw, budget, window)
        parts = text.split(None, n_words)
        if len(parts) > n_words or whole:
            return parts[:n_words], used
    text, used, _ = _visible(raw, budget, budget)
    return chunks(text, n_words), used


def _visible(raw: str, budget: int, window: int) -> tuple[str, int, bool]:
    """The visible text of `raw` with this budget, as far as the first `window` (at most
    `budget`) characters of HTML tell it; how many leading characters of `raw` that depends
    on; and whether it is all of it.

    When it is not all of it, it agrees with the start of the budget's visible text except
    in its last whitespace-separated part, which may read differently (a word, an entity or a
    tag cut by the window); it may also stop short of the window (at a tag the window cuts).
    """
    if not raw:
        return "", 0, True
    n = len(raw)
    # What matching _PUBLISHED can read (see _PUBLISHED_REACH).
    lead = _SPACES.match(raw)
    reach = _NOT_BREAK.search(raw, (lead.end() if lead else 0) + _PUBLISHED_REACH)
    used = n if reach is None else reach.end()
    # The HTML read is raw[start:stop].
    m = _PUBLISHED.match(raw)
    start = m.end() if m else 0
    stop = n
    if n - start < budget:
        used = n  # the tail is searched for "Discuss"
        tail = _DISCUSS.search(raw, max(start, n - 400))
        if tail:
            stop = tail.start()
    # Reading `window` characters gives what reading `budget` does when there is no more.
    whole = window >= budget or stop - start <= window
    if raw.find("<", start, stop) != -1:
        # With no "<" in the first `window` characters, this gives their text too: whether
        # there is one further on does not matter.
        dropped, read = _drop_blocks(raw, start, stop, window)
        used = max(used, read)
        text = _TAG.sub(" ", dropped)
        if whole:
            # An unfinished tag cut by the budget.
            cut = text.rfind("<")
            if cut != -1 and ">" not in text[cut:]:
                text = text[:cut]
        else:
            # A "<" left has no ">" after it in the window, but may have one past it: from
            # there on, the budget's text can differ.
            cut = text.find("<")
            if cut != -1:
                text = text[:cut]
    else:
        end = min(stop, start + window)
        used = max(used, end)
        text = raw[start:end]
    if "&" in text:
        text = html.unescape(text)
    return text, min(used, n), whole


def html_to_text(raw: str, budget: int = HTML_BUDGET) -> str:
    """Visible text of the start of an HTML fragment, whitespace collapsed (see `visible_text`)."""
    return " ".join(visible_text(raw, budget).split())


def words(text: str) -> list[str]:
    """Lower-cased word tokens; intra-word hyphens are joined ("fine-tuning" -> "finetuning")."""
    text = text.lower()
    if "\u2010" in text or "\u2011" in text:
        text = text.replace("\u2010", "-").replace("\u2011", "-")
    toks = _TOKEN.findall(text)
    if "-" in text:
        toks = " ".join(toks).replace("-", "").split()
    return toks


_SUFFIXES = (
    ("ational", "ate"),
    ("ization", "ize"),
    ("isation", "ize"),
    ("ability", "able"),
    ("ibility", "ible"),
    ("fulness", "ful"),
    ("ousness", "ous"),
    ("iveness", "ive"),
    ("ations", "ate"),
    ("ation", "ate"),
    ("ities", "ity"),
    ("ings", ""),
    ("ing", ""),
    ("ies", "y"),
    ("ied", "y"),
    ("ers", ""),
    ("er", ""),
    ("es", ""),
    ("ed", ""),
    ("ly", ""),
    ("s", ""),
)
# Analyses below are memoized per distinct input (a word, or a whitespace-separated chunk of
# text): inputs repeat a lot (common words, the same post in several feeds).
_CACHE_LIMIT = 300_000
_V = TypeVar("_V")


class _Memo(dict[str, _V]):
    """input -> analysis, filled on first use; cleared when it grows past the limit."""

    def __init__(self, analyse: Callable[[str], _V]) -> None:
        super().__init__()
        self.analyse = analyse

    def __missing__(self, key: str) -> _V:
        if len(self) > _CACHE_LIMIT:  # bound memory in a long-running daemon
            self.clear()
        got = self[key] = self.analyse(key)
        return got


# (suffix, replacement, whether the word must still be checked to end with the suffix)
_Rule = tuple[str, str, bool]
_ALL_RULES: tuple[_Rule, ...] = tuple((s, r, True) for s, r in _SUFFIXES)


def _rule_table() -> dict[str, tuple[_Rule, ...]]:
    """Two lower-case letters a word ends with -> the rules of _SUFFIXES that may apply to it,
    in order; "ss", "us" and "is" (never stripped) are left out."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    table = {}
    for end in (a + b for a in letters for b in letters):
        if end not in ("ss", "us", "is"):
            table[end] = tuple((s, r, len(s) > 2) for s, r in _SUFFIXES if end.endswith(s[-2:]))
    return table


# Stemming every new word is a large part of a cold start: a word is compared with the few
# suffixes its last two letters allow instead of with all of them.
_RULES = _rule_table()


def _stem(word: str) -> str:
    n = len(word)
    if n <= 4:
        return word
    rules = _RULES.get(word[-2:])
    if rules is None:  # "ss", "us", "is", or not two lower-case letters
        if word.endswith(("ss", "us", "is")):
            return word
        rules = _ALL_RULES
    out = word
    for suffix, repl, check in rules:
        k = len(suffix)
        if (not check or word.endswith(suffix)) and n - k + len(repl) >= 4:
            out = word[: n - k] + repl
            break
    if out[-1] == "e":
        # "interpretable"/"interpretability" -> "interpret", "scalable" -> "scal"
        if len(out) > 7 and out.endswith(("able", "ible")):
            out = out[:-4]
        # "ations" -> "ate" and plain "-e" forms meet ("regulate"/"regulation").
        if out[-1] == "e" and len(out) > 4:
            out = out[:-1]
    return out


_STEMS = _Memo(_stem)


def stem(word: str) -> str:
    """A light suffix stripper: enough to meet "monitors"/"monitoring", "leaks"/"leaked"."""
    return _STEMS[word]


def _term_id(term: str) -> int:
    return zlib.crc32(term.encode()) & 0x3FFFFFFF


class _TermIds(dict[str, int]):
    """term -> a 30-bit id from its CRC-32: the same in every process and run.

    30 bits keep each id a one-digit Python int, which is cheap to hash and compare.
    """

    def __missing__(self, term: str) -> int:
        if len(self) > _CACHE_LIMIT:
            self.clear()
        got = self[term] = _term_id(term)
        return got


TERM_IDS = _TermIds()


class _TermOf(dict[str, tuple[str, ...]]):
    """word -> (its term,), or () for a stopword; filled on first use.

    The analyses are written out in `__missing__` (not passed in, as to `_Memo`): misses are
    most of the work of tokenizing posts in a fresh process. The one tuple per word is what
    every chunk of that word maps to (see `_ChunkTerms`), and a new term gets its `TERM_IDS`
    entry here, in the call that is made anyway, rather than in a call of its own later.
    """

    def __missing__(self, word: str) -> tuple[str, ...]:
        if len(self) > _CACHE_LIMIT:
            self.clear()
        got: tuple[str, ...]
        if word in STOPWORDS:
            got = self[word] = ()
            return got
        term = _stem(word)
        if term not in TERM_IDS:
            TERM_IDS[term] = _term_id(term)
        got = self[word] = (term,)
        return got


_TERM_OF = _TermOf()

# Characters that are never part of a token (see _TOKEN) and often surround a word.
_EDGE = ".,;:!?()[]{}<>\"'*\u201c\u201d\u2018\u2019\u2026"


def _plain_word(chunk: str) -> str:
    """The chunk's only word when it is one plain word with punctuation around it (most
    chunks are), else "" (then see `words`)."""
    core = chunk.lower().strip(_EDGE)
    return core if core.isascii() and core.isalnum() else ""


def _chunk_words(chunk: str) -> tuple[str, ...]:
    """`words` of one whitespace-free chunk."""
    word = _plain_word(chunk)
    return (word,) if word else tuple(words(chunk))


class _ChunkTerms(dict[str, tuple[str, ...]]):
    """chunk -> its terms, filled on first use (see `_TermOf`)."""

    def __missing__(self, chunk: str) -> tuple[str, ...]:
        if len(self) > _CACHE_LIMIT:
            self.clear()
        # `_plain_word`, inlined
        core = chunk.lower().strip(_EDGE)
        got: tuple[str, ...]
        if core.isascii() and core.isalnum():
            got = self[chunk] = _TERM_OF[core]
        else:
            got = self[chunk] = tuple(chain.from_iterable(map(_TERM_OF.__getitem__, words(chunk))))
        return got


_WORDS = _Memo(_chunk_words)
_TERMS = _ChunkTerms()


def chunks(text: str, limit: int = OPENING_WORDS) -> list[str]:
    """The first `limit` whitespace-separated chunks of `text` (case kept).

    The cheap first step of tokenizing: `chunk_words` and `term_seq` turn chunks into
    words and terms (lower-cased) through per-chunk caches.
    """
    return text.split(None, limit)[:limit]


def chunk_words(toks: list[str]) -> list[str]:
    """`words` of the chunks, in order."""
    return list(chain.from_iterable(map(_WORDS.__getitem__, toks)))


def term_seq(toks: list[str]) -> list[str]:
    """Stemmed content terms of chunks, stopwords removed, in order."""
    return list(chain.from_iterable(map(_TERMS.__getitem__, toks)))


def terms(text: str) -> list[str]:
    """Stemmed content terms of `text`, stopwords removed, in order."""
    return term_seq(text.split())


def opening(text: str, n_words: int = OPENING_WORDS) -> str:
    """The first `n_words` words of plain text."""
    parts = text.split(" ", n_words)
    return " ".join(parts[:n_words])
