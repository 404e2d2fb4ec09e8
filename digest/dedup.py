"""Cross-feed de-duplication: the same post reached through several feeds is one post.

Three pieces of evidence, strongest first:

1. **Canonical URL** -- scheme dropped, host lower-cased without ``www.``/``m.``, known mirror
   domains mapped to one key (LessWrong, the Alignment Forum and GreaterWrong share post ids:
   ``/posts/<id>/<slug>`` keys on the id), tracking parameters (``utm_*``, ``fbclid``,
   ``gclid``, ``ref``, ``mc_cid``, ...) and fragments removed, trailing slash ignored.
2. **Normalized title** -- decorations such as ``[AF]``, ``[Linkpost]``, ``(crosspost)`` and a
   trailing ``— Site name`` removed -- plus dates within a few days and text that does not
   contradict it.
3. **Text containment** -- shingles of 4 consecutive content words of the opening; most
   of the shorter opening must occur in the other.

Vetoes keep two different posts apart even when they look alike: dates far apart (weekly
"Open Thread" posts share a title) and titles that differ in numbers or dates ("AI #171" vs
"AI #172"). A URL match outranks the date veto (it is the same page), but not a title *and*
text that both disagree (a feed that gives every item its home page as link). Groups are
merged only when no pair across them is vetoed, so a chain of look-alikes cannot glue two
different posts together.
"""

from __future__ import annotations

import html
import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from digest.rank_cache import PostCache, post_key
from digest.textindex import (
    TERM_IDS,
    chunk_words,
    chunks,
    term_seq,
    visible_span,
    visible_text,
    words,
)

# Dates further apart than this veto a title- or text-based match.
MAX_DAYS_APART = 4.0
# Shingle size and how much of the opening is fingerprinted.
SHINGLE = 4  # `shingles` spells out its four terms
FINGERPRINT_TERMS = 70
MIN_SHINGLES = 8
SKETCH = 8
BUCKET_CAP = 16  # a key shared by more entries than this is boilerplate
# Thresholds (see `_same`).
TITLE_MATCH_MIN_CONTAINMENT = 0.5
TEXT_MATCH_CONTAINMENT = 0.8
TEXT_ONLY_CONTAINMENT = 0.9
TITLE_SIMILAR = 0.5

TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "igshid",
        "ref",
        "ref_src",
        "ref_url",
        "referrer",
        "mc_cid",
        "mc_eid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "trk",
        "spm",
        "cmpid",
        "guccounter",
        "oly_enc_id",
        "oly_anon_id",
        "vero_id",
        "wickedid",
        "_ga",
        "_gl",
        "ncid",
        "sr_share",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_", "at_")

# Hosts that serve the same posts under the same ids, mapped to one key.
MIRRORS = {
    "lesswrong.com": "lesswrong.com",
    "alignmentforum.org": "lesswrong.com",
    "greaterwrong.com": "lesswrong.com",
    "lw.greaterwrong.com": "lesswrong.com",
    "ea.greaterwrong.com": "forum.effectivealtruism.org",
    "forum.effectivealtruism.org": "forum.effectivealtruism.org",
}
# On these sites a post's identity is its id; the slug after it may change.
_ID_PATHS = re.compile(r"^/(?:posts|s/[^/]+/p|ea/posts)/([A-Za-z0-9]{8,24})(?:/|$)")

_LEAD_TAGS = re.compile(r"^\s*(?:[\[(][^\])]{1,30}[\])]\s*[:\-\u2013\u2014]?\s*)+")
_DECOR_WORDS = re.compile(
    r"[\[(]\s*(?:cross[\s-]?post(?:ed)?|link[\s-]?post|repost(?:ed)?|mirror(?:ed)?)"
    r"(?:\s+(?:from|to|on)\s+[^\])]*)?\s*[\])]",
    re.I,
)
_LEAD_WORDS = re.compile(
    r"^\s*(?:cross[\s-]?post(?:ed)?|link[\s-]?post|repost)\s*[:\-\u2013\u2014]\s*", re.I
)
_SITE_SUFFIX = re.compile(
    r"\s+(?:[|\u00b7\u2022]|[-\u2013\u2014])\s+([^|\u00b7\u2022\u2013\u2014]{1,60})$"
)
_REPLY = re.compile(
    r"^\s*(?:\[[^\]]{1,30}\]\s*)?(?:re|reply to|response to|responding to|rebuttal to|"
    r"comments? on|a reply to|a response to)\b\s*:?",
    re.I,
)
# A character `_SITE_SUFFIX` needs: titles without one cannot match it.
_SEPARATOR = re.compile(r"[|\u00b7\u2022\-\u2013\u2014]")
# http(s) URL with a plain host (no user, port or IPv6) and no query or fragment: the parts
# `urlsplit` would give, without its cost.
_SIMPLE_URL = re.compile(r"(?i:https?)://([A-Za-z0-9.-]+)(/[^?#\s]*)?\Z")
_ID_HOSTS = tuple(f"{h}/posts/" for h in set(MIRRORS.values()))
_MONTHS = frozenset(
    [
        "jan",
        "feb",
        "mar",
        "apr",
        "may",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "january",
        "february",
        "march",
        "april",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ]
)


