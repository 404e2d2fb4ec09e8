"""Ranking benchmark: nDCG@5 on the hand-labelled LessWrong fixtures, and speed.

Run from the repository root: ``PYTHONPATH=. python bench/rank.py``

Compares, in one run and on the same posts and labels (tests/fixtures/ranking/relevance.json):
ours (`digest.rank.rank`), ours without related-term expansion, newest first, and plain
keyword counting (occurrences of each interest phrase in title + text), all without the
optional semantic extra; when `digest[semantic]` is installed, also "ours+semantic". Then times
`digest.rank.select` and `digest.rank.rank` on a 500-post digest built by varying the fixtures
(wall-clock and CPU medians, with the load average: the timing machine may be shared), three
ways:

- cold: the first call in a fresh process (a new process per repeat, the inputs built untimed
  before the call): what the first subscriber of a run costs, every cache empty -- per-post
  features, per-word analyses, and the content strings' hashes;
- posts uncached: the per-post cache emptied before every repeat, in a process whose per-word
  caches have seen these posts (what earlier versions of this bench called cold: it
  understates the first subscriber's cost);
- cold with stored features: the same, but the call is `preload` of each post's
  `post_features` (made beforehand by another process, as the summarize step makes them and
  the store keeps them) and then `select`, timed together; `preload` alone is timed too;
- warm: the same 500 posts for another subscriber with a different interest list, after one
  call for a first subscriber filled the per-post cache: what each further subscriber of a
  run costs (a run ranks the same posts for every subscriber).
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, NamedTuple

from digest import rank as rank_mod
from digest import rank_semantic
from digest.models import Candidate, Profile
from digest.textindex import html_to_text

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def load_posts() -> list[dict[str, Any]]:
    """The distinct fixture posts as `rank` takes them (feed-1 then feed-2, first copy wins)."""
    posts: dict[str, dict[str, Any]] = {}
    for name in ("feed-1.xml", "feed-2.xml"):
        root = ET.parse(FIXTURES / "lesswrong" / name).getroot()
        for item in root.iter("item"):
            guid = item.findtext("guid") or ""
            posts.setdefault(
                guid,
                {
                    "id": guid,
                    "title": item.findtext("title") or "",
                    "url": item.findtext("link") or "",
                    "published": parsedate_to_datetime(item.findtext("pubDate") or "").isoformat(),
                    "content": item.findtext("description") or "",
                },
            )
    return list(posts.values())


def ndcg_at(ranking: list[str], labels: dict[str, int], k: int = 5) -> float:
    def dcg(rels: list[int]) -> float:
        return sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(rels[:k]))

    ideal = dcg(sorted(labels.values(), reverse=True))
    return dcg([labels.get(i, 0) for i in ranking]) / ideal if ideal else 0.0


def newest_first(interests: list[str], posts: list[dict[str, Any]]) -> list[str]:
    return [p["id"] for p in sorted(posts, key=lambda p: p["published"], reverse=True)]


def keyword_count(interests: list[str], posts: list[dict[str, Any]]) -> list[str]:
    """Occurrences of each interest phrase (case-insensitive) in title + text; ties newest first."""
    pats = [re.compile(r"\b" + re.escape(i.lower()) + r"\b") for i in interests]

    def count(p: dict[str, Any]) -> int:
        text = (p["title"] + " " + html_to_text(p["content"], 10**7)).lower()
        return sum(len(pat.findall(text)) for pat in pats)

    by_date = sorted(posts, key=lambda p: p["published"], reverse=True)
    return [p["id"] for p in sorted(by_date, key=count, reverse=True)]


def ours_no_expansion(interests: list[str], posts: list[dict[str, Any]]) -> list[str]:
    saved = rank_mod.RELATED.copy()
    rank_mod.RELATED.clear()
    try:
        return rank_mod.rank(interests, posts)
    finally:
        rank_mod.RELATED.update(saved)


def build_500(posts: list[dict[str, Any]], n: int = 500) -> list[dict[str, Any]]:
    """n distinct posts: paragraphs of two fixture posts shuffled together, new urls and dates."""
    out = []
    for k in range(n):
        p = posts[k % len(posts)]
        v = k // len(posts)
        q = posts[(k * 7 + 3) % len(posts)]
        paras = p["content"].split("</p>")[:-1] + q["content"].split("</p>")[:-1]
        random.Random(k).shuffle(paras)
        content = p["content"] if v == 0 else "</p>".join(paras) + "</p>"
        when = datetime.fromisoformat(p["published"]) - timedelta(hours=v * 2)
        out.append(
            {
                "id": f"{p['id']}v{v}",
                "title": p["title"] if v == 0 else f"{p['title']} (part {v})",
                "url": f"https://blog{v}.example.org/{p['id']}/",
                "published": when.isoformat(),
                "content": content,
                "feed": f"feed{k % 7}",
            }
        )
    return out


def median_ms(fn: Any, repeats: int = 15, before: Any = None) -> tuple[float, float]:
    """Median wall-clock and median CPU (process) milliseconds of `fn()`, after a warm-up.

    `before()`, when given, runs (untimed) before every call, the warm-up included.
    """
    if before is not None:
        before()
    fn()  # warm up
    wall, cpu = [], []
    for _ in range(repeats):
        if before is not None:
            before()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def semantic_installed() -> bool:
    try:
        return importlib.util.find_spec(rank_semantic.MODEL_PACKAGE) is not None
    except ImportError:
        return False


class TimingInputs(NamedTuple):
    """The 500-post digest the timings use, and its two subscribers."""

    big: list[dict[str, Any]]
    cands: list[Candidate]
    now: datetime
    interests: list[str]
    profile: Profile
    other_interests: list[str]
    other: Profile  # the warm case's second subscriber: other interests (and mute list)


def timing_inputs(posts: list[dict[str, Any]], spec: dict[str, Any]) -> TimingInputs:
    big = build_500(posts)
    interests = spec["profiles"][0]["interests"] + spec["profiles"][1]["interests"]
    now = max(datetime.fromisoformat(p["published"]) for p in big)
    cands = [
        Candidate(
            entry_id=i,
            feed=p["feed"],
            feed_title=p["feed"],
            url=p["url"],
            title=p["title"],
            author="",
            published=datetime.fromisoformat(p["published"]),
            first_seen=now,
            content=p["content"],
            summary="",
        )
        for i, p in enumerate(big)
    ]
    other_interests = spec["profiles"][2]["interests"] + spec["profiles"][3]["interests"]
    return TimingInputs(
        big=big,
        cands=cands,
        now=now,
        interests=interests,
        profile=Profile(interests=tuple(interests), mute=("executive order",), per_feed_cap=5),
        other_interests=other_interests,
        other=Profile(interests=tuple(other_interests), mute=("open thread",), per_feed_cap=5),
    )


FRESH_FLAG = "--time-one-call-in-this-process"


def stored_features(cands: list[Candidate]) -> list[bytes]:
    """Each candidate's `post_features`, as the summarize step stores them."""
    return [
        rank_mod.post_features(c.url, c.title, c.summary, c.published, c.content) for c in cands
    ]


