"""Stored per-post features (`rank.post_features` / `rank.preload`) change speed, never results."""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import digest.rank as rank_module
from bench.rank import FIXTURES, load_posts, timing_inputs
from digest.models import Candidate, Profile
from digest.rank import post_features, preload, select
from digest.textindex import OPENING_WORDS, chunks

# `lexical_only` is test_rank_cache's autouse fixture, applied here too: no semantic extra, and
# an empty per-post cache around each test.
from .test_rank_cache import NOW, PROFILES, candidates, lexical_only, snapshot  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def features(c: Candidate) -> bytes:
    return post_features(c.url, c.title, c.summary, c.published, c.content)


def with_summaries(cands: list[Candidate]) -> list[Candidate]:
    """Some candidates with a summary, as the store gives them (one empty, one non-ASCII)."""
    out = list(cands)
    for i in range(0, len(out), 3):
        out[i] = replace(out[i], summary=f"On interpretability and AI control, part {i}.")
    out[1] = replace(out[1], summary="Résumé \u2019quoted\u2019 \u2014 naïve café, scheming")
    return out


def stored(cands: list[Candidate]) -> list[bytes]:
    """The features as another process would have made them: nothing cached here after."""
    blobs = [features(c) for c in cands]
    rank_module.clear_post_cache()
    return blobs


def must_not_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("a preloaded post's features were computed again")

    monkeypatch.setattr(rank_module, "_analyse", fail)


def fresh_results(cands: list[Candidate], profiles: list[Profile]) -> list[tuple[object, ...]]:
    out = []
    for profile in profiles:
        rank_module.clear_post_cache()
        out.append(snapshot(select(profile, cands, NOW)))
    rank_module.clear_post_cache()
    return out


def test_preloaded_features_give_the_same_results_on_the_fixtures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cands = with_summaries(candidates())
    expected = fresh_results(cands, PROFILES)
    blobs = stored(cands)
    preload(zip(cands, blobs, strict=True))
    assert len(rank_module._POSTS) == len(
        {
            rank_module.rank_cache.post_key(c.url, c.title, c.summary, c.published, c.content)
            for c in cands
        }
    )
    must_not_compute(monkeypatch)
    for profile, want in zip(PROFILES, expected, strict=True):
        assert snapshot(select(profile, cands, NOW)) == want
    # A subset and a reordering of the preloaded posts too.
    part = cands[::-2]
    got = snapshot(select(PROFILES[0], part, NOW))
    monkeypatch.undo()
    rank_module.clear_post_cache()
    assert got == snapshot(select(PROFILES[0], part, NOW))


def test_preloaded_features_give_the_same_results_on_the_bench_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = json.loads((FIXTURES / "ranking" / "relevance.json").read_text())
    t = timing_inputs(load_posts(), spec)
    now = t.now
    profiles = [t.profile, t.other, Profile(interests=(), max_items=10)]
    expected = []
    for profile in profiles:
        rank_module.clear_post_cache()
        expected.append(snapshot(select(profile, t.cands, now)))
    blobs = stored(t.cands)
    preload(zip(t.cands, blobs, strict=True))
    must_not_compute(monkeypatch)
    for profile, want in zip(profiles, expected, strict=True):
        assert snapshot(select(profile, t.cands, now)) == want


def test_stored_post_is_the_computed_post() -> None:
    for c in with_summaries(candidates()):
        made, used = rank_module._analyse(c.url, c.title, c.summary, c.published, c.content)
        got = rank_module._load(c, features(c))
        assert got is not None
        assert got[1] == c.content[:used]
        loaded = got[0]
        for name in ("text", "present", "fields", "title_joined", "tf", "joined"):
            assert getattr(loaded, name) == getattr(made, name), name
        for name in rank_module.Record.__slots__:
            assert getattr(loaded.record, name) == getattr(made.record, name), name


def test_features_do_not_depend_on_the_date_they_were_made_with() -> None:
    """The date is the candidate's: features made before a feed corrected it still serve."""
    cands = candidates()
    blobs = stored([replace(c, published=None) for c in cands])
    expected = fresh_results(cands, PROFILES[:1])
    preload(zip(cands, blobs, strict=True))
    assert [snapshot(select(PROFILES[0], cands, NOW))] == expected