@dataclass(slots=True)
class Record:
    """What de-duplication looks at for one entry."""

    url: str
    title: str
    published: datetime | None
    text: str  # visible text of the opening (already extracted from HTML, see `visible_text`)
    tokens: list[str] | None = None  # term_seq of the text's opening, if the caller has it
    url_key: str = ""
    titles: frozenset[str] = frozenset()
    title_terms: frozenset[str] = frozenset()
    title_marks: frozenset[str] = frozenset()
    reply: bool = False
    post_id: str = ""  # the id in the URL, on sites whose URLs carry post ids (MIRRORS)
    shingles: frozenset[int] = field(default_factory=frozenset)
    sketch: tuple[int, ...] = ()  # the SKETCH smallest shingles (see `cluster`)

    def __post_init__(self) -> None:
        self.url_key = canonical_url(self.url)
        folded = _fold(self.title)
        undecorated = _undecorate_folded(folded)
        chunked = undecorated.split()  # words and terms through textindex's per-chunk caches
        toks = chunk_words(chunked)
        self.titles = _title_variants(undecorated, toks)
        self.reply = bool(_REPLY.match(folded))
        if self.url_key.startswith(_ID_HOSTS):
            self.post_id = self.url_key
        self.title_terms = frozenset(term_seq(chunked))
        self.title_marks = frozenset(filter(str.isdigit, toks)).union(_MONTHS.intersection(toks))
        if self.tokens is None:
            self.tokens = term_seq(chunks(self.text, 2 * FINGERPRINT_TERMS))
        self.shingles = shingles(self.tokens)
        self.sketch = _smallest(self.shingles)
        self.tokens = None

    @classmethod
    def restored(
        cls,
        *,
        url: str,
        title: str,
        published: datetime | None,
        text: str,
        url_key: str,
        titles: frozenset[str],
        title_terms: frozenset[str],
        title_marks: frozenset[str],
        reply: bool,
        post_id: str,
        shingles: frozenset[int],
        sketch: tuple[int, ...],
    ) -> Record:
        """A record with its analyses given (saved from one built the usual way), without
        redoing them."""
        r = object.__new__(cls)
        r.url, r.title, r.published, r.text, r.tokens = url, title, published, text, None
        r.url_key, r.titles, r.title_terms = url_key, titles, title_terms
        r.title_marks, r.reply, r.post_id = title_marks, reply, post_id
        r.shingles, r.sketch = shingles, sketch
        return r


def canonical_url(url: str) -> str:
    """A key equal for the same page reached through mirrors or with tracking parameters.

    Empty for URLs that name no particular page (no host, or a site's home page).
    """
    url = (url or "").strip()
    if not url:
        return ""
    simple = _SIMPLE_URL.match(url)
    if simple:  # the common case, without urlsplit: http(s), a plain host, a path, no query
        host = simple.group(1).lower().rstrip(".")
        port = None
        path = simple.group(2) or "/"
        query_string = ""
    else:
        if "//" not in url:
            url = "//" + url
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower().rstrip(".")
            port = parts.port
        except ValueError:
            return ""
        path = parts.path or "/"
        query_string = parts.query
    if not host:
        return ""
    for prefix in ("www.", "m.", "amp."):
        if host.startswith(prefix) and host.count(".") >= 2:
            host = host[len(prefix) :]
    mirror = MIRRORS.get(host)
    if mirror is not None:
        host = mirror
        m = _ID_PATHS.match(path)
        if m:
            return f"{host}/posts/{m.group(1)}"
    if port and port not in (80, 443):
        host = f"{host}:{port}"
    if "//" in path:
        path = re.sub(r"/{2,}", "/", path)
    if path.endswith("/index.html") or path.endswith("/index.htm"):
        path = path[: path.rfind("/") + 1]
    path = path.rstrip("/")
    query = [
        (k, v)
        for k, v in (parse_qsl(query_string, keep_blank_values=True) if query_string else ())
        if k.lower() not in TRACKING_PARAMS and not k.lower().startswith(TRACKING_PREFIXES)
    ]
    if not path and not query:
        return ""  # a home page says nothing about which post this is
    key = host + path
    if query:
        key += "?" + urlencode(sorted(query))
    return key


