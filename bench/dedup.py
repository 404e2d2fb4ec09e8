"""De-duplication benchmark on perturbed LessWrong fixture posts.

Run from the repository root: ``PYTHONPATH=. python bench/dedup.py``

Duplicates of each of the 19 fixture posts: tracking parameters and http/trailing slash/fragment,
the Alignment Forum mirror with an "[AF]" title and re-wrapped HTML, GreaterWrong, a retitled
crosspost on another domain with re-wrapped HTML and a "Crossposted from" line, and an
aggregator entry (link with ?ref=, site in the title, no text). Look-alikes that are different
posts: the 19 originals against each other (several share a topic), the same title a week later
with other text, replies that quote a post's opening, weekly "Open Thread" posts with identical
text, a numbered series with a shared intro, and same-day "Open Thread"s from two sites.
Reports pairwise precision/recall/F1, false merges, and the time to group 500 entries.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from digest.dedup import group
from digest.rank_cache import clear_all

_spec = importlib.util.spec_from_file_location("bench_rank", Path(__file__).with_name("rank.py"))
assert _spec and _spec.loader
_bench_rank = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench_rank)
load_posts = _bench_rank.load_posts


def _shift(iso: str, hours: float) -> str:
    return (datetime.fromisoformat(iso) + timedelta(hours=hours)).isoformat()


def _rewrap(html: str) -> str:
    """Same visible text, different markup: no "Published on" line, divs, spans, newlines."""
    html = re.sub(r"^Published on [^<]*(<br/>)+", "", html)
    html = html.replace("<p>", '<div class="p">\n  <span>').replace("</p>", "</span>\n</div>\n")
    return '<div class="post-body">' + html + "</div>"


def _first_paragraph(html: str) -> str:
    m = re.search(r"<p>.*?</p>", html, re.S)
    return m.group(0) if m else ""


def build_cases(posts: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Entries with a hidden `truth` key: equal truth means the same post."""
    posts = posts or load_posts()
    out: list[dict[str, Any]] = []

    def add(truth: str, feed: str, url: str, title: str, published: str, content: str) -> None:
        out.append(
            {
                "entry_id": len(out),
                "feed": feed,
                "url": url,
                "title": title,
                "published": published,
                "content": content,
                "truth": truth,
            }
        )

    for n, p in enumerate(posts):
        pid, url, title, when, html = p["id"], p["url"], p["title"], p["published"], p["content"]
        slug = url.rstrip("/").rsplit("/", 1)[-1]
        add(pid, "lesswrong", url, title, when, html)
        # duplicates
        add(
            pid,
            "newsletter",
            url.replace("https://", "http://")
            + "/?utm_source=rss&utm_medium=email&fbclid=IwAR0x&mc_cid=9f#comments",
            title,
            when,
            html,
        )
        add(
            pid,
            "alignmentforum",
            f"https://www.alignmentforum.org/posts/{pid}/{slug[:20]}",
            "[AF] " + title,
            _shift(when, 3),
            _rewrap(html),
        )
        add(pid, "greaterwrong", f"https://www.greaterwrong.com/posts/{pid}", title, when, html)
        retitled = f"{title} (crosspost)" if n % 2 else f"{title} \u2014 The Author's Blog"
        add(
            pid,
            "authorblog",
            f"https://author{n}.substack.example/p/{slug}?r=2x&utm_campaign=post",
            retitled,
            _shift(when, -20),
            "<p><em>Crossposted from LessWrong.</em></p>" + _rewrap(html),
        )
        add(
            pid,
            "aggregator",
            url + "?ref=aggregator",
            f"{title} (lesswrong.com)",
            _shift(when, 30),
            f'<a href="https://news.example/item?id={n}">Comments</a>',
        )
        # different posts that look alike
        other = posts[(n + 5) % len(posts)]
        add(
            f"{pid}-later",
            "lesswrong",
            f"https://www.lesswrong.com/posts/X{pid[1:]}/{slug}",
            title,
            _shift(when, 24 * 8),
            other["content"],
        )
        add(
            f"{pid}-reply",
            "lesswrong",
            f"https://www.lesswrong.com/posts/R{pid[1:]}/re-{slug}",
            f"Re: {title}",
            _shift(when, 26),
            "<blockquote>" + _first_paragraph(html) + "</blockquote>" + other["content"],
        )

    boiler = (
        "<p>If it\u2019s worth saying, but not worth its own post, here's a place to put it. "
        "If you are new to LessWrong, here's the place to introduce yourself. Personal stories, "
        "anecdotes, or just general comments on how you found us and what you hope to get from "
        "the site and community are invited. This is also the place to discuss feature "
        "requests and other ideas you have for the site, if you don't want to write a full "
        "top-level post.</p>"
    )
    start = datetime.fromisoformat("2026-05-04T12:00:00+00:00")
    for week in range(6):
        day = start + timedelta(days=7 * week)
        add(
            f"open-{week}",
            "lesswrong",
            f"https://www.lesswrong.com/posts/Open{week:04d}Thread{week}/open-thread",
            f"Open Thread \u2014 {day:%B} {day.day}, {day:%Y}",
            day.isoformat(),
            boiler,
        )
        add(
            f"open-plain-{week}",
            "lesswrong",
            f"https://www.lesswrong.com/posts/Plain{week:04d}Thread{week}/open-thread",
            "Open Thread",
            day.isoformat(),
            boiler,
        )
    add(
        "open-other-site",
        "eaforum",
        "https://forum.effectivealtruism.org/posts/EaOpenThread0001/open-thread",
        "Open Thread",
        start.isoformat(),
        "<p>Use this thread to share quick takes, ask questions, and post job listings "
        "that do not need a full post of their own on the Forum this month.</p>",
    )
    intro = (
        "<p>This week's roundup of AI news: model releases, policy fights, the state of the "
        "labs, and the usual assortment of people saying things on the internet. As always, "
        "skip to the sections you care about; the table of contents is below.</p>"
    )
    for k in range(4):
        add(
            f"series-{k}",
            "thezvi",
            f"https://thezvi.example/p/ai-{170 + k}",
            f"AI #{170 + k}: Week {k}",
            (start + timedelta(days=7 * k)).isoformat(),
            intro + f"<p>Section {k}: " + posts[k]["content"][:400] + "</p>",
        )
    return out


