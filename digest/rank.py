"""De-duplicate, score and order one subscriber's candidates, best first.

Score of a post (all parts pure functions of the post, the profile and `now`)::

    score = weight * (R + 0.15 * F + 0.05 * L)        (x 0.1 when a mute phrase matches)

    weight = feed's config weight * subscriber's weight for that feed (default 1)
    R      = rel / (rel + 3)                           text relevance, 0..1
    rel    = best interest + 0.3 * the other interests' scores
    interest score = BM25F over title (x3), summary (x1.5) and the opening 120 words (x1)
                     of the interest's words (scaled by the share of them present), its exact
                     phrase, and related terms from `rank_terms.RELATED` (x0.4)
    F      = 0.5 ** (age_hours / 48)                   freshness
    L      = min(1, log(1 + n) / log(1 + 70))          small length prior, n = content words
                                                        of the opening (stubs lose a little)

With no interests R is 0 and the order is by feed weight and freshness. Featured items are
then picked by maximal marginal relevance (0.75 * score / best - 0.25 * similarity to what is
already picked; similarity mixes text overlap and which interests matched) under the per-feed
cap; muted posts are never featured; everything else goes to `more`, best first.
"""

from __future__ import annotations

import gc
import hashlib
import marshal
import math
import os
import sys
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, repeat
from operator import itemgetter, mul
from typing import Any

from digest import rank_cache, rank_semantic
from digest.dedup import SKETCH, Record, cluster, parse_when
from digest.models import Candidate, Profile, RankedItem, Selection
from digest.rank_terms import RELATED
from digest.textindex import opening_span, term_seq, terms

HALF_LIFE_HOURS = 48.0
FRESHNESS_WEIGHT = 0.15
LENGTH_WEIGHT = 0.05
LENGTH_FULL_TERMS = 70
RELEVANCE_K = 3.0
OTHER_INTERESTS = 0.3
EXPANSION_WEIGHT = 0.4
MUTE_FACTOR = 0.1
# BM25F
K1 = 1.2
B = 0.75
FIELD_WEIGHTS = {"title": 3.0, "summary": 1.5, "body": 1.0}
# Diversity
MMR_LAMBDA = 0.75
MMR_POOL = 2  # featured slots x this many candidates are considered by MMR
TOPIC_SIMILARITY = 0.6  # how much "matched the same interests" counts as similarity
VECTOR_TERMS = 30
# A reason is given for each interest scoring at least this share of the post's best one.
REASON_SHARE = 0.5
REASON_MIN = 0.8


# --------------------------------------------------------------------------- interests


@dataclass(frozen=True, slots=True)
class _Query:
    """One interest: its own terms and phrase, and related phrases."""

    label: str
    terms: tuple[str, ...]
    related: tuple[tuple[str, ...], ...]


def _phrase_terms(phrase: str) -> tuple[str, ...]:
    return tuple(terms(phrase))


def _related_for(
    own: tuple[str, ...], keyed: dict[tuple[str, ...], tuple[str, ...]]
) -> tuple[tuple[str, ...], ...]:
    found: list[str] = list(keyed.get(own, ()))
    if not found:
        # "mechanistic interpretability" -> also the entry for "interpretability".
        for key, vals in keyed.items():
            if key and len(key) < len(own) and _contains(own, key):
                found.extend(vals)
    out: list[tuple[str, ...]] = []
    for phrase in found:
        t = _phrase_terms(phrase)
        if t and t != own and t not in out and not set(t) <= set(own):
            out.append(t)
    return tuple(out)


def _contains(seq: tuple[str, ...], sub: tuple[str, ...]) -> bool:
    n = len(sub)
    return any(seq[i : i + n] == sub for i in range(len(seq) - n + 1))


@dataclass(frozen=True, slots=True)
class _Queries:
    """A profile's interests, analysed once: the queries and an index from term to phrases."""

    queries: tuple[_Query, ...]
    # Every phrase (own or related) of every query: (query index, is_own, phrase terms).
    phrases: tuple[tuple[int, bool, tuple[str, ...]], ...]
    by_term: dict[str, tuple[int, ...]]  # term -> indices into `phrases`
    vocab: frozenset[str]


# Profiles repeat from digest to digest; the analysis depends on the interests and RELATED.
_QUERY_CACHE: dict[tuple[tuple[str, ...], int], _Queries] = {}


def _related_fingerprint() -> int:
    return hash(tuple(RELATED.items()))


