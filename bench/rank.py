"""Ranking benchmark: nDCG@5 on the hand-labelled LessWrong fixtures, and speed.

Run from the repository root: ``PYTHONPATH=. python bench/rank.py``

Compares, in one run and on the same posts and labels (tests/fixtures/ranking/relevance.json):
ours (`digest.rank.rank`), ours without related-term expansion, newest first, and plain
keyword counting (occurrences of each interest phrase in title + text). Then times
`digest.rank.select` and `digest.rank.rank` on a 500-post digest built by varying the fixtures.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from digest import rank as rank_mod
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


def median_ms(fn: Any, repeats: int = 15) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> int:
    posts = load_posts()
    spec = json.loads((FIXTURES / "ranking" / "relevance.json").read_text())
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
    profile = Profile(interests=tuple(interests), mute=("executive order",), per_feed_cap=5)
    sel_ms = median_ms(lambda: rank_mod.select(profile, cands, now))
    rank_ms = median_ms(lambda: rank_mod.rank(list(interests), big))
    semantic = "on" if rank_mod._load_embedder() else "off"
    print(f"\n500-post digest, {len(interests)} interests, semantic extra {semantic}:")
    print(f"  select: {sel_ms:.1f} ms median of 15")
    print(f"  rank:   {rank_ms:.1f} ms median of 15")
    return 0


if __name__ == "__main__":
    sys.exit(main())