def _fold(text: str) -> str:
    text = text or ""
    if "&" in text:
        text = html.unescape(text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return (
        text.replace("\u2019", "'")
        .replace("\u2018", "'")
        .replace("\u201c", '"')
        .replace("\u201d", '"')
    )


def _undecorate(title: str) -> str:
    return _undecorate_folded(_fold(title))


def _undecorate_folded(t: str) -> str:
    """`_undecorate` of a title already through `_fold`."""
    if "[" in t or "(" in t or ":" in t:
        t = _DECOR_WORDS.sub(" ", t)
        t = _LEAD_WORDS.sub("", t)
        t = _LEAD_TAGS.sub("", t)
    return t.strip()


def normalize_title(title: str) -> str:
    """Lower-cased words of a title with crosspost/linkpost decorations removed."""
    return " ".join(words(_undecorate(title)))


def title_variants(title: str) -> frozenset[str]:
    """The normalized title, and the same without a trailing " — Site name" part."""
    t = _undecorate(title)
    return _title_variants(t, words(t))


def _title_variants(t: str, toks: list[str]) -> frozenset[str]:
    out = {" ".join(toks)}
    m = _SITE_SUFFIX.search(t) if _SEPARATOR.search(t) else None
    if m and len(m.group(1).split()) <= 5:
        head = " ".join(words(t[: m.start()]))
        if len(head.split()) >= 2:
            out.add(head)
    out.discard("")
    return frozenset(out)


def shingles(tokens: list[str]) -> frozenset[int]:
    """Fingerprints of the shingles (4 consecutive content terms) of the start of a text.

    Stable across processes: terms map to CRC-32-derived ints, and a shingle's fingerprint is
    the hash of its tuple of those ints. Python salts the hashes of str and bytes per process
    (PYTHONHASHSEED), but not those of ints or of tuples of ints, so the fingerprints -- and
    which pairs the sketch in `cluster` proposes -- do not change from one run to the next.
    """
    if len(tokens) < SHINGLE:
        return frozenset()
    ids = list(map(TERM_IDS.__getitem__, tokens[:FINGERPRINT_TERMS]))
    # zip(*[ids[i:] for i in range(SHINGLE)]) written out: this runs for every new post.
    return frozenset(map(hash, zip(ids, ids[1:], ids[2:], ids[3:], strict=False)))


# Shingle fingerprints are tuple hashes: near-uniform over the 64-bit signed range.
_HASH_LOW = -(2**63)
_HASH_SPAN = 2**64


def _smallest(fps: frozenset[int]) -> tuple[int, ...]:
    """The SKETCH smallest of `fps`, in ascending order: ``tuple(sorted(fps)[:SKETCH])``.

    Sorting every fingerprint is most of the cost, so only those under a bound expected to
    let about 2 * SKETCH through are sorted; when fewer than SKETCH pass, all of them are.
    """
    n = len(fps)
    if n > 4 * SKETCH:
        below = sorted(filter((_HASH_LOW + _HASH_SPAN * 2 * SKETCH // n).__gt__, fps))
        if len(below) >= SKETCH:
            return tuple(below[:SKETCH])
    return tuple(sorted(fps)[:SKETCH])


def containment(a: frozenset[int], b: frozenset[int]) -> float | None:
    """Share of the smaller shingle set found in the other; None when either is too short."""
    if len(a) < MIN_SHINGLES or len(b) < MIN_SHINGLES:
        return None
    small, big = (a, b) if len(a) <= len(b) else (b, a)
    return len(small & big) / len(small)


def title_similarity(a: Record, b: Record) -> float:
    if a.titles & b.titles:
        return 1.0
    if not a.title_terms or not b.title_terms:
        return 0.0
    return len(a.title_terms & b.title_terms) / len(a.title_terms | b.title_terms)


def _days_apart(a: Record, b: Record) -> float | None:
    if a.published is None or b.published is None:
        return None
    return abs((a.published - b.published).total_seconds()) / 86400.0


def _conflict(a: Record, b: Record) -> bool:
    """True when a and b must not be in one group, whatever else matches."""
    if a.url_key and a.url_key == b.url_key:
        cont = containment(a.shingles, b.shingles)
        # Same page, unless title and text both say otherwise (a feed linking its home page).
        return title_similarity(a, b) < TITLE_SIMILAR and cont is not None and cont < 0.5
    if a.post_id and b.post_id and a.post_id != b.post_id:
        return True  # two ids on a site whose URLs carry post ids: two posts
    if a.reply != b.reply:
        return True  # "Re: X" is a different post from X, however much of X it quotes
    days = _days_apart(a, b)
    if days is not None and days > MAX_DAYS_APART:
        return True
    return bool(a.title_marks and b.title_marks and a.title_marks != b.title_marks)


def _same(a: Record, b: Record) -> bool:
    """Whether two entries are the same post (see the module docstring)."""
    if _conflict(a, b):
        return False
    if a.url_key and a.url_key == b.url_key:
        return True
    cont = containment(a.shingles, b.shingles)
    if a.titles & b.titles:
        return cont is None or cont >= TITLE_MATCH_MIN_CONTAINMENT
    if cont is not None and cont >= TEXT_MATCH_CONTAINMENT:
        if title_similarity(a, b) >= TITLE_SIMILAR:
            return True
        # Titles differ: only near-identical openings (each mostly inside the other), not a
        # short post quoted in full inside a longer one.
        both = len(a.shingles & b.shingles) / max(len(a.shingles), len(b.shingles))
        return both >= TEXT_ONLY_CONTAINMENT
    return False


def cluster(records: list[Record]) -> list[int]:
    """For each record, the index of the first record of its group."""
    n = len(records)
    # Exact keys: canonical URL and title variants.
    buckets: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        keys = ["t:" + t for t in r.titles]
        if r.url_key:
            keys.append("u:" + r.url_key)
        for k in keys:
            buckets.setdefault(k, []).append(i)
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        if 2 <= len(members) <= BUCKET_CAP:
            pairs.update(itertools.combinations(members, 2))
    # Text: index each opening's SKETCH smallest shingle hashes and probe every opening's
    # shingles against them. A pair with containment >= 0.8 shares a sketch hash unless all
    # of the smaller opening's sketch falls in the other 20% (about 0.2 ** SKETCH).
    owners: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        for h in r.sketch:
            owners.setdefault(h, []).append(i)
    for h in [h for h, others in owners.items() if len(others) > BUCKET_CAP]:
        del owners[h]  # boilerplate shared by many openings
    sketched = set(owners)
    owned = owners.__getitem__
    for i, r in enumerate(records):
        near = set(itertools.chain.from_iterable(map(owned, r.shingles & sketched)))
        near.discard(i)
        pairs.update((i, j) if i < j else (j, i) for j in near)

    parent = list(range(n))
    groups: dict[int, list[int]] = {i: [i] for i in range(n)}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in sorted(pairs):
        ri, rj = find(i), find(j)
        if ri == rj or not _same(records[i], records[j]):
            continue
        if any(_conflict(records[x], records[y]) for x in groups[ri] for y in groups[rj]):
            continue
        keep, gone = (ri, rj) if ri < rj else (rj, ri)
        parent[gone] = keep
        groups[keep].extend(groups.pop(gone))
    return [find(i) for i in range(n)]


def parse_when(value: object) -> datetime | None:
    """An aware datetime from a datetime or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value.strip():
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def record_from_dict(entry: dict[str, Any]) -> Record:
    return Record(
        url=str(entry.get("url") or ""),
        title=str(entry.get("title") or ""),
        published=parse_when(entry.get("published")),
        text=visible_text(str(entry.get("content") or "")),
    )


# `group` sees the same entries again and again in a long-lived process; a Record is a pure
# function of url, title, published and content, and `cluster` does not modify records.
_RECORDS: PostCache[Record] = PostCache()


def _cached_record(entry: dict[str, Any]) -> Record:
    url = str(entry.get("url") or "")
    title = str(entry.get("title") or "")
    published = parse_when(entry.get("published"))
    content = str(entry.get("content") or "")
    key = post_key(url, title, "", published, content)
    got = _RECORDS.lookup(key, content)
    if got is None:
        text, used = visible_span(content)
        got = Record(url=url, title=title, published=published, text=text)
        _RECORDS.store(key, content[:used], got)
    return got


def group(entries: list[dict[str, Any]]) -> list[str]:
    """One group label per entry; equal labels mean the same post.

    Each entry is a dict with ``entry_id``, ``feed``, ``url``, ``title``, ``published`` (ISO 8601
    or datetime) and ``content`` (the feed's HTML). The label is ``g<n>``, n being the position
    of the group's first entry.
    """
    roots = cluster([_cached_record(e) for e in entries])
    return [f"g{r}" for r in roots]