def _queries(interests: Sequence[str]) -> _Queries:
    key = (tuple(interests), _related_fingerprint())
    got = _QUERY_CACHE.get(key)
    if got is not None:
        return got
    keyed = {_phrase_terms(k): v for k, v in RELATED.items()}
    queries: list[_Query] = []
    for label in interests:
        own = _phrase_terms(label)
        if own:
            queries.append(_Query(label.strip(), own, _related_for(own, keyed)))
    phrases: list[tuple[int, bool, tuple[str, ...]]] = []
    for qi, q in enumerate(queries):
        phrases.append((qi, True, q.terms))
        phrases.extend((qi, False, p) for p in q.related)
    by_term: dict[str, list[int]] = {}
    for pi, (_, _, phrase) in enumerate(phrases):
        for t in dict.fromkeys(phrase):
            by_term.setdefault(t, []).append(pi)
    got = _Queries(
        queries=tuple(queries),
        phrases=tuple(phrases),
        by_term={t: tuple(v) for t, v in by_term.items()},
        vocab=frozenset(by_term),
    )
    if len(_QUERY_CACHE) > 1000:
        _QUERY_CACHE.clear()
    _QUERY_CACHE[key] = got
    return got


def _mute_phrases(mute: Sequence[str]) -> list[tuple[str, str, frozenset[str]]]:
    """(label, " t1 t2 ", its terms) for substring search in a document's term string (which
    only posts having all the terms need)."""
    out = []
    for label in mute:
        t = _phrase_terms(label)
        if t:
            out.append((label.strip(), " " + " ".join(t) + " ", frozenset(t)))
    return out


# --------------------------------------------------------------------------- documents


@dataclass(slots=True)
class _Post:
    """What ranking needs of one post that depends on nothing else (not on the profile, the
    other posts or the time): cached per process in `_POSTS`, shared by every subscriber.

    Never modified once built, except `tf` and `joined`, filled in on first use (pure
    functions of `fields`).
    """

    text: str  # the opening's first words (`_lead`)
    record: Record
    present: set[str]
    fields: tuple[list[str], list[str], list[str]]  # terms of title, summary, body (in order)
    title_joined: str
    tf: dict[str, float] | None = None  # field-weighted term counts, for MMR vectors
    joined: str | None = None  # see `_joined`


def _joined(post: _Post) -> str:
    """ " t1 t2 ... " over title, summary and body, for phrase search.

    Built on first use: a phrase (" a b ") can only occur in a post that has every one of its
    terms (`present`), and few posts have all the terms of an interest or mute phrase.
    """
    got = post.joined
    if got is None:
        _, summary, body = post.fields
        got = post.joined = f"{post.title_joined}| {' '.join(summary)} | {' '.join(body)} "
    return got


_POSTS: rank_cache.PostCache[_Post] = rank_cache.PostCache()


def clear_post_cache() -> None:
    """Forget every post's cached text features (results do not change, only speed)."""
    rank_cache.clear_all()


def _post(c: Candidate) -> _Post:
    """`c`'s text features, from the cache when this exact post was seen before."""
    key = rank_cache.post_key(c.url, c.title, c.summary, c.published, c.content)
    got = _POSTS.lookup(key, c.content)
    if got is None:
        got, used = _analyse(c.url, c.title, c.summary, c.published, c.content)
        _POSTS.store(key, c.content[:used], got)
    return got


def _analyse(
    url: str, title: str, summary: str, published: datetime | None, content: str
) -> tuple[_Post, int]:
    """A post's features, and how many leading characters of `content` they depend on."""
    opening, used = opening_span(content)
    body = term_seq(opening)
    lead = _lead(opening)
    # `tokens` given, the record does not read `text`: it keeps what is stored of it.
    record = Record(url=url, title=title, published=published, text=lead, tokens=body)
    title_terms = terms(title)
    summary_terms = terms(summary) if summary else []
    present = set(body)
    present.update(title_terms, summary_terms)
    post = _Post(
        text=lead,
        record=record,
        present=present,
        fields=(title_terms, summary_terms, body),
        title_joined=" " + " ".join(title_terms) + " ",
    )
    return post, used


def _lead(opening: list[str]) -> str:
    """The opening's first SEMANTIC_WORDS words, space-separated: all `_semantic` reads of it.

    Joined from the chunks the opening was split into already (not split again from the text).
    """
    return " ".join(opening[:SEMANTIC_WORDS])


# --------------------------------------------------------------------------- stored features