def edits(c: Candidate) -> list[Candidate]:
    """Posts differing from `c` in what its features depend on (content of the same length)."""
    content = c.content
    i = content.index(">", 10) + 1  # inside the visible opening
    same_length = content[:i] + "Z" + content[i + 1 :]
    assert len(same_length) == len(content) and same_length != content
    return [
        replace(c, content=same_length),
        replace(c, content=content + " more"),
        replace(c, content=content[: len(content) // 2]),
        replace(c, title=c.title + " (updated)"),
        replace(c, summary="A summary made after the features."),
        replace(c, url=c.url + "x"),
    ]


def broken(c: Candidate, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    good = features(c)
    with monkeypatch.context() as m:
        m.setattr(rank_module, "FEATURES_VERSION", "rank-0")
        old_version = features(c)
    with monkeypatch.context() as m:
        m.setattr(rank_module, "_HASHING", "siphash13/64/0")
        other_python = features(c)
    seal = rank_module._seal
    fields = rank_module._unseal(good)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    return [
        b"",
        b"\x00garbage",
        good[: len(good) // 2],
        good[:-1],
        bytes(flipped),
        good[:-4] + bytes(4),
        marshal.dumps(fields),  # no checksum
        old_version,
        other_python,
        seal(rank_module.FEATURES_VERSION),  # type: ignore[arg-type]
        seal((rank_module.FEATURES_VERSION, rank_module._HASHING)),
        seal(fields[:-1]),
        seal((*fields[:3], 10**9, *fields[4:])),  # more content than there is
        seal((*fields[:4], 7, *fields[5:])),  # not a string of terms
        seal((*fields[:-1], b"\x01\x02\x03")),  # not 8-byte fingerprints
        marshal.dumps(compile("1", "x", "eval")),
    ]


def test_stale_corrupt_or_foreign_features_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    cands = candidates()
    expected = fresh_results(cands, PROFILES)
    pairs: list[tuple[Candidate, bytes]] = []
    # Every post gets features of an edited version of itself, or damaged ones.
    for i, c in enumerate(cands):
        stale = edits(c)
        pairs.append((c, features(stale[i % len(stale)])))
        pairs.extend((c, blob) for blob in broken(c, monkeypatch))
    rank_module.clear_post_cache()
    preload(pairs)
    assert len(rank_module._POSTS) == 0
    for profile, want in zip(PROFILES, expected, strict=True):
        assert snapshot(select(profile, cands, NOW)) == want
    # And the edited posts themselves, given the original's features, are computed afresh.
    for c in cands[:6]:
        for edited in edits(c):
            rank_module.clear_post_cache()
            want = snapshot(select(PROFILES[0], [edited, cands[-1]], NOW))
            rank_module.clear_post_cache()
            preload([(edited, features(c))])
            assert snapshot(select(PROFILES[0], [edited, cands[-1]], NOW)) == want


def test_preload_keeps_what_is_cached_and_takes_any_iterable() -> None:
    cands = candidates()
    select(PROFILES[0], cands, NOW)
    cached = {id(rank_module._POSTS.get(k)) for k in list(rank_module._POSTS._data)}
    preload((c, features(c)) for c in cands)
    assert {id(rank_module._POSTS.get(k)) for k in list(rank_module._POSTS._data)} == cached
    preload([])


def test_short_and_empty_posts() -> None:
    base = candidates()[0]
    cands = [
        replace(base, entry_id=1, content="", title="", summary=""),
        replace(base, entry_id=2, content="<p>Two words</p>", url="", published=None),
        replace(base, entry_id=3, content="x" * 5000, title="Open Thread #12"),
        replace(base, entry_id=4, content="<script>" + "y" * 3000, url="https://a.example/"),
    ]
    expected = fresh_results(cands, PROFILES)
    preload(zip(cands, stored(cands), strict=True))
    assert len(rank_module._POSTS) == len(cands)
    for profile, want in zip(PROFILES, expected, strict=True):
        assert snapshot(select(profile, cands, NOW)) == want


def test_lead_keeps_the_words_the_semantic_score_reads() -> None:
    n = rank_module.SEMANTIC_WORDS
    assert n <= OPENING_WORDS  # the lead is joined from the opening's chunks
    texts = [
        "",
        "  one ",
        " ".join(f"w{i}" for i in range(n)),
        " ".join(f"w{i}" for i in range(n + 1)) + "  \n",
        "\n".join(f"w{i}\u00a0x" for i in range(3 * n)),
    ]
    texts += [c.content for c in candidates()]
    for text in texts:
        lead = rank_module._lead(chunks(text))
        assert lead.split() == text.split(None, n)[:n]


_WRITE_DIGEST = """
import hashlib, sys
from digest.rank import post_features
from tests.test_rank_features import candidates, with_summaries
h = hashlib.sha256()
for c in with_summaries(candidates()):
    h.update(post_features(c.url, c.title, c.summary, c.published, c.content))
print(h.hexdigest())
"""


def all_features_digest() -> str:
    h = hashlib.sha256()
    for c in with_summaries(candidates()):
        h.update(features(c))
    return h.hexdigest()


def test_bytes_do_not_depend_on_the_hash_seed_or_on_caches() -> None:
    here = all_features_digest()
    rank_module.select(PROFILES[0], candidates(), NOW)  # caches full, memos warm
    assert all_features_digest() == here
    for seed in ("0", "1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT))
        out = subprocess.run(
            [sys.executable, "-c", _WRITE_DIGEST],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert out.stdout.strip() == here, seed


# What the fixture posts' features were when FEATURES_VERSION was last set. A change to how
# features are computed (textindex, dedup's analyses, rank's fields) changes these bytes: then
# bump FEATURES_VERSION, so that features stored by the old code are not used, and update this.
PINNED = {
    ("rank-3", "tuple-hash/64/590899387183067792"): (
        "c2183be727776a3a108217fdd49f88baa935501c4f175361ac2900f417e21a88"
    ),
}


def test_features_are_pinned_to_their_version() -> None:
    key = (rank_module.FEATURES_VERSION, rank_module._HASHING)
    if key not in PINNED:
        pytest.skip(f"no pinned features for {key}")
    assert all_features_digest() == PINNED[key]
