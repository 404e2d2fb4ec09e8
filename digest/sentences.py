# ruff: noqa: RUF001, RUF003
# Non-ASCII punctuation and non-Latin text are used on purpose.
"""Sentence segmentation and word counting that hold up on real posts in several languages.

Splitting is rule based: a terminal mark followed by space is a boundary unless the word
before it is an abbreviation or an initial, or the text goes on in lower case. Marks with no
space after them (decimals, version numbers, URLs, file names) never split. Chinese and
Japanese full-width marks split without any space.
"""

from __future__ import annotations

import re

# Abbreviations that are almost never the last word of a sentence: titles before names,
# labels before numbers, and Latin/German/Russian/French short forms. Words such as "etc."
# or "Inc." are left out on purpose: they often do end a sentence, and the lower-case rule
# already keeps "etc. and so on" together.
_ATTACHED = frozenset(
    [
        "dr",
        "mr",
        "mrs",
        "ms",
        "mx",
        "prof",
        "sr",
        "jr",
        "st",
        "gen",
        "col",
        "lt",
        "capt",
        "cmdr",
        "sgt",
        "sen",
        "rep",
        "gov",
        "pres",
        "hon",
        "rev",
        "fr",
        "messrs",
        "mme",
        "mlle",
        "vs",
        "al",
        "cf",
        "e.g",
        "i.e",
        "viz",
        "ca",
        "approx",
        "dept",
        "univ",
        "bros",
        "z.b",
        "d.h",
        "u.a",
        "bzw",
        "vgl",
        "ggf",
        "evtl",
        "inkl",
        "sog",
        "bspw",
        "hr",
        "frl",
        "mio",
        "mrd",
        "tsd",
        "т.е",
        "т.к",
        "т.н",
        "т.ч",
        "см",
        "им",
        "напр",
        "p.ex",
        "éd",
        "env",
    ]
)

# Labels that belong to the number after them ("No. 5", "Fig. 3", "Jan. 12"); before a
# word they may well end a sentence ("I said no. Then...").
_BEFORE_NUMBER = frozenset(
    [
        "no",
        "nos",
        "nr",
        "vol",
        "vols",
        "fig",
        "figs",
        "eq",
        "eqs",
        "ch",
        "chap",
        "sec",
        "sect",
        "art",
        "para",
        "pp",
        "p",
        "str",
        "abs",
        "str",
        "стр",
        "рис",
        "тыс",
        "млн",
        "млрд",
        "руб",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)

# German writes ordinals as "3." ("am 3. Oktober", "im 19. Jahrhundert"); a number followed
# by a capitalised word is then not a sentence end when the word is one of these.
_ORDINAL_NOUNS = frozenset(
    [
        "januar",
        "februar",
        "märz",
        "april",
        "mai",
        "juni",
        "juli",
        "august",
        "september",
        "oktober",
        "november",
        "dezember",
        "jahrhundert",
        "jahrtausend",
        "jahrestag",
        "geburtstag",
        "platz",
        "mal",
        "stock",
        "lebensjahr",
        "kapitel",
        "auflage",
    ]
)

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_CJK_END = re.compile(r"[。！？]+[」』”’）)\]\"']*")
_WEST_END = re.compile(r"(?:[.!?‼⁇⁈⁉]+|…+|\.{3,})[\"'”’»)\]]*(?=\s+|$)")
_OPENERS = "\"'“‘«([¿¡"


def count_words(text: str) -> int:
    """Words for reading time and length limits; each CJK character counts as one word."""
    cjk = len(_CJK.findall(text))
    rest = _CJK.sub(" ", text)
    return cjk + len(rest.split())


def _is_boundary(text: str, start: int, end: int) -> bool:
    """Whether the terminal mark at text[start:end] ends a sentence."""
    following = text[end:].lstrip()
    if not following:
        return True
    first = following.lstrip(_OPENERS)[:1]
    if first.islower():
        return False
    mark = text[start:end]
    if not mark.startswith("."):
        return True
    if mark.startswith(".."):
        return True  # an ellipsis before a capital reads as a sentence end
    word_start = text.rfind(" ", 0, start) + 1
    word = text[word_start:start].lstrip(_OPENERS).lower()
    if not word:
        return True
    if word in _ATTACHED:
        return False
    if word in _BEFORE_NUMBER and first.isdigit():
        return False
    # Initials ("J. R. R. Tolkien", "т. е.") and dotted acronyms ("U.S.", "e.g.").
    if len(word) == 1 and word.isalpha():
        return False
    if "." in word and "://" not in word and all(len(p) <= 2 for p in word.split(".")):
        return False
    if word.isdigit():
        if word_start == 0:
            return False  # a list number such as "1. First point"
        next_word = following.split(maxsplit=1)[0].strip(".,;:").lower()
        if len(word) <= 3 and next_word in _ORDINAL_NOUNS:
            return False
    return True


def split_sentences(text: str) -> list[str]:
    """Sentences of one block of plain text, in order, stripped of surrounding space."""
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return []
    cuts: list[int] = []
    for match in _WEST_END.finditer(text):
        if _is_boundary(text, match.start(), match.end()):
            cuts.append(match.end())
    cuts.extend(match.end() for match in _CJK_END.finditer(text))
    sentences: list[str] = []
    begin = 0
    for cut in sorted(set(cuts)):
        piece = text[begin:cut].strip()
        if piece:
            sentences.append(piece)
        begin = cut
    tail = text[begin:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def cut_words(text: str, limit: int) -> str:
    """The first `limit` words of `text`, never splitting a word, with an ellipsis."""
    if _CJK.search(text) and count_words(text) > limit:
        out: list[str] = []
        used = 0
        for token in re.findall(
            r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|\S+|\s+", text
        ):
            cost = 0 if token.isspace() else count_words(token)
            if used + cost > limit:
                break
            out.append(token)
            used += cost
        return "".join(out).rstrip(" ,;:、，；：") + "…"
    words = text.split()
    if len(words) <= limit:
        return text
    return " ".join(words[:limit]).rstrip(",;:—–-(") + "…"