# Bump when what `post_features` stores, or how any of it is computed, changes: the HTML
# reading and tokenizing of `textindex`, the title and URL analyses and shingles of `dedup`,
# the fields of `_Post`. (`tests/test_rank_features.py` pins the bytes made from the fixtures
# to catch a change that forgot to.)
FEATURES_VERSION = "rank-3"
# Shingle fingerprints are hashes of tuples of ints (see `dedup.shingles`): the same in every
# process of one Python build (whatever PYTHONHASHSEED), but not promised across Python
# versions or word sizes. Blobs carry this and are not used where tuples hash differently.
_HASHING = f"tuple-hash/{sys.hash_info.width}/{hash((1, 2, 3, 4))}"
# marshal version 2 writes no back-references, which later versions add depending on objects'
# reference counts: the same features always give the same bytes.
_MARSHAL_VERSION = 2


def _source_digest(url: str, title: str, summary: str, length: int, source: str) -> bytes:
    """What a blob's features were computed from: the fields, the content's length and the
    leading part of the content the features depend on (`source`)."""
    h = hashlib.sha256(f"{len(url)} {len(title)} {len(summary)} {length}\n".encode())
    h.update((url + title + summary).encode("utf-8", "surrogatepass"))
    h.update(source.encode("utf-8", "surrogatepass"))
    return h.digest()[:16]


def _ints(values: Sequence[int], typecode: str) -> bytes:
    """Little-endian array bytes (the blobs may be read on another machine)."""
    arr = array(typecode, values)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tobytes()


def _from_ints(data: bytes, typecode: str) -> array[int]:
    arr = array(typecode)
    arr.frombytes(data)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr


def post_features(
    url: str, title: str, summary: str, published: datetime | None, content: str
) -> bytes:
    """Everything `select` needs about a post that depends only on these fields, as bytes for
    `preload` in another process: the same bytes for the same input in every process.

    Pass exactly what `select` will be given as the `Candidate`'s fields: features made from
    another summary, title, URL or content (even one of another length) are not used.
    """
    post, used = _analyse(url, title, summary, published, content)
    r = post.record
    return _seal(
        (
            FEATURES_VERSION,
            _HASHING,
            _source_digest(url, title, summary, len(content), content[:used]),
            used,
            # Terms never contain whitespace; one str per field loads with one split.
            *(" ".join(f) for f in post.fields),
            post.text,
            r.url_key,
            tuple(sorted(r.titles)),
            tuple(sorted(r.title_terms)),
            tuple(sorted(r.title_marks)),
            r.reply,
            bool(r.post_id),
            _ints(sorted(r.shingles), "q"),
        )
    )


# What a blob holds: strings, bytes, ints and tuples of strings (all that marshal writes).
_Stored = tuple[str | bytes | int | tuple[str, ...], ...]


def _seal(features: _Stored) -> bytes:
    """The features' bytes, and a checksum of them (a damaged blob may still unmarshal)."""
    data = marshal.dumps(features, _MARSHAL_VERSION)
    return data + zlib.crc32(data).to_bytes(4, "little")


def _unseal(blob: bytes) -> Any:
    """What `_seal` sealed, or None when the checksum does not match."""
    data = blob[:-4]
    if len(blob) < 4 or zlib.crc32(data) != int.from_bytes(blob[-4:], "little"):
        return None
    return marshal.loads(data)


def _load(c: Candidate, blob: bytes) -> tuple[_Post, str] | None:
    """The post made from `c`'s stored features, and the leading part of its content they
    depend on; None when they are not from this version or not from these fields."""
    got = _unseal(blob)
    if got is None or got[0] != FEATURES_VERSION or got[1] != _HASHING:
        return None
    (
        _,
        _,
        digest,
        used,
        title_str,
        summary_str,
        body_str,
        text,
        url_key,
        titles,
        title_terms,
        title_marks,
        reply,
        has_post_id,
        shingles,
    ) = got
    content = c.content
    source = content[:used]
    if used > len(content) or digest != _source_digest(
        c.url, c.title, c.summary, len(content), source
    ):
        return None
    fields = (title_str.split(), summary_str.split(), body_str.split())
    present = set(fields[2])
    present.update(fields[0], fields[1])
    fps = _from_ints(shingles, "q")
    record = Record.restored(
        url=c.url,
        title=c.title,
        published=c.published,
        text=text,
        url_key=url_key,
        titles=frozenset(titles),
        title_terms=frozenset(title_terms),
        title_marks=frozenset(title_marks),
        reply=reply,
        post_id=url_key if has_post_id else "",
        shingles=frozenset(fps),
        sketch=tuple(fps[:SKETCH]),  # `fps` is sorted
    )
    post = _Post(
        text=text,
        record=record,
        present=present,
        fields=fields,
        title_joined=f" {title_str} ",
    )
    return post, source