def time_one_call(what: str, blobs_path: str = "") -> None:
    """Child of `fresh_process_ms`: build the inputs, then time one call and print it.

    "select-stored" times `preload` of the features in `blobs_path` (made by another process,
    read before the clock starts) and then `select`; "preload" the `preload` alone.
    """
    rank_mod.set_semantic(False)
    spec = json.loads((FIXTURES / "ranking" / "relevance.json").read_text())
    t = timing_inputs(load_posts(), spec)
    blobs = marshal.loads(Path(blobs_path).read_bytes()) if blobs_path else []
    t0, c0 = time.perf_counter(), time.process_time()
    if what == "select":
        rank_mod.select(t.profile, t.cands, t.now)
    elif what == "select-stored":
        rank_mod.preload(zip(t.cands, blobs, strict=True))
        rank_mod.select(t.profile, t.cands, t.now)
    elif what == "preload":
        rank_mod.preload(zip(t.cands, blobs, strict=True))
    else:
        rank_mod.rank(list(t.interests), t.big)
    print((time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000)


def fresh_process_ms(what: str, repeats: int, blobs_path: str = "") -> tuple[float, float]:
    """Median wall-clock and CPU milliseconds of one `what` call, each in a new process: no
    cache of any kind (per-post, per-word, string hashes) has seen the posts."""
    wall, cpu = [], []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, FRESH_FLAG, what, blobs_path],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        wall.append(float(out[0]))
        cpu.append(float(out[1]))
    return statistics.median(wall), statistics.median(cpu)