def score(cases: list[dict[str, Any]], labels: list[str]) -> dict[str, float]:
    tp = fp = fn = 0
    for a, b in itertools.combinations(range(len(cases)), 2):
        same_truth = cases[a]["truth"] == cases[b]["truth"]
        same_pred = labels[a] == labels[b]
        tp += same_truth and same_pred
        fp += same_pred and not same_truth
        fn += same_truth and not same_pred
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "false_merges": fp, "missed": fn}


def main() -> int:
    cases = build_cases()
    labels = group([{k: v for k, v in c.items() if k != "truth"} for c in cases])
    res = score(cases, labels)
    truths = {c["truth"] for c in cases}
    print(f"{len(cases)} entries, {len(truths)} distinct posts, {len(set(labels))} groups found")
    print(
        f"pairwise precision {res['precision']:.4f}  recall {res['recall']:.4f}  "
        f"F1 {res['f1']:.4f}  false merges {res['false_merges']}  missed pairs {res['missed']}"
    )
    by_label: dict[str, set[str]] = {}
    for c, lab in zip(cases, labels, strict=True):
        by_label.setdefault(lab, set()).add(c["truth"])
    for ts in by_label.values():
        if len(ts) > 1:
            print("  FALSE MERGE:", sorted(ts))
    missed: dict[str, set[str]] = {}
    for c, lab in zip(cases, labels, strict=True):
        missed.setdefault(c["truth"], set()).add(lab)
    for t, labs in missed.items():
        if len(labs) > 1:
            members = [(c["feed"], c["title"][:50]) for c in cases if c["truth"] == t]
            print("  SPLIT:", t, members)

    # 500 entries: the same perturbations applied to 62 distinct posts of the ranking bench.
    distinct = _bench_rank.build_500(load_posts())[:62]
    big = build_cases(distinct)[:500]
    entries = [{k: v for k, v in c.items() if k != "truth"} for c in big]
    group(entries)
    # cold: entries never seen by the process (per-entry cache emptied before each repeat);
    # warm: the same entries again, their per-entry records cached by an earlier call.
    times: dict[str, list[float]] = {"cold": [], "warm": []}
    for _ in range(15):
        for kind in ("cold", "warm"):
            if kind == "cold":
                clear_all()
            t0 = time.perf_counter()
            group(entries)
            times[kind].append((time.perf_counter() - t0) * 1000)
    big_res = score(big, group(entries))
    print(
        f"group(500 entries, {len({c['truth'] for c in big})} posts): "
        f"cold {statistics.median(times['cold']):.1f} ms, "
        f"warm {statistics.median(times['warm']):.1f} ms (wall-clock, median of 15); "
        f"F1 {big_res['f1']:.4f}, false merges {big_res['false_merges']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