def preload(posts: Iterable[tuple[Candidate, bytes]]) -> None:
    """Put features made by `post_features` into this process's cache, so that `select` over
    these candidates does not compute them again.

    Features of another FEATURES_VERSION, made from other fields than the candidate's, or
    that do not load are skipped (`select` computes those posts' features itself).
    """
    # As in `_select`: many small objects are made and none freed, no cyclic GC passes.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for c, blob in posts:
            key = rank_cache.post_key(c.url, c.title, c.summary, c.published, c.content)
            if _POSTS.lookup(key, c.content) is not None:
                continue
            try:
                got = _load(c, blob)
            except Exception:  # a damaged blob: whatever marshal or the unpacking raise
                continue
            if got is not None:
                post, source = got
                _POSTS.store(key, source, post)
    finally:
        if gc_was_enabled:
            gc.enable()


@dataclass(slots=True)
class _Doc:
    present: set[str]
    fields: tuple[list[str], list[str], list[str]]  # terms of title, summary, body (in order)
    title_joined: str
    n_words: int
    when: datetime | None
    weight: float
    text: str  # the opening's first words (`_lead`)
    post: _Post
    norms: tuple[float, float, float] = (1.0, 1.0, 1.0)  # BM25F length norms, set by _Index
    vector: dict[str, float] = field(default_factory=dict)
    topics: dict[str, float] = field(default_factory=dict)


def _doc(post: _Post, when: datetime | None, weight: float) -> _Doc:
    """One subscriber's view of a post: its cached features, date and feed weight."""
    return _Doc(
        present=post.present,
        fields=post.fields,
        title_joined=post.title_joined,
        n_words=len(post.fields[2]),
        when=when,
        weight=weight,
        text=post.text,
        post=post,
    )


_FIELD_W = (FIELD_WEIGHTS["title"], FIELD_WEIGHTS["summary"], FIELD_WEIGHTS["body"])


class _Index:
    """Document frequencies and average field lengths over one digest's posts."""

    def __init__(self, docs: list[_Doc]) -> None:
        self.docs = docs
        self.n = len(docs)
        # Document frequencies, counted (`count`) the first time an idf is needed: of the
        # profile's query terms and of the terms of the posts considered for featuring,
        # which is most of the digest's terms, so all are counted in one pass.
        self.df: Counter[str] = Counter()
        self._counted = False
        n_t = n_s = n_b = 0
        for d in docs:
            t, m, b = d.fields
            n_t += len(t)
            n_s += len(m)
            n_b += len(b)
        n = max(1, self.n)
        avg_t, avg_s, avg_b = max(1.0, n_t / n), max(1.0, n_s / n), max(1.0, n_b / n)
        for d in docs:
            t, m, b = d.fields
            d.norms = (
                1.0 - B + B * len(t) / avg_t,
                1.0 - B + B * len(m) / avg_s,
                1.0 - B + B * len(b) / avg_b,
            )
        self._idf: dict[str, float] = {}

    def count(self, terms: set[str] | frozenset[str]) -> None:
        """Make sure the document frequencies of `terms` are known (see `df`)."""
        if not self._counted and terms:
            self._counted = True
            self.df = Counter(chain.from_iterable(d.present for d in self.docs))

    def idf(self, term: str) -> float:
        got = self._idf.get(term)
        if got is None:
            self.count({term})
            df = self.df[term]
            got = math.log(1.0 + (self.n - df + 0.5) / (df + 0.5))
            self._idf[term] = got
        return got

    def _saturate(self, tf: float, idf: float) -> float:
        return idf * tf * (K1 + 1.0) / (tf + K1) if tf > 0 else 0.0

    def term_score(self, d: _Doc, term: str) -> float:
        """BM25F: weighted, length-normalized counts over the fields, saturated once."""
        tf = 0.0
        for seq, w, norm in zip(d.fields, _FIELD_W, d.norms, strict=True):
            if seq:
                n = seq.count(term)
                if n:
                    tf += w * n / norm
        return self._saturate(tf, self.idf(term))

    def phrase_score(self, d: _Doc, phrase: tuple[str, ...]) -> float:
        """BM25-saturated score of an exact multi-word phrase (0 for single words)."""
        if len(phrase) < 2:
            return 0.0
        needle = " " + " ".join(phrase) + " "
        count = _joined(d.post).count(needle) if set(phrase) <= d.present else 0
        if not count:
            return 0.0
        in_title = needle in d.title_joined
        tf = count + (FIELD_WEIGHTS["title"] - 1.0 if in_title else 0.0)
        idf = sum(self.idf(t) for t in phrase) / len(phrase)
        return self._saturate(tf, idf)

    def match(self, d: _Doc, phrase: tuple[str, ...], term_scores: dict[str, float]) -> float:
        """Words of `phrase` (scaled by the share present) plus the exact phrase.

        `term_scores` holds `term_score(d, t)` for the terms of `d` that occur in queries.
        """
        scores = [term_scores.get(t, 0.0) for t in phrase]
        present = sum(1 for s in scores if s > 0)
        if not present:
            return 0.0
        share = present / len(phrase)
        return sum(scores) * share * share + self.phrase_score(d, phrase)