def main() -> int:
    posts = load_posts()
    spec = json.loads((FIXTURES / "ranking" / "relevance.json").read_text())
    # The core figures are without the optional semantic extra, even when it is installed.
    rank_mod.set_semantic(False)
    rankers = {
        "ours": rank_mod.rank,
        "ours-noexp": ours_no_expansion,
        "newest": newest_first,
        "keyword": keyword_count,
    }
    print(f"nDCG@5 over {len(posts)} LessWrong fixture posts, gains 2^rel-1\n")
    print(f"{'profile':<18}" + "".join(f"{n:>12}" for n in rankers))
    sums = {n: [] for n in rankers}  # type: dict[str, list[float]]
    for prof in spec["profiles"]:
        row = f"{prof['name']:<18}"
        for name, fn in rankers.items():
            v = ndcg_at(fn(prof["interests"], posts), prof["labels"])
            sums[name].append(v)
            row += f"{v:>12.3f}"
        print(row)
    print(f"{'mean':<18}" + "".join(f"{statistics.mean(v):>12.3f}" for v in sums.values()))
    print(f"{'min':<18}" + "".join(f"{min(v):>12.3f}" for v in sums.values()))

    semantic_rows: list[float] = []
    if semantic_installed():
        rank_mod.set_semantic(True)
        if rank_mod.semantic_available():
            print(f"\nours+semantic (digest[semantic]: {rank_semantic.MODEL_PACKAGE})")
            for prof in spec["profiles"]:
                v = ndcg_at(rank_mod.rank(prof["interests"], posts), prof["labels"])
                semantic_rows.append(v)
                print(f"{prof['name']:<18}{v:>12.3f}")
            print(f"{'mean':<18}{statistics.mean(semantic_rows):>12.3f}")
            print(f"{'min':<18}{min(semantic_rows):>12.3f}")
        else:
            print(f"\nours+semantic: {rank_semantic.MODEL_PACKAGE} is installed but did not load")
        rank_mod.set_semantic(False)

    t = timing_inputs(posts, spec)
    profile, cands, now = t.profile, t.cands, t.now

    def cold() -> None:  # posts (and the profile) this process has not seen yet
        rank_mod.clear_post_cache()
        rank_mod._QUERY_CACHE.clear()

    def warm_select() -> None:  # the first subscriber filled the cache; a new profile next
        cold()
        rank_mod.select(profile, cands, now)
        rank_mod._QUERY_CACHE.clear()

    def warm_rank() -> None:
        cold()
        rank_mod.rank(list(t.interests), t.big)
        rank_mod._QUERY_CACHE.clear()

    n = 15
    blobs = stored_features(cands)
    with tempfile.TemporaryDirectory() as tmp:
        blobs_path = os.path.join(tmp, "features.marshal")
        Path(blobs_path).write_bytes(marshal.dumps(blobs))
        load_before = os.getloadavg()[0]
        sel_stored = fresh_process_ms("select-stored", n, blobs_path)
        preload_only = fresh_process_ms("preload", n, blobs_path)
    sel_fresh = fresh_process_ms("select", n)
    sel_cold = median_ms(lambda: rank_mod.select(profile, cands, now), n, before=cold)
    sel_warm = median_ms(lambda: rank_mod.select(t.other, cands, now), n, before=warm_select)
    rank_fresh = fresh_process_ms("rank", n)
    rank_cold = median_ms(lambda: rank_mod.rank(list(t.interests), t.big), n, before=cold)
    rank_warm = median_ms(
        lambda: rank_mod.rank(list(t.other_interests), t.big), n, before=warm_rank
    )
    load_after = os.getloadavg()[0]
    print(
        f"\n500-post digest, {len(t.interests)} interests, semantic extra off "
        f"(load average {load_before:.2f} -> {load_after:.2f} on {os.cpu_count()} CPUs; "
        f"median of {n}, wall-clock and process CPU):"
    )
    print(
        "  cold = the first subscriber in a fresh process: one call per new process (the "
        "inputs built, not timed, before it)"
    )
    print(
        "  posts uncached = the per-post cache emptied in a process that has tokenized these "
        "words before (what earlier versions of this bench called cold)"
    )
    print(
        "  cold with stored features = the same, after `preload` of each post's "
        "`post_features` (made by another process, as the summarize step does): preload + select"
    )
    print(
        f"  warm = same posts, another subscriber ({len(t.other_interests)} other interests), "
        "after one call cached the posts (each further subscriber)"
    )
    print(
        f"  stored features: {statistics.mean(map(len, blobs)):.0f} bytes per post on average "
        f"(max {max(map(len, blobs))})"
    )
    for name, (wall, cpu) in (
        ("select, cold          ", sel_fresh),
        ("select, cold with stored features", sel_stored),
        ("  of which preload of 500 posts (alone)", preload_only),
        ("select, posts uncached", sel_cold),
        ("select, warm          ", sel_warm),
        ("rank,   cold          ", rank_fresh),
        ("rank,   posts uncached", rank_cold),
        ("rank,   warm          ", rank_warm),
    ):
        print(f"  {name}: {wall:.1f} ms (CPU {cpu:.1f} ms)")
    if semantic_rows:
        rank_mod.set_semantic(True)
        embedder = rank_mod._load_embedder()
        assert embedder is not None
        embedder.clear_cache()
        rank_mod.clear_post_cache()
        t0, c0 = time.perf_counter(), time.process_time()
        rank_mod.select(profile, cands, now)  # every post encoded
        cold = ((time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000)
        warm = median_ms(lambda: rank_mod.select(profile, cands, now), repeats=3)
        rank_mod.set_semantic(False)
        print(
            f"500-post digest, semantic extra on (model loaded once per process, not timed; "
            f"load average {os.getloadavg()[0]:.2f}):"
        )
        print(f"  select, posts not yet encoded: {cold[0]:.1f} ms, 1 run (CPU {cold[1]:.1f} ms)")
        print(
            f"  select, posts already encoded for another subscriber: {warm[0]:.1f} ms "
            f"median of 3 (CPU {warm[1]:.1f} ms)"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == FRESH_FLAG:
        time_one_call(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