class _Scorer:
    """BM25F of one profile's phrases over one digest's documents (`_Index.match`, unrolled).

    The same arithmetic as `_Index.term_score` / `phrase_score` / `match`, with the per-term
    and per-phrase constants (idf, needles) worked out once per digest instead of per post.
    """

    def __init__(self, index: _Index, qs: _Queries) -> None:
        self.qs = qs
        self.n = len(qs.queries)
        self.vocab = qs.vocab
        self.by_term = qs.by_term
        self._caps = [3.0 * RELEVANCE_K] * self.n
        index.count(qs.vocab)
        self.idf = {t: index.idf(t) for t in qs.vocab}
        # Per phrase: (query index, is_own, its single term or "", its terms, the needle for
        # the exact phrase or "", the phrase's idf).
        self.plan: list[tuple[int, bool, str, tuple[str, ...], str, float]] = [
            (
                qi,
                is_own,
                phrase[0] if len(phrase) == 1 else "",
                phrase,
                " " + " ".join(phrase) + " " if len(phrase) >= 2 else "",
                sum(self.idf[t] for t in phrase) / len(phrase),
            )
            for qi, is_own, phrase in qs.phrases
        ]

    def interests(self, d: _Doc) -> list[tuple[float, float]] | None:
        """(own score, related score) per interest; None when no interest term occurs."""
        hits = d.present & self.vocab
        if not hits:
            return None
        title, summary, body = d.fields
        n_title, n_summary, n_body = d.norms
        w_title, w_summary, w_body = _FIELD_W
        idf = self.idf
        by_term = self.by_term
        scores: dict[str, float] = {}
        touched: set[int] = set()
        for t in hits:
            tf = 0.0
            c = title.count(t)
            if c:
                tf += w_title * c / n_title
            if summary:
                c = summary.count(t)
                if c:
                    tf += w_summary * c / n_summary
            c = body.count(t)
            if c:
                tf += w_body * c / n_body
            scores[t] = idf[t] * tf * (K1 + 1.0) / (tf + K1) if tf > 0 else 0.0
            touched.update(by_term[t])
        n = self.n
        own = [0.0] * n
        rel = [0.0] * n
        plan = self.plan
        for pi in sorted(touched):
            qi, is_own, single, phrase, needle, phrase_idf = plan[pi]
            if single:  # the common case: one word, no phrase part
                value = scores[single]
                if value > 0:
                    if is_own:
                        own[qi] = value
                    else:
                        rel[qi] += value
                continue
            got = list(map(scores.get, phrase, repeat(0.0)))
            present = len(got) - got.count(0.0)  # scores are never negative
            if not present:
                continue
            share = present / len(phrase)
            value = sum(got) * share * share
            if needle and present == len(phrase):  # else the phrase cannot occur
                count = _joined(d.post).count(needle)
                if count:
                    tf = count + (FIELD_WEIGHTS["title"] - 1.0 if needle in d.title_joined else 0.0)
                    value += phrase_idf * tf * (K1 + 1.0) / (tf + K1)
            if is_own:
                own[qi] = value
            else:
                rel[qi] += value
        # (o, EXPANSION_WEIGHT * min(r, 3 * RELEVANCE_K)) per interest, without a Python step
        return list(
            zip(own, map(mul, repeat(EXPANSION_WEIGHT), map(min, rel, self._caps)), strict=True)
        )


# --------------------------------------------------------------------------- semantic extra

SEMANTIC_WEIGHT = 0.3
SEMANTIC_WORDS = 60  # the post is embedded as "<title>. <its first 60 words>"
_embedder: rank_semantic.Embedder | None = None
_embedder_tried = False
_semantic_enabled: bool | None = None  # see `set_semantic`


def set_semantic(enabled: bool | None) -> None:
    """Turn the optional semantic score on or off in this process.

    None (the default) leaves it to the environment: on when ``digest[semantic]`` is installed,
    unless DIGEST_SEMANTIC=0. Turning it on without the extra installed changes nothing.
    """
    global _semantic_enabled
    _semantic_enabled = enabled


def semantic_available() -> bool:
    """Whether digests in this process get a semantic score (loads the model if needed)."""
    return _load_embedder() is not None


def _load_embedder() -> rank_semantic.Embedder | None:
    """The optional local embedding model, loaded on first use, or None."""
    global _embedder, _embedder_tried
    enabled = _semantic_enabled
    if enabled is None:
        enabled = os.environ.get("DIGEST_SEMANTIC", "1") != "0"
    if not enabled:
        return None
    if not _embedder_tried:
        _embedder_tried = True
        _embedder = rank_semantic.load()
    return _embedder


def _semantic(queries: Sequence[_Query], docs: list[_Doc], titles: list[str]) -> list[float] | None:
    """Per post, 0..1 from its best cosine similarity to an interest; None without the extra."""
    if not queries or not docs:
        return None  # nothing to compare: do not load the model at all
    embedder = _load_embedder()
    if embedder is None:
        return None
    texts = [
        f"{t}. {' '.join(d.text.split(None, SEMANTIC_WORDS)[:SEMANTIC_WORDS])}"
        for t, d in zip(titles, docs, strict=True)
    ]
    try:
        best = embedder.best_cosine([q.label for q in queries], texts)
    except Exception:  # an optional extra must never break a digest
        return None
    # cosine ~0.15 unrelated .. ~0.6 on topic
    return [min(1.0, max(0.0, (b - 0.15) / 0.45)) for b in best]


# --------------------------------------------------------------------------- scoring


@dataclass(slots=True)
class _Scored:
    index: int
    score: float
    reasons: tuple[str, ...]
    muted: bool


def _freshness(when: datetime | None, now: datetime) -> float:
    if when is None:
        return 0.5
    age_hours = max(0.0, (now - when).total_seconds() / 3600.0)
    return math.pow(0.5, age_hours / HALF_LIFE_HOURS)


def _length_prior(n_words: int) -> float:
    return min(1.0, math.log1p(n_words) / math.log1p(LENGTH_FULL_TERMS))


def _score_all(
    docs: list[_Doc],
    titles: list[str],
    interests: Sequence[str],
    mute: Sequence[str],
    now: datetime,
) -> tuple[list[_Scored], _Index]:
    index = _Index(docs)
    qs = _queries(interests)
    queries = qs.queries
    labels = [q.label for q in queries]
    mutes = _mute_phrases(mute)
    semantic = _semantic(queries, docs, titles)
    scorer = _Scorer(index, qs)
    length_full = math.log1p(LENGTH_FULL_TERMS)
    lengths: dict[int, float] = {}  # n_words -> length prior term (few distinct values)
    log1p = math.log1p
    interests_of = scorer.interests
    out: list[_Scored] = []
    for i, d in enumerate(docs):
        fresh = FRESHNESS_WEIGHT * _freshness(d.when, now)
        length = lengths.get(d.n_words)
        if length is None:
            length = lengths[d.n_words] = LENGTH_WEIGHT * min(1.0, log1p(d.n_words) / length_full)
        reasons: list[str] = []
        per = interests_of(d)
        if per is None:  # no interest term in the post
            relevance = 0.0
        else:
            totals = [own + rel for own, rel in per]
            best = max(totals)
            rel_sum = best + OTHER_INTERESTS * (sum(totals) - best)
            relevance = rel_sum / (rel_sum + RELEVANCE_K)
            if best >= REASON_MIN:
                reasons = _reasons(labels, per, REASON_SHARE * best)
            if best > 0:
                d.topics = {label: t for label, t in zip(labels, totals, strict=True) if t > 0}
        if semantic is not None:
            relevance = (1.0 - SEMANTIC_WEIGHT) * relevance + SEMANTIC_WEIGHT * semantic[i]
        score = d.weight * (relevance + fresh + length)
        muted = False
        if mutes:
            muted_by = [
                label
                for label, needle, words in mutes
                if words <= d.present and needle in _joined(d.post)
            ]
            if muted_by:
                muted = True
                score *= MUTE_FACTOR
                reasons.append("muted: " + ", ".join(muted_by[:3]))
        out.append(_Scored(i, score, tuple(reasons), muted))
    return out, index


def _reasons(labels: list[str], per: list[tuple[float, float]], share: float) -> list[str]:
    """ "matches: ..." for interests scoring at least `share` with their own words, "related
    to: ..." for those reaching it through related terms only."""
    own_hits = [
        label
        for label, (own, rel) in zip(labels, per, strict=True)
        if own + rel >= share and own > 0
    ]
    related = [
        label
        for label, (own, rel) in zip(labels, per, strict=True)
        if own + rel >= share and own == 0 and rel > 0
    ]
    reasons = []
    if own_hits:
        reasons.append("matches: " + ", ".join(own_hits[:3]))
    if related:
        reasons.append("related to: " + ", ".join(related[:3]))
    return reasons


def _term_weights(fields: tuple[list[str], list[str], list[str]]) -> dict[str, float]:
    """Field-weighted term counts, in order of first occurrence (title, summary, body)."""
    title, summary, body = fields
    w_title, w_summary, w_body = _FIELD_W
    tf: dict[str, float] = {}
    for seq, w in ((title, w_title), (summary, w_summary)):
        for t, n in Counter(seq).items():
            tf[t] = tf.get(t, 0.0) + w * n
    # The body, the long field: the same sums, without a Python step per term.
    counts = Counter(body)
    if tf:
        for t in counts.keys() & tf.keys():
            tf[t] += w_body * counts[t]
        tf.update({t: w_body * n for t, n in counts.items() if t not in tf})
    else:
        tf = {t: w_body * n for t, n in counts.items()}
    return tf


def _vectors(docs: list[_Doc], index: _Index) -> None:
    """Unit tf-idf vectors over each post's strongest terms, for MMR similarity."""
    need = set().union(*(d.present for d in docs))
    index.count(need)  # their idf, in one pass
    idf = {t: index.idf(t) for t in need}
    log = math.log
    by_weight = itemgetter(1)
    for d in docs:
        tf = d.post.tf
        if tf is None:
            tf = _term_weights(d.fields)
            d.post.tf = tf
        weights = {t: (1.0 + log(n)) * idf[t] for t, n in tf.items()}
        # sorted() is stable, so ties keep the order of first occurrence (as nlargest would).
        top = sorted(weights.items(), key=by_weight, reverse=True)[:VECTOR_TERMS]
        norm = math.sqrt(sum([v * v for _, v in top])) or 1.0
        d.vector = {t: v / norm for t, v in top}


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum([v * b[t] for t, v in a.items() if t in b])


def _topic_norm(a: dict[str, float]) -> float:
    return math.sqrt(sum([v * v for v in a.values()]))


def _topic_cosine(a: dict[str, float], b: dict[str, float], na: float, nb: float) -> float:
    """Cosine of two topic vectors whose norms (`_topic_norm`) are `na` and `nb`."""
    if not a or not b:
        return 0.0
    dot = sum([v * b.get(t, 0.0) for t, v in a.items()])
    return dot / (na * nb)


def _order(
    scored: list[_Scored],
    docs: list[_Doc],
    index: _Index,
    feeds: list[str],
    max_items: int,
    per_feed_cap: int,
) -> tuple[list[_Scored], list[_Scored]]:
    """(featured in MMR order, the rest best first)."""
    by_score = sorted(scored, key=lambda s: (-s.score, s.index))
    eligible = [s for s in by_score if not s.muted]
    pool = eligible[: max(max_items * MMR_POOL, max_items + 10)] if max_items else []
    _vectors([docs[s.index] for s in pool], index)
    top = pool[0].score if pool and pool[0].score > 0 else 1.0
    featured: list[_Scored] = []
    per_feed: Counter[str] = Counter()
    max_sim = {s.index: 0.0 for s in pool}
    norms = {s.index: _topic_norm(docs[s.index].topics) for s in pool}
    remaining = list(pool)
    while remaining and len(featured) < max_items:
        best: _Scored | None = None
        best_value = -math.inf
        for s in remaining:
            if per_feed[feeds[s.index]] >= per_feed_cap:
                continue
            value = MMR_LAMBDA * s.score / top - (1.0 - MMR_LAMBDA) * max_sim[s.index]
            if value > best_value:
                best, best_value = s, value
        if best is None:
            break
        featured.append(best)
        per_feed[feeds[best.index]] += 1
        if len(featured) >= max_items:
            break
        # Posts of a feed at its cap can never be picked: drop them (their similarity no
        # longer matters); the others keep their order.
        remaining = [
            s for s in remaining if s is not best and per_feed[feeds[s.index]] < per_feed_cap
        ]
        b = docs[best.index]
        nb = norms[best.index]
        for s in remaining:
            a = docs[s.index]
            sim = _cosine(a.vector, b.vector)
            if a.topics and b.topics:
                sim = max(
                    sim,
                    TOPIC_SIMILARITY * _topic_cosine(a.topics, b.topics, norms[s.index], nb),
                )
            if sim > max_sim[s.index]:
                max_sim[s.index] = sim
    chosen = {s.index for s in featured}
    more = [s for s in by_score if s.index not in chosen]
    return featured, more


# --------------------------------------------------------------------------- public API


def _effective_weight(c: Candidate, profile: Profile) -> float:
    """The feed's config weight multiplied by the subscriber's weight for that feed."""
    return max(0.0, c.feed_weight * profile.feed_weights.get(c.feed, 1.0))


def select(profile: Profile, candidates: list[Candidate], now: datetime) -> Selection:
    """De-duplicate, score and order one subscriber's candidates.

    Every candidate ends up exactly once: as a featured item (at most `max_items`, at most
    `per_feed_cap` per feed, never muted), in `more` (best first), or in `merged` (folded into
    the item of the same post from another feed, which names that feed in `also_in`).
    """
    return _select(profile, candidates, now)[0]


def _select(
    profile: Profile, candidates: list[Candidate], now: datetime
) -> tuple[Selection, dict[int, list[int]]]:
    """`select`, plus the entry ids folded into each shown item (keyed by its entry id)."""
    if not candidates:
        return Selection(featured=[], more=[]), {}
    # The work allocates many small objects and frees few: no cyclic GC passes meanwhile.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _select_now(profile, candidates, now)
    finally:
        if gc_was_enabled:
            gc.enable()


def _select_now(
    profile: Profile, candidates: list[Candidate], now: datetime
) -> tuple[Selection, dict[int, list[int]]]:
    # Each post's HTML is read and tokenized once per process (`_post`); dedup, BM25F and MMR
    # share the terms.
    posts = [_post(c) for c in candidates]
    weights = [_effective_weight(c, profile) for c in candidates]
    roots = cluster([p.record for p in posts])
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(roots):
        groups.setdefault(r, []).append(i)

    def rep_key(i: int) -> tuple[float, float, int]:
        c = candidates[i]
        when = c.published or c.first_seen
        return (-weights[i], when.timestamp(), c.entry_id)

    reps: list[int] = []
    also: list[tuple[str, ...]] = []
    merged: list[int] = []
    folded: dict[int, list[int]] = {}
    for members in groups.values():
        if len(members) > 1:
            members.sort(key=rep_key)
        rep = members[0]
        reps.append(rep)
        folded[candidates[rep].entry_id] = [candidates[m].entry_id for m in members[1:]]
        own = candidates[rep].feed
        names: list[str] = []
        for m in members[1:]:
            merged.append(candidates[m].entry_id)
            c = candidates[m]
            name = c.feed_title or c.feed
            if c.feed != own and name not in names:
                names.append(name)
        also.append(tuple(names))

    docs = [
        _doc(posts[i], candidates[i].published or candidates[i].first_seen, weights[i])
        for i in reps
    ]
    titles = [candidates[i].title for i in reps]
    scored, index = _score_all(docs, titles, profile.interests, profile.mute, now)
    feeds = [candidates[i].feed for i in reps]
    featured, more = _order(
        scored, docs, index, feeds, max(0, profile.max_items), max(0, profile.per_feed_cap)
    )

    def item(s: _Scored) -> RankedItem:
        return RankedItem(
            candidate=candidates[reps[s.index]],
            score=s.score,
            reasons=s.reasons,
            also_in=also[s.index],
        )

    selection = Selection(
        featured=[item(s) for s in featured],
        more=[item(s) for s in more],
        merged=sorted(merged),
    )
    return selection, folded


def rank(interests: list[str], posts: list[dict[str, Any]]) -> list[str]:
    """Post ids, best first, for a subscriber with these interests (stable benchmark API).

    Each post is a dict with ``id``, ``title``, ``url``, ``published`` (ISO 8601), ``content``
    (the feed's HTML) and optionally ``summary`` and ``feed``. "Now" is the newest post's
    date, so the result does not depend on the clock. Duplicates of a post follow it directly.
    """
    if not posts:
        return []
    whens = [parse_when(p.get("published")) for p in posts]
    known = [w for w in whens if w is not None]
    now = max(known) if known else datetime(2000, 1, 1, tzinfo=UTC)
    candidates = [
        Candidate(
            entry_id=i,
            feed=str(p.get("feed") or "feed"),
            feed_title=str(p.get("feed") or ""),
            url=str(p.get("url") or ""),
            title=str(p.get("title") or ""),
            author="",
            published=whens[i],
            first_seen=whens[i] or now,
            content=str(p.get("content") or ""),
            summary=str(p.get("summary") or ""),
        )
        for i, p in enumerate(posts)
    ]
    profile = Profile(interests=tuple(interests), max_items=20, per_feed_cap=20)
    sel, folded = _select(profile, candidates, now)
    out: list[str] = []
    for it in (*sel.featured, *sel.more):
        out.append(str(posts[it.candidate.entry_id]["id"]))
        out.extend(str(posts[m]["id"]) for m in folded.get(it.candidate.entry_id, ()))
    return out
